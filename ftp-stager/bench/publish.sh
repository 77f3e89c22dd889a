#!/usr/bin/env bash
# Remote publish throughput on loopback (issue 12): `ffs publish --remote` of a 1 GiB file
# to a running `ffs stager`, beside `curl --upload-file` of the same file to nginx (WebDAV
# PUT over HTTPS, same certificate, writing to the same disk), in the same run.
#
#   ftp-stager/bench/publish.sh FFS_BINARY [SCRATCH_DIR] [RUNS]
#
# FFS_BINARY: target/release/ffs (cargo build --release -p ffs). Needs nginx with the DAV
# module (Debian's nginx has it), curl and GNU time (/usr/bin/time).
# Rows: ffs-publish = the whole command (a 1 GiB file is read once: sent under an upload id
# while another thread hashes it, the hash declared last; the stager hashes as it receives;
# then the commit; HTTP/1.1); curl-put-stager = curl PUT of the same file to the stager's
# upload endpoint (no client-side hash); curl-put-nginx = the baseline; disk-write = `dd`
# of the file with O_DIRECT and fsync (the disk's durable rate: the stager syncs an object
# before accepting it, nginx does not). The closing lines give the ceiling any
# implementation has here: CPU (nginx's round plus one or two SHA-256 passes on NCPU cores)
# and disk.
# Both curl rows use HTTP/1.1 (the nginx server here offers only HTTP/1.1).
# FFS_BASE=OTHER_FFS_BINARY adds a row ffs-publish-base: the same publish with another build
# (client and its own stager), e.g. main's, as a before/after measured in the same run.
# Besides MiB/s each row reports the CPU seconds the client and the server spent (best
# round's), which say more than the rate when other work shares the cores: client = the
# command's user+sys (/usr/bin/time), server = the stager's or nginx workers' utime+stime
# (/proc); the kernel's writeback threads are in neither.
set -euo pipefail
FFS=$(readlink -f "${1:?ffs binary}")
BASE=${FFS_BASE:+$(readlink -f "$FFS_BASE")}
S=${2:-/tmp/ffs-publish-bench}
RUNS=${3:-3}
mkdir -p "$S"
S=$(cd "$S" && pwd)
[ -f "$S/big.bin" ] || head -c 1073741824 /dev/urandom > "$S/big.bin"
SIZE=$(stat -c %s "$S/big.bin")
SHA=$(sha256sum "$S/big.bin" | cut -d' ' -f1)

# --- the stager(s) ---
start_stager() { # DIR BINARY PORT-OFFSET: runs a stager in DIR, sets its pid in $SPID
  rm -rf "$1"; mkdir -p "$1"
  (cd "$1" && "$2" keys generate --out keys.bag > /dev/null)
  cat > "$1/ffs.toml" <<CONF
[link]
keys = "keys.bag"
[stager]
link_listen = "127.0.0.1:$((17911 + $3))"
ftp_listen = "127.0.0.1:$((12921 + $3))"
passive_ports = "$((33000 + 100 * $3))-$((33099 + 100 * $3))"
https_listen = "127.0.0.1:$((18944 + $3))"
CONF
  (cd "$1" && exec "$2" stager > stager.log 2>&1) &
  SPID=$!
  for _ in $(seq 1 300); do [ -f "$1/stager/state/tls-cert.pem" ] && grep -q "stager listening" "$1/stager.log" && break; sleep 0.1; done
  (cd "$1" && "$2" publish-token create --name bench 2>/dev/null > token && chmod 600 token)
}
start_stager "$S/st" "$FFS" 0
STAGER=$SPID
BSTAGER=""
[ -z "$BASE" ] || { start_stager "$S/st-base" "$BASE" 1; BSTAGER=$SPID; }
cd "$S/st"
CERT="$S/st/stager/state/tls-cert.pem"; KEY="$S/st/stager/state/tls-key.pem"
T=$(cat token)

