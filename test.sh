#!/usr/bin/env bash
# The one test command (README "Two commands"): installs what the tests need, starts
# PostgreSQL, runs the whole suite with nextest (extra arguments go to nextest), and ends
# with a one-line summary of the real components the tests exercised.
#
# A test whose prerequisite is missing FAILS naming what to install (ffs-testkit's
# `prereq`); the only opt-out is FFS_TEST_SKIP=<comma list>, e.g. FFS_TEST_SKIP=browser,netns,
# which this script reports in its summary. CI never sets it.
set -euo pipefail
cd "$(dirname "$0")"

# ---- what the tests need: append here --------------------------------------------------
# Debian packages (checked with dpkg; installed with apt-get when missing).
DEB_PACKAGES=(
  curl python3 postgresql
  chromium chromium-driver   # browser: the web UI in headless Chromium
  iproute2 nftables          # netns: the agent behind a firewall in a network namespace
  bsdutils                   # pty: `script` drives the interactive prompts
  nginx vsftpd lftp wget aria2 minisign
  squid                      # the commlink through a real CONNECT proxy
  haproxy                    # two web frontends behind deploy/haproxy.cfg
)
# PyPI tools as "command=package" (checked with `command -v`; installed with pip).
PIP_TOOLS=(mitmdump=mitmproxy)   # mitmdump: a TLS-inspecting proxy for the HTTP relay
# Components a full run (no arguments) must exercise, or name in FFS_TEST_SKIP: a test that
# stops asking for its prerequisite, or is lost, turns the run red.
EXPECTED_COMPONENTS=(postgres browser netns pty root tmpfs nginx vsftpd wget aria2c squid mitmdump haproxy)
# Summary labels for component names (the words of FFS_TEST_SKIP); others print as-is.
declare -A COMPONENT_LABEL=(
  [postgres]="PostgreSQL" [browser]="Chromium" [netns]="nftables netns" [pty]="script/pty"
)
# -----------------------------------------------------------------------------------------

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing_deb=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing_deb+=("$pkg")
done
fresh_postgres=no
if [ ${#missing_deb[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing_deb[*]}"
  [[ " ${missing_deb[*]} " == *" postgresql "* ]] && fresh_postgres=yes
  # Installed daemons (nginx, vsftpd, …) must not start on their default ports: the tests
  # run their own instances. A policy-rc.d of our own keeps them down, and goes afterwards.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing_deb[@]}"
  [ -z "$policy" ] || "${sudo_cmd[@]}" rm -f "$policy"
fi

for entry in "${PIP_TOOLS[@]}"; do
  if ! command -v "${entry%%=*}" >/dev/null 2>&1; then
    echo "== installing ${entry#*=} (pip)"
    python3 -m pip install --quiet "${entry#*=}" ||
      python3 -m pip install --quiet --break-system-packages "${entry#*=}"
  fi
done

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# ---- PostgreSQL for the database tests -------------------------------------------------
if [ -z "${FFS_TEST_POSTGRES_URL:-}" ]; then
  export FFS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/test"
  if [ -d /etc/postgresql ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "== starting PostgreSQL"
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    if [ "$fresh_postgres" = yes ]; then
      # Installed just now by this script: let the tests connect over TCP as `postgres`.
      hba="/etc/postgresql/$version/main/pg_hba.conf"
      echo "host all postgres 127.0.0.1/32 trust" | cat - "$hba" |
        "${sudo_cmd[@]}" tee "$hba.new" >/dev/null
      "${sudo_cmd[@]}" mv "$hba.new" "$hba"
    fi
    "${sudo_cmd[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  if pg_isready -q -h 127.0.0.1 -p 5432 &&
    ! psql "postgres://postgres@127.0.0.1:5432/postgres" -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1; then
    psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "CREATE DATABASE test" ||
      echo "warning: could not create the database 'test'; the PostgreSQL tests will say why"
  fi
fi

# ---- the suite --------------------------------------------------------------------------
export FFS_TEST_COMPONENTS_DIR="${CARGO_TARGET_DIR:-$PWD/target}/ffs-test-components"
rm -rf "$FFS_TEST_COMPONENTS_DIR"
mkdir -p "$FFS_TEST_COMPONENTS_DIR"

scope=(--workspace)
for arg in "$@"; do
  case "$arg" in -p | -p?* | --package | --package=*) scope=() ;; esac # a chosen package
done
status=0
cargo nextest run "${scope[@]}" "$@" || status=$?

list() {
  local names=() f n
  for f in "$FFS_TEST_COMPONENTS_DIR/$1"/*; do
    [ -e "$f" ] || continue
    n="$(basename "$f")"
    names+=("${COMPONENT_LABEL[$n]:-$n}")
  done
  if [ ${#names[@]} -eq 0 ]; then echo "none"; else (IFS=,; echo "${names[*]}" | sed 's/,/, /g'); fi
}
echo "== components exercised: $(list exercised); skipped via FFS_TEST_SKIP: $(list skipped)" \
  "(FFS_TEST_SKIP=${FFS_TEST_SKIP:-})"
if [ $# -eq 0 ]; then
  for c in "${EXPECTED_COMPONENTS[@]}"; do
    if [ ! -e "$FFS_TEST_COMPONENTS_DIR/exercised/$c" ] && [ ! -e "$FFS_TEST_COMPONENTS_DIR/skipped/$c" ]; then
      echo "== FAILED: no test exercised \`$c\` (expected in a full run; see EXPECTED_COMPONENTS in test.sh)"
      [ "$status" -ne 0 ] || status=1
    fi
  done
fi
exit "$status"
