#!/usr/bin/env bash
# Load run of the web frontend: 200 signed-in sessions, 200 connections, against the
# product page and prepare-download. Needs wrk (apt-get install wrk). Prints wrk's report.
# THINK=MS gives each session a random 0.5-1.5 x MS pause between requests (people, not a
# closed loop); the default 0 sends back to back.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-200}
DUR=${DUR:-20s}
THREADS=${THREADS:-2}
THINK=${THINK:-0}
tmp=$(mktemp -d)
# LOADSTACK=PATH runs an already built loadstack (e.g. an older commit's, to compare in one
# run) instead of building this checkout's.
if [ -z "${LOADSTACK:-}" ]; then
  cargo build --release -q -p web-frontend --example loadstack
  LOADSTACK=${CARGO_TARGET_DIR:-target}/release/examples/loadstack
fi
"$LOADSTACK" "$tmp/sessions" "$N" > "$tmp/url" 2> "$tmp/log" &
pid=$!
# SIGINT lets the stack stop and remove its temporary directory (a run leaves tens of
# thousands of areas there; TMPDIR picks where it goes, e.g. TMPDIR=/dev/shm).
trap 'kill -INT $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do [ -s "$tmp/url" ] && break; sleep 0.2; done
url=$(cat "$tmp/url")
# CONNS: connection counts to run (default: N, i.e. one connection per session).
for c in ${CONNS:-$N}; do
  t=$THREADS; [ "$c" -lt "$t" ] && t=$c
  echo "== GET /products, $N sessions, $c connections, think ${THINK} ms, $DUR"
  wrk -t"$t" -c"$c" -d"$DUR" --latency -s web-frontend/bench/web-load.lua "$url" -- "$tmp/sessions" products "$THINK"
  echo "== POST /prepare (authorize + stage + record), $N sessions, $c connections, think ${THINK} ms, $DUR"
  wrk -t"$t" -c"$c" -d"$DUR" --latency -s web-frontend/bench/web-load.lua "$url" -- "$tmp/sessions" prepare "$THINK"
done
# Peak memory of the whole stack (agent + stager + web in one process) over the run.
grep -E 'VmHWM|VmRSS' /proc/$pid/status | sed 's/^/== loadstack /'