# --- nginx, WebDAV PUT over HTTPS ---
mkdir -p "$S/www/up" "$S/nginx/tmp"
chmod 777 "$S/www/up" "$S/nginx/tmp"   # nginx workers run unprivileged
cat > "$S/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $S/nginx/nginx.pid;
error_log $S/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $S/nginx/tmp; proxy_temp_path $S/nginx/tmp; fastcgi_temp_path $S/nginx/tmp;
  uwsgi_temp_path $S/nginx/tmp; scgi_temp_path $S/nginx/tmp;
  server { listen 127.0.0.1:18943 ssl; root $S/www;
           ssl_certificate $CERT; ssl_certificate_key $KEY;
           client_max_body_size 0; client_body_buffer_size 1m;
           location /up/ { dav_methods PUT; create_full_put_path on; } }
}
CONF
nginx -c "$S/nginx/nginx.conf" < /dev/null > /dev/null 2>&1

cleanup() {
  kill "$STAGER" $BSTAGER 2>/dev/null || true
  wait "$STAGER" $BSTAGER 2>/dev/null || true
  nginx -c "$S/nginx/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT

fresh_repo() { # DIR: the stager there must not have the object yet
  rm -rf "$1/stager/repository/objects/${SHA:0:2}" "$1/stager/repository/releases/bench" \
         "$1/stager/repository/uploads"
}
now() { date +%s.%N; }
rate() { awk -v s="$SIZE" -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", s/1048576/(b-a)}'; }
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
cpu_s() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", t/hz}'; }
client_s() { awk '{printf "%.2f", $1 + $2}' "$S/time.out"; }
# Busy CPU ticks of the whole machine (every core; all but idle and iowait): the client,
# the server, the kernel's writeback and network work, and anything else running.
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
declare -A RATE CCPU SCPU MCPU
MB0=0
record() { # ROW RATE CLIENT_CPU SERVER_CPU: keeps the round with the best rate
  local m; m=$(cpu_s $(( $(busy) - MB0 )))
  if [ -z "${RATE[$1]:-}" ] || [ "$2" -gt "${RATE[$1]}" ]; then RATE[$1]=$2; CCPU[$1]=$3; SCPU[$1]=$4; MCPU[$1]=$m; fi
}
for _ in $(seq 1 100); do [ -s "$S/nginx/nginx.pid" ] && pgrep -P "$(cat "$S/nginx/nginx.pid")" > /dev/null && break; sleep 0.1; done
NGINX_WORKERS=$(pgrep -P "$(cat "$S/nginx/nginx.pid")" | tr '\n' ' ')
publish_row() { # ROW BINARY DIR STAGER_PID ROUND
  fresh_repo "$3"; sync
  local t0 a b; t0=$(ticks "$4"); MB0=$(busy); a=$(now)
  /usr/bin/time -f "%U %S" -o "$S/time.out" "$2" publish --remote "https://127.0.0.1:$(sed -n 's/^https_listen = "127.0.0.1:\(.*\)"/\1/p' "$3/ffs.toml")" \
    --token-file "$3/token" --ca-cert "$3/stager/state/tls-cert.pem" --json bench "v$5" "$S/in" > "$S/$1-$5.json"
  b=$(now)
  grep -q "\"bytes_sent\":$SIZE" "$S/$1-$5.json" || { echo "$1 sent the wrong amount" >&2; cat "$S/$1-$5.json" >&2; exit 1; }
  record "$1" "$(rate "$a" "$b")" "$(client_s)" "$(cpu_s $(( $(ticks "$4") - t0 )))"
}

mkdir -p "$S/in"; ln -f "$S/big.bin" "$S/in/big.bin"
for i in $(seq 1 "$RUNS"); do
  publish_row ffs-publish "$FFS" "$S/st" "$STAGER" "$i"
  [ -z "$BASE" ] || publish_row ffs-publish-base "$BASE" "$S/st-base" "$BSTAGER" "$i"

  fresh_repo "$S/st"; sync
  t0=$(ticks "$STAGER"); MB0=$(busy); a=$(now)
  code=$(/usr/bin/time -f "%U %S" -o "$S/time.out" curl --http1.1 -s -o /dev/null -w '%{http_code}' --cacert "$CERT" -H "Authorization: Bearer $T" \
    -T "$S/big.bin" "https://127.0.0.1:18944/publish/v1/objects/$SHA?offset=0&size=$SIZE")
  b=$(now); [ "$code" = 201 ] || { echo "stager PUT: $code" >&2; exit 1; }
  record curl-put-stager "$(rate "$a" "$b")" "$(client_s)" "$(cpu_s $(( $(ticks "$STAGER") - t0 )))"

  rm -f "$S/www/up/big.bin"; sync
  t0=$(ticks $NGINX_WORKERS); MB0=$(busy); a=$(now)
  code=$(/usr/bin/time -f "%U %S" -o "$S/time.out" curl --http1.1 -s -o /dev/null -w '%{http_code}' --cacert "$CERT" -T "$S/big.bin" \
    "https://127.0.0.1:18943/up/big.bin")
  b=$(now); [ "$code" = 201 ] || [ "$code" = 204 ] || { echo "nginx PUT: $code" >&2; exit 1; }
  record curl-put-nginx "$(rate "$a" "$b")" "$(client_s)" "$(cpu_s $(( $(ticks $NGINX_WORKERS) - t0 )))"

  # The disk's own durable write rate: the stager syncs an object before it accepts it
  # (a release must survive a crash), nginx answers a PUT before its bytes reach the disk.
  sync; MB0=$(busy); a=$(now)
  dd if="$S/big.bin" of="$S/dd.bin" bs=4M oflag=direct conv=fsync status=none
  b=$(now); rm -f "$S/dd.bin"
  record disk-write "$(rate "$a" "$b")" 0 0
done
echo "# best of $RUNS, MiB/s, $SIZE bytes over HTTPS on loopback, curl $(curl --version | head -1 | cut -d' ' -f2), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# row MiB/s x-nginx client-cpu-s server-cpu-s machine-cpu-s (CPU of the best round)"
N=${RATE[curl-put-nginx]}
for r in ffs-publish ${BASE:+ffs-publish-base} curl-put-stager curl-put-nginx disk-write; do
  awk -v r="$r" -v m="${RATE[$r]}" -v n="$N" -v c="${CCPU[$r]}" -v s="${SCPU[$r]}" -v x="${MCPU[$r]}" \
    'BEGIN{printf "%s %d %.2f %s %s %s\n", r, m, m/n, c, s, x}'
done
# The ceiling any implementation has on this machine. A publish does at least what the
# nginx round did (read, encrypt, send, receive, decrypt, write: its machine CPU) plus a
# SHA-256 of every byte on each end (the client to name the object, the stager to check
# it; OpenSSL's, the fastest here, measured now on the cached file). With NCPU cores busy
# all the time, its rate is at most NCPU / (nginx's machine CPU + hashes) GiB/s.
H=$( { /usr/bin/time -f "%U %S" openssl dgst -sha256 "$S/big.bin" > /dev/null; } 2>&1 | awk '{printf "%.2f", $1 + $2}')
NCPU=$(nproc)
# A durable publish is also at most as fast as the disk writes (disk-write, O_DIRECT).
awk -v n="$N" -v m="${MCPU[curl-put-nginx]}" -v h="$H" -v c="$NCPU" -v s="$SIZE" -v d="${RATE[disk-write]}" 'BEGIN{
  gib = s / 1073741824
  printf "# ceiling on %d cores: SHA-256 %.2f CPU-s per file; nginx round %.2f machine CPU-s; disk %d MiB/s\n", c, h, m, d
  for (k = 1; k <= 2; k++) { r = c / (m + k * h) * gib * 1024
    printf "# ceiling with %d hash(es): CPU %d MiB/s = %.2f x nginx, disk %.2f x nginx%s\n", k, r, r / n, d / n, k == 2 ? " (ffs publish)" : " (curl to the stager)" }
}'
