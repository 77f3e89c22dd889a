#!/usr/bin/env bash
# 1 GiB download throughput on loopback: the stager's HTTPS and FTP beside nginx (HTTP and
# HTTPS, sendfile on) and vsftpd (FTP), measured in the same run with curl as the client.
#
#   ftp-stager/bench/throughput.sh SERVE_FILE_BINARY [SCRATCH_DIR] [ROUNDS]
#
# ROUNDS (default 5): each round downloads once from every server in turn; the report gives
# each server's best and median. Compare medians: on a noisy machine single transfers vary
# by tens of percent for every server alike.
#
# SERVE_FILE_BINARY: target/release/examples/serve_file (cargo build --release -p ftp-stager
# --example serve_file). Needs nginx and vsftpd installed (apt-get install nginx vsftpd).
set -euo pipefail
BIN=${1:?serve_file binary}
S=${2:-/tmp/ffs-throughput}
ROUNDS=${3:-5}
mkdir -p "$S"
S=$(cd "$S" && pwd)
[ -f "$S/big.bin" ] || head -c 1073741824 /dev/urandom > "$S/big.bin"
SIZE=$(stat -c %s "$S/big.bin")

# --- the stager ---
rm -rf "$S/stager"; mkdir -p "$S/stager"
mkfifo "$S/stager.stdin" 2>/dev/null || true
"$BIN" "$S/stager" "$S/big.bin" < "$S/stager.stdin" > "$S/stager.out" 2> "$S/stager.log" &
STAGER=$!
exec 9> "$S/stager.stdin"   # keeps the stager running until we close it
for _ in $(seq 1 600); do grep -q '^SHA256' "$S/stager.out" 2>/dev/null && break; sleep 0.2; done
HTTPS_BASE=$(awk '/^HTTPS/{print $2}' "$S/stager.out")
FTP_URL=$(awk '/^FTP/{print $2}' "$S/stager.out")
CERT="$S/stager/state/tls-cert.pem"; KEY="$S/stager/state/tls-key.pem"

# --- nginx ---
mkdir -p "$S/www" "$S/nginx"
ln -f "$S/big.bin" "$S/www/big.bin"
cat > "$S/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $S/nginx/nginx.pid;
error_log $S/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $S/nginx/tmp; proxy_temp_path $S/nginx/tmp; fastcgi_temp_path $S/nginx/tmp;
  uwsgi_temp_path $S/nginx/tmp; scgi_temp_path $S/nginx/tmp;
  server { listen 127.0.0.1:18080; root $S/www; }
  server { listen 127.0.0.1:18443 ssl http2; root $S/www;
           ssl_certificate $CERT; ssl_certificate_key $KEY; }
}
CONF
mkdir -p "$S/nginx/tmp"
nginx -c "$S/nginx/nginx.conf" 9>&- < /dev/null > /dev/null 2>&1

# --- vsftpd (anonymous, read-only) ---
mkdir -p "$S/ftproot" /var/run/vsftpd/empty
chmod 755 "$S/ftproot"
ln -f "$S/big.bin" "$S/ftproot/big.bin"
cat > "$S/vsftpd.conf" <<CONF
listen=YES
listen_address=127.0.0.1
listen_port=12121
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
no_anon_password=YES
anon_root=$S/ftproot
pasv_enable=YES
pasv_min_port=32000
pasv_max_port=32099
seccomp_sandbox=NO
secure_chroot_dir=/var/run/vsftpd/empty
xferlog_enable=NO
CONF
vsftpd "$S/vsftpd.conf" 9>&- < /dev/null > /dev/null 2>&1 &
VSFTPD_PID=$!
sleep 1

cleanup() {
  exec 9>&-
  wait "$STAGER" 2>/dev/null || true
  nginx -c "$S/nginx/nginx.conf" -s stop 2>/dev/null || true
  kill "$VSFTPD_PID" 2>/dev/null || true
}
trap cleanup EXIT

# One download: prints its speed in bytes/s (fails on a short download).
once() { # name url [curl args]
  local name=$1 url=$2; shift 2
  local r
  r=$(curl -k -s -S -o /dev/null -w '%{speed_download} %{size_download}' "$@" "$url")
  local speed=${r% *} got=${r#* }
  if [ "$got" != "$SIZE" ]; then echo "$name: short download ($got of $SIZE)" >&2; exit 1; fi
  echo "$speed"
}

# Each round downloads once from every server in turn (so a slow spell of the machine
# falls on all of them alike); each server's best and median over the rounds are reported.
NAMES=(stager-https-h1 nginx-https-h1 stager-https-h2 nginx-https-h2 nginx-http stager-ftp vsftpd-ftp)
declare -A URL=(
  [stager-https-h1]="${HTTPS_BASE}big.bin" [nginx-https-h1]="https://127.0.0.1:18443/big.bin"
  [stager-https-h2]="${HTTPS_BASE}big.bin" [nginx-https-h2]="https://127.0.0.1:18443/big.bin"
  [nginx-http]="http://127.0.0.1:18080/big.bin"
  [stager-ftp]="${FTP_URL}big.bin" [vsftpd-ftp]="ftp://127.0.0.1:12121/big.bin"
)
# HTTPS over HTTP/1.1 and over HTTP/2 (what curl and browsers pick when offered) alike.
declare -A ARGS=(
  [stager-https-h1]="--http1.1" [nginx-https-h1]="--http1.1"
  [stager-https-h2]="--http2" [nginx-https-h2]="--http2"
)
declare -A SAMPLES=()
for _ in $(seq 1 "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    # shellcheck disable=SC2086 # ARGS holds at most one word
    SAMPLES[$n]+="$(once "$n" "${URL[$n]}" ${ARGS[$n]:-}) "
  done
done
echo "# best and median of $ROUNDS rounds (servers alternated within each), MiB/s, $SIZE bytes, client curl $(curl --version | head -1 | cut -d' ' -f2)"
for n in "${NAMES[@]}"; do
  echo "${SAMPLES[$n]}" | tr ' ' '\n' | grep . | sort -g | awk -v name="$n" '
    { v[NR] = $1 }
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%s %.0f median %.0f\n", name, v[NR] / 1048576, med / 1048576
    }'
done
