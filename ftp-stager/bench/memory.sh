#!/usr/bin/env bash
# Memory per concurrent download: N slow clients (curl --limit-rate) hold downloads of one
# file open; the server's resident memory is sampled while they run. Reported per stream as
# (peak RSS - idle RSS) / N, for the stager's HTTPS, the stager's FTP and nginx's HTTPS
# (same file, same certificate, same clients), measured in the same run.
#
#   ftp-stager/bench/memory.sh SERVE_FILE_BINARY [SCRATCH_DIR] [STREAMS] [RATE]
#
# SERVE_FILE_BINARY: target/release/examples/serve_file (cargo build --release -p ftp-stager
# --example serve_file). STREAMS defaults to 400, RATE (bytes/s per client, curl syntax) to
# 1M. Needs nginx and curl (apt-get install nginx curl).
set -euo pipefail
BIN=${1:?serve_file binary}
S=${2:-/tmp/ffs-memory}
N=${3:-400}
RATE=${4:-1M}
HOLD=${HOLD:-12}        # seconds the streams run while RSS is sampled
mkdir -p "$S"
S=$(cd "$S" && pwd)
# Large enough that no stream finishes while it is measured.
[ -f "$S/big.bin" ] || head -c $((512 << 20)) /dev/urandom > "$S/big.bin"
ulimit -n 65536 2>/dev/null || true

rss_kib() { # pid... -> summed VmRSS in KiB
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# --- the stager: a fresh process per measurement (memory a process once touched stays
# resident, so a second measurement in the same process would see less) ---
STAGER=
start_stager() {
  rm -rf "$S/stager"; mkdir -p "$S/stager"
  rm -f "$S/stager.stdin" "$S/stager.out"; mkfifo "$S/stager.stdin"
  FFS_PASSIVE_PORTS=${FFS_PASSIVE_PORTS:-33000-33999} \
    "$BIN" "$S/stager" "$S/big.bin" < "$S/stager.stdin" > "$S/stager.out" 2> "$S/stager.log" &
  STAGER=$!
  exec 9> "$S/stager.stdin"   # keeps the stager running until we close it
  for _ in $(seq 1 600); do grep -q '^SHA256' "$S/stager.out" 2>/dev/null && break; sleep 0.2; done
  HTTPS_BASE=$(awk '/^HTTPS/{print $2}' "$S/stager.out")
  FTP_URL=$(awk '/^FTP/{print $2}' "$S/stager.out")
}
stop_stager() {
  exec 9>&-
  [ -z "$STAGER" ] || wait "$STAGER" 2>/dev/null || true
  STAGER=
}
start_stager
CERT="$S/stager/state/tls-cert.pem"; KEY="$S/stager/state/tls-key.pem"
cp "$CERT" "$S/cert.pem"; cp "$KEY" "$S/key.pem"; CERT="$S/cert.pem"; KEY="$S/key.pem"

# --- nginx: HTTPS, sendfile, the stager's certificate ---
mkdir -p "$S/www" "$S/nginx/tmp"
ln -f "$S/big.bin" "$S/www/big.bin"
cat > "$S/nginx/nginx.conf" <<CONF
worker_processes 2;
worker_rlimit_nofile 65536;
pid $S/nginx/nginx.pid;
error_log $S/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $S/nginx/tmp; proxy_temp_path $S/nginx/tmp; fastcgi_temp_path $S/nginx/tmp;
  uwsgi_temp_path $S/nginx/tmp; scgi_temp_path $S/nginx/tmp;
  server { listen 127.0.0.1:18443 ssl http2; root $S/www;
           ssl_certificate $CERT; ssl_certificate_key $KEY; }
}
CONF
nginx -c "$S/nginx/nginx.conf" 9>&- < /dev/null > /dev/null 2>&1
sleep 0.5
NGINX_MASTER=$(cat "$S/nginx/nginx.pid")
nginx_pids() { echo "$NGINX_MASTER" $(pgrep -P "$NGINX_MASTER" || true); }

CURLS=()
stop_curls() {
  [ ${#CURLS[@]} -eq 0 ] || kill "${CURLS[@]}" 2>/dev/null || true
  [ ${#CURLS[@]} -eq 0 ] || wait "${CURLS[@]}" 2>/dev/null || true
  CURLS=()
}
cleanup() {
  stop_curls
  stop_stager
  nginx -c "$S/nginx/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT

measure() { # name url pids-function [curl args]
  local name=$1 url=$2 pids=$3; shift 3
  sleep 2
  local idle; idle=$(rss_kib $($pids))
  local i
  for i in $(seq 1 "$N"); do
    curl -k -s -o /dev/null --limit-rate "$RATE" "$@" "$url" &
    CURLS+=($!)
  done
  local peak=$idle t
  for _ in $(seq 1 $((HOLD * 4))); do
    t=$(rss_kib $($pids)); [ "$t" -gt "$peak" ] && peak=$t
    sleep 0.25
  done
  local running=0 p
  for p in "${CURLS[@]}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
  stop_curls
  awk -v n="$name" -v i="$idle" -v p="$peak" -v s="$N" -v r="$running" 'BEGIN{
    printf "%-14s idle %7.1f MiB  peak %7.1f MiB  per stream %6.3f MiB  (%d of %d streams still running at the end)\n",
      n, i/1024, p/1024, (p-i)/1024/s, r, s }'
}

stager_pids() { echo "$STAGER"; }
echo "# $N streams at $RATE/s each, ${HOLD}s, $(nproc) CPUs; RSS summed over the server's processes"
measure stager-https-h1 "${HTTPS_BASE}big.bin" stager_pids --http1.1
stop_stager; start_stager
measure stager-https-h2 "${HTTPS_BASE}big.bin" stager_pids --http2
if [ -z "${SKIP_FTP:-}" ]; then
  stop_stager; start_stager
  measure stager-ftp "${FTP_URL}big.bin" stager_pids
fi
stop_stager
measure nginx-https-h1 "https://127.0.0.1:18443/big.bin" nginx_pids --http1.1
nginx -c "$S/nginx/nginx.conf" -s stop; sleep 1
nginx -c "$S/nginx/nginx.conf" 9>&- < /dev/null > /dev/null 2>&1; sleep 0.5
NGINX_MASTER=$(cat "$S/nginx/nginx.pid")
measure nginx-https-h2 "https://127.0.0.1:18443/big.bin" nginx_pids --http2
