#!/usr/bin/env bash
# Capacity run (issue 11): the same closed-loop load through haproxy against one stager and
# one web frontend, then against two of each, in one run, each role its own `ffs` process
# (release build) as in tests/it/scaling.rs; db agents on PostgreSQL (a fresh schema,
# dropped at the end). Prints one wrk report per step and a table of ratios (2 / 1).
#
#   deploy/bench/capacity.sh            # defaults below; needs wrk, haproxy, psql, curl
#
# PG=postgres://postgres@127.0.0.1:5432/test  the database (a schema of its own is made)
# AGENTS=1        db agents in both shapes (the shape varied is stagers + webs)
# SESSIONS=64     signed-in sessions the load rotates over (one customer each)
# CONNS=32        wrk connections;  THREADS=2 wrk threads;  DUR=15s per step
# ROUNDS=3        1-then-2 rounds (the ratio is taken per round, so drift cancels)
# WORKERS=1       [web] workers of each web (1 per web, so two webs use what one cannot)
#
# Note: this machine has 2 cores shared by everything (haproxy, wrk, PostgreSQL, the
# roles), so the ratios show what a second stager and web buy when they share one host's
# CPUs, not what a second host buys.
set -euo pipefail
cd "$(dirname "$0")/../.."
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
AGENTS=${AGENTS:-1}
SESSIONS=${SESSIONS:-64}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
DUR=${DUR:-15s}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-1}
for c in wrk haproxy psql curl; do
  command -v "$c" >/dev/null || { echo "needs $c (apt-get install $c)" >&2; exit 1; }
done

cargo build --release -q -p ffs
ffs="$(realpath "${CARGO_TARGET_DIR:-target}/release/ffs")"
tmp=$(mktemp -d)
schema="ffs_capacity_$$"
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  psql "$PG" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
psql "$PG" -qc "CREATE SCHEMA $schema"
sep='?'; [[ "$PG" == *'?'* ]] && sep='&'
db="${PG}${sep}options=-csearch_path%3D${schema}"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }
ready() { # URL: waits for 200
  for _ in $(seq 1 300); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ] && return 0; sleep 0.2
  done
  echo "$1/readyz never 200" >&2; return 1
}
# instance NAME BODY: a directory with its ffs.toml (the shared key bag, 1 s heartbeats).
instance() {
  mkdir -p "$tmp/$1"
  printf '[link]\nkeys = "%s"\n\n%s' "$tmp/keys.bag" "$2" > "$tmp/$1/ffs.toml"
}
start() { # DIR ROLE
  (cd "$tmp/$1" && RUST_LOG=warn exec "$ffs" "$2" >>"$tmp/$1.log" 2>&1) &
  pids+=($!)
}

(cd "$tmp" && "$ffs" keys generate --out keys.bag >/dev/null)

# Agents, customers (one per session), entitlements.
agent_addrs=()
for i in $(seq 1 "$AGENTS"); do
  p=$(port)
  instance "agent$i" "[db-agent]
mode = \"listen\"
listen = \"127.0.0.1:$p\"
database = \"$db\"
argon2_memory_kib = 8192
argon2_iterations = 1
"
  agent_addrs+=("\"127.0.0.1:$p\"")
done
for s in $(seq 1 "$SESSIONS"); do
  (cd "$tmp/agent1" && echo "capacity-pass-$s" | "$ffs" customer add "c$s" --name "C $s" \
    --email "c$s@example.com" --password-stdin >/dev/null &&
    "$ffs" entitle "c$s" widget --versions '*' >/dev/null)
done

# Three stagers, each holding widget 1.0 (a 1 MiB file and a small one): a serves the
# one-stager shape, b and c the two-stager shape. (Not a and b: a web stages on the stager
# with the fewest live areas, so a stager the first shape filled would sit idle in the
# second until the other caught up.)
mkdir -p "$tmp/src"
head -c 1048576 /dev/urandom > "$tmp/src/widget.bin"
echo "widget 1.0" > "$tmp/src/README.txt"
declare -A stager_link
for s in a b c; do
  p=$(port) passive=$(port)
  instance "stager-$s" "[stager]
link_listen = \"127.0.0.1:$p\"
ftp_listen = \"127.0.0.1:$(port)\"
passive_ports = \"$passive-$((passive + 4))\"
https_listen = \"127.0.0.1:$(port)\"
"
  (cd "$tmp/stager-$s" && "$ffs" publish widget 1.0 "$tmp/src" >/dev/null)
  stager_link[$s]=$p
done

