#!/usr/bin/env bash
# Remote publish throughput on loopback (issue 12): `ffs publish --remote` of a 1 GiB file
# to a running `ffs stager`, beside `curl --upload-file` of the same file to nginx (WebDAV
# PUT over HTTPS, same certificate, writing to the same disk), in the same run.
#
#   ftp-stager/bench/publish.sh FFS_BINARY [SCRATCH_DIR] [RUNS]
#
# FFS_BINARY: target/release/ffs (cargo build --release -p ffs). Needs nginx with the DAV
# module (Debian's nginx has it) and curl.
# Rows: ffs-publish = the whole command (a 1 GiB file is read once: sent under an upload id
# while another thread hashes it, the hash declared last; the stager hashes as it receives;
# then the commit; HTTP/1.1); curl-put-stager = curl PUT of the same file to the stager's
# upload endpoint (no client-side hash); curl-put-nginx = the baseline.
# Both curl rows use HTTP/1.1 (the nginx server here offers only HTTP/1.1).
set -euo pipefail
FFS=$(readlink -f "${1:?ffs binary}")
S=${2:-/tmp/ffs-publish-bench}
RUNS=${3:-3}
mkdir -p "$S"
S=$(cd "$S" && pwd)
[ -f "$S/big.bin" ] || head -c 1073741824 /dev/urandom > "$S/big.bin"
SIZE=$(stat -c %s "$S/big.bin")
SHA=$(sha256sum "$S/big.bin" | cut -d' ' -f1)

# --- the stager ---
rm -rf "$S/st"; mkdir -p "$S/st"
cd "$S/st"
"$FFS" keys generate --out keys.bag > /dev/null
cat > ffs.toml <<CONF
[link]
keys = "keys.bag"
[stager]
link_listen = "127.0.0.1:17911"
ftp_listen = "127.0.0.1:12921"
passive_ports = "33000-33099"
https_listen = "127.0.0.1:18944"
CONF
"$FFS" stager > stager.log 2>&1 &
STAGER=$!
for _ in $(seq 1 300); do [ -f stager/state/tls-cert.pem ] && grep -q "stager listening" stager.log && break; sleep 0.1; done
"$FFS" publish-token create --name bench 2>/dev/null > token
chmod 600 token
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
  kill "$STAGER" 2>/dev/null || true
  wait "$STAGER" 2>/dev/null || true
  nginx -c "$S/nginx/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT

fresh_repo() { # the stager must not have the object yet
  rm -rf "$S/st/stager/repository/objects/${SHA:0:2}" "$S/st/stager/repository/releases/bench" \
         "$S/st/stager/repository/uploads"
}
now() { date +%s.%N; }
rate() { awk -v s="$SIZE" -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", s/1048576/(b-a)}'; }
best() { awk -v a="$1" -v b="$2" 'BEGIN{print (b>a)?b:a}'; }

mkdir -p "$S/in"; ln -f "$S/big.bin" "$S/in/big.bin"
P=0; C=0; N=0
for i in $(seq 1 "$RUNS"); do
  fresh_repo; sync
  a=$(now)
  "$FFS" publish --remote https://127.0.0.1:18944 --token-file "$S/st/token" --ca-cert "$CERT" \
    --json bench "v$i" "$S/in" > "$S/publish-$i.json"
  b=$(now); P=$(best "$P" "$(rate "$a" "$b")")
  grep -q "\"bytes_sent\":$SIZE" "$S/publish-$i.json" || { echo "publish sent the wrong amount" >&2; cat "$S/publish-$i.json" >&2; exit 1; }

  fresh_repo; sync
  a=$(now)
  code=$(curl --http1.1 -s -o /dev/null -w '%{http_code}' --cacert "$CERT" -H "Authorization: Bearer $T" \
    -T "$S/big.bin" "https://127.0.0.1:18944/publish/v1/objects/$SHA?offset=0&size=$SIZE")
  b=$(now); [ "$code" = 201 ] || { echo "stager PUT: $code" >&2; exit 1; }
  C=$(best "$C" "$(rate "$a" "$b")")

  rm -f "$S/www/up/big.bin"; sync
  a=$(now)
  code=$(curl --http1.1 -s -o /dev/null -w '%{http_code}' --cacert "$CERT" -T "$S/big.bin" \
    "https://127.0.0.1:18943/up/big.bin")
  b=$(now); [ "$code" = 201 ] || [ "$code" = 204 ] || { echo "nginx PUT: $code" >&2; exit 1; }
  N=$(best "$N" "$(rate "$a" "$b")")
done
echo "# best of $RUNS, MiB/s, $SIZE bytes over HTTPS on loopback, curl $(curl --version | head -1 | cut -d' ' -f2)"
echo "ffs-publish $P"
echo "curl-put-stager $C"
echo "curl-put-nginx $N"
awk -v p="$P" -v c="$C" -v n="$N" 'BEGIN{printf "ratio ffs-publish/nginx %.2f, curl-put-stager/nginx %.2f\n", p/n, c/n}'
