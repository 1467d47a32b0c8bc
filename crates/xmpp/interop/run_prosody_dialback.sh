#!/bin/bash
# Interop check of the s2s machines against a real Prosody 0.12 (Debian 12), loopback only.
# alice@corp-a.test (on Prosody) sends a message to bob@hub.test; Prosody opens s2s to our example
# driver (examples/s2s_peer.rs) listening as hub.test, which verifies Prosody's dialback key with
# db:verify, receives the message as a canonical event, and echoes it back on its own outbound
# stream, which Prosody verifies by connecting back.
# Usage: run_prosody_dialback.sh [plain|tls]   (default plain)
#   plain: no TLS anywhere, dialback only (s2s_require_encryption = $REQ)
#   tls:   STARTTLS required both ways (rustls in the example, self-signed certificates on both
#          sides, so no certificate is trusted and dialback still authenticates each pair)
# Exit 0 = the message arrived as an event and the echo's domain pair was authorised by Prosody.
# Needs: apt-get install prosody python3-slixmpp (done here). Names resolve on loopback only
# (Prosody's libunbound gets a private zone; nothing is forwarded).
set -euo pipefail
MODE=${1:-plain}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
RUN=$(mktemp -d /tmp/entente-prosody.XXXXXX)
PEER_PORT=${PEER_PORT:-15269}            # where Prosody believes hub.test's s2s lives (our driver)
PROSODY_S2S_PORT=${PROSODY_S2S_PORT:-15270}
C2S_PORT=${C2S_PORT:-15222}
PY=/usr/bin/python3
case "$MODE" in
  tls) REQ=true; SECURE=false; TLSFLAG=(--tls) ;;
  pki) REQ=true; SECURE=true; TLSFLAG=(--pki "$RUN/pki") ;;
  *)   REQ=false; SECURE=false; TLSFLAG=() ;;
esac

DEBIAN_FRONTEND=noninteractive apt-get install -y -q prosody python3-slixmpp openssl >/dev/null
(cd "$ROOT" && cargo build -q -p entente-xmpp --example s2s_peer)

mkdir -p "$RUN/data" "$RUN/certs" "$RUN/pki"
if [ "$MODE" = pki ]; then
  # A test CA and one certificate per domain, valid as TLS server and client.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Entente test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$RUN/pki/ca.key" -out "$RUN/pki/ca.crt" 2>/dev/null
  for d in hub.test corp-a.test; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$d" -keyout "$RUN/pki/$d.key" -out "$RUN/pki/$d.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$d" > "$RUN/pki/$d.ext"
    openssl x509 -req -in "$RUN/pki/$d.csr" -CA "$RUN/pki/ca.crt" -CAkey "$RUN/pki/ca.key" \
      -CAcreateserial -days 2 -extfile "$RUN/pki/$d.ext" -out "$RUN/pki/$d.crt" 2>/dev/null
  done
  cp "$RUN/pki/corp-a.test.crt" "$RUN/pki/corp-a.test.key" "$RUN/certs/"
  CAFILE="cafile = \"$RUN/pki/ca.crt\";"
else
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=corp-a.test" \
    -addext "subjectAltName=DNS:corp-a.test" -keyout "$RUN/certs/corp-a.test.key" \
    -out "$RUN/certs/corp-a.test.crt" 2>/dev/null
  CAFILE=""
fi
printf '127.0.0.1 hub.test\n127.0.0.1 corp-a.test\n' > "$RUN/hosts"
cat > "$RUN/prosody.cfg.lua" <<CFG
pidfile = "$RUN/prosody.pid"
data_path = "$RUN/data"
log = { debug = "$RUN/prosody.log"; info = "*console" }
interfaces = { "127.0.0.1" }
c2s_ports = { $C2S_PORT }
s2s_ports = { $PROSODY_S2S_PORT }
c2s_direct_tls_ports = { }
s2s_direct_tls_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix" }
modules_disabled = { "s2s_bidi" }
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_secure_auth = $SECURE
s2s_require_encryption = $REQ
unbound = {
  resolvconf = false;
  hoststxt = "$RUN/hosts";
  forward = "127.0.0.1@1";
  options = {
    ["local-zone:"] = "test. static";
    ["local-data:"] = "_xmpp-server._tcp.hub.test. 60 IN SRV 0 0 $PEER_PORT hub.test.";
  };
}
VirtualHost "corp-a.test"
  ssl = { certificate = "$RUN/certs/corp-a.test.crt"; key = "$RUN/certs/corp-a.test.key"; $CAFILE }
CFG
chown -R prosody:prosody "$RUN"
chmod 755 "$RUN"
CFG="$RUN/prosody.cfg.lua"
prosodyctl --config "$CFG" register alice corp-a.test alicepw

PIDS=()
cleanup() {
  [ -s "$RUN/prosody.pid" ] && kill "$(cat "$RUN/prosody.pid")" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$ROOT/target/debug/examples/s2s_peer" --listen "127.0.0.1:$PEER_PORT" --peer corp-a.test \
  --peer-addr "127.0.0.1:$PROSODY_S2S_PORT" --messages 1 --timeout 40 "${TLSFLAG[@]}" > "$RUN/peer.out" 2>&1 &
PEERPID=$!; PIDS+=($PEERPID)
runuser -u prosody -- prosody -F --config "$CFG" > "$RUN/prosody.console" 2>&1 &
PIDS+=($!)
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$C2S_PORT) 2>/dev/null && break; sleep 0.2; done

$PY "$HERE/send_xmpp.py" alice@corp-a.test alicepw bob@hub.test "hello from alice via s2s" \
  127.0.0.1 "$C2S_PORT" 2>&1 | grep -v DEBUG | tail -3 || true

rc=0; wait $PEERPID || rc=$?
echo "===== s2s_peer (hub.test) ====="; cat "$RUN/peer.out"
echo "===== prosody s2s log ====="
grep -Ei 's2s|dialback' "$RUN/prosody.log" | grep -v -i 'loaded' | tail -40 || true
grep -q 'EVENT Message' "$RUN/peer.out" || rc=1
if [ "$MODE" = pki ]; then
  # Both directions authenticated by SASL EXTERNAL: no dialback key in either direction.
  grep -q "mechanism='EXTERNAL'" "$RUN/peer.out" || rc=1
  ! grep -q 'VerifyDialback\|<db:result' "$RUN/peer.out" || rc=1
fi
if [ "$MODE" != plain ]; then
  # Every stream went through STARTTLS: as many handshakes as streams, and no failure.
  grep -q 'TLS up' "$RUN/peer.out" || rc=1
  ! grep -q 'TLS failed' "$RUN/peer.out" || rc=1
fi
echo "s2s_peer exit code: $rc (0 = message received as an event and echo accepted)"
exit $rc