# Webs: N of them, each with the first N stagers, behind haproxy.
web_conf() { # NAME PORT STAGER-NAMES...
  local name=$1 port=$2 st="" s; shift 2
  for s in "$@"; do
    st="$st${st:+, }{ name = \"$s\", addr = \"127.0.0.1:${stager_link[$s]}\" }"
  done
  local agents; agents=$(IFS=,; echo "${agent_addrs[*]}")
  instance "$name" "[web]
listen = \"127.0.0.1:$port\"
tls_cert = \"$tmp/web-cert.pem\"
tls_key = \"$tmp/web-key.pem\"
session_key = \"$tmp/web-session.key\"
trust_forwarded_for = true
db_agent_addr = [$agents]
stagers = [$st]
workers = $WORKERS
session_idle_secs = 3600
"
}
haproxy_conf() { # FRONT_PORT WEB_PORTS...
  local front=$1; shift
  sed -e '/^    log \/dev\/log local0$/d' -e '/^    bind :80$/d' \
    -e "s|bind :443 ssl crt /etc/haproxy/ffs.pem|bind 127.0.0.1:$front ssl crt $tmp/haproxy.pem|" \
    -e "s|ca-file /etc/ffs/web-ca.pem|ca-file $tmp/web-cert.pem|" \
    -e '/^    server web[0-9]/d' deploy/haproxy.cfg
  local i=1
  for w in "$@"; do echo "    server web$i 127.0.0.1:$w"; i=$((i + 1)); done
}

# shape N: starts N stagers + N webs + haproxy; sets $front. (Agents run throughout.)
shape() {
  local n=$1 webs=() st=(a)
  [ "$n" -ge 2 ] && st=(b c)
  for s in "${st[@]}"; do start "stager-$s" stager; done
  for i in $(seq 1 "$n"); do
    local p; p=$(port)
    web_conf "web$n-$i" "$p" "${st[@]}"
    start "web$n-$i" web
    wait_port "$p"
    ready "https://127.0.0.1:$p"
    webs+=("$p")
  done
  [ -f "$tmp/haproxy.pem" ] || cat "$tmp/web-cert.pem" "$tmp/web-key.pem" > "$tmp/haproxy.pem"
  local hp; hp=$(port)
  haproxy_conf "$hp" "${webs[@]}" > "$tmp/haproxy-$n.cfg"
  haproxy -q -c -f "$tmp/haproxy-$n.cfg"
  haproxy -db -f "$tmp/haproxy-$n.cfg" >>"$tmp/haproxy.log" 2>&1 &
  pids+=($!)
  front="https://127.0.0.1:$hp"
  ready "$front"
}

for i in $(seq 1 "$AGENTS"); do start "agent$i" db-agent; done

# Sessions: signed in once (through the first shape's web); the cookies are valid on every
# web, since all hold the same session key.
sessions="$tmp/sessions"
make_sessions() {
  : > "$sessions"
  for s in $(seq 1 "$SESSIONS"); do
    local jar="$tmp/jar$s"
    local csrf
    csrf=$(curl -sk -c "$jar" -b "$jar" "$front/login" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//; s/"$//')
    curl -sk -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf=$csrf" \
      --data-urlencode "login=c$s" --data-urlencode "password=capacity-pass-$s" "$front/login"
    csrf=$(curl -sk -c "$jar" -b "$jar" "$front/products" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//; s/"$//')
    local cookie; cookie=$(awk '$6 == "ffs_session" { print $7 }' "$jar")
    [ -n "$cookie" ] && [ -n "$csrf" ] || { echo "session $s: sign-in failed" >&2; exit 1; }
    echo "$cookie $csrf" >> "$sessions"
  done
}

results="$tmp/results"
: > "$results"
run() { # SHAPE ROUND MODE
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -s web-frontend/bench/web-load.lua \
    "$front" -- "$sessions" "$3" 0 widget 1.0)
  echo "== $1 stager(s) + $1 web(s), round $2, $3" >&2
  echo "$out" >&2
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  non2xx=$(awk '/Non-2xx/ { print $5 }' <<<"$out")
  echo "$1 $2 $3 $rps $p50 $p99 ${non2xx:-0}" >> "$results"
  # Areas staged so far on each stager: the object's hard links beyond the repository's.
  local sha; sha=$(sha256sum "$tmp/src/widget.bin" | cut -d' ' -f1)
  for s in a b c; do
    local obj="$tmp/stager-$s/stager/repository/objects/${sha:0:2}/${sha:2}"
    [ -e "$obj" ] && echo "== areas on stager $s so far: $(($(stat -c %h "$obj") - 1))" >&2
  done
  return 0
}

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)" >&2
for r in $(seq 1 "$ROUNDS"); do
  for n in 1 2; do
    shape "$n"
    [ -s "$sessions" ] || make_sessions
    run "$n" "$r" products
    run "$n" "$r" prepare
    # Stop this shape's stagers, webs and haproxy (agents stay).
    keep=("${pids[@]:0:$AGENTS}")
    for p in "${pids[@]:$AGENTS}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    pids=("${keep[@]}")
  done
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)" >&2

echo
echo "| round | request | 1+1 req/s | 2+2 req/s | ratio 2/1 | p50 1 → 2 | p99 1 → 2 | non-2xx 1 / 2 |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for m in products prepare; do
    read -r _ _ _ rps1 p501 p991 e1 < <(awk -v r="$r" -v m="$m" '$1 == 1 && $2 == r && $3 == m' "$results")
    read -r _ _ _ rps2 p502 p992 e2 < <(awk -v r="$r" -v m="$m" '$1 == 2 && $2 == r && $3 == m' "$results")
    ratio=$(awk -v a="$rps1" -v b="$rps2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')
    echo "| $r | $m | $rps1 | $rps2 | $ratio | $p501 → $p502 | $p991 → $p992 | $e1 / $e2 |"
  done
done
