#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (as root, Debian
# packages and npm modules), builds the workspace, runs every Rust test and the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n==> %s\n' "$*"; }

# ---- system packages -------------------------------------------------------------------
# Real peers for the interop tests: Chromium (browser client), Prosody and slixmpp (XMPP),
# sipp and baresip (SIP), openssl for test certificates.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prosody >/dev/null 2>&1 || need+=(prosody)
# Prosody resolves through libunbound, which the tests point at loopback only.
dpkg -s lua-unbound >/dev/null 2>&1 || need+=(lua-unbound)
/usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || need+=(python3-slixmpp)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]}; run this script as root so it can install them" >&2
    exit 1
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- Rust ------------------------------------------------------------------------------
log "building"
cargo build --workspace --all-targets

log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# ---- fuzz targets compile --------------------------------------------------------------
for dir in fuzz/*/; do
  [ -f "$dir/Cargo.toml" ] || continue
  log "checking fuzz targets in $dir"
  (cd "$dir" && cargo check --quiet --bins)
done

# ---- browser ---------------------------------------------------------------------------
log "browser test (headless Chromium)"
(cd web && npm ci --no-audit --no-fund --silent)
ENTENTE_BIN="$root/target/debug/entente" node web/e2e/two_browsers.mjs
