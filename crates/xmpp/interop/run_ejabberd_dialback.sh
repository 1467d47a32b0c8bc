#!/bin/bash
# Interop check of the s2s machines against a real ejabberd 23.01 (Debian 12), loopback only.
# Same flow as run_prosody_dialback.sh: alice@corp-a.test (on ejabberd) writes to bob@hub.test;
# ejabberd opens s2s to examples/s2s_peer.rs (hub.test), which checks the dialback key with
# db:verify, receives the message as an event and echoes it on its own outbound stream.
# Usage: run_ejabberd_dialback.sh [plain|tls|pki]   (default tls: STARTTLS required both ways;
#   pki: certificates from a test CA both sides trust, so SASL EXTERNAL instead of dialback)
# No real DNS: Erlang's resolver reads only a private inetrc and asks mini_dns.py on loopback;
# ejabberd runs in a private mount namespace with loopback-only resolv.conf and hosts.
# Exit 0 = the message arrived as an event and the echo's pair was authorised by ejabberd.
set -uo pipefail
MODE=${1:-tls}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
RUN=$(mktemp -d /tmp/entente-ejabberd.XXXXXX)
PY=/usr/bin/python3
PEER_PORT=${PEER_PORT:-15279}; S2S_PORT=${S2S_PORT:-15271}; C2S_PORT=${C2S_PORT:-15224}
DIST_PORT=${DIST_PORT:-15210}; DNS_PORT=${DNS_PORT:-15353}
case "$MODE" in
  tls) STARTTLS=required; TLSFLAG=(--tls) ;;
  pki) STARTTLS=required; TLSFLAG=(--pki "$RUN/pki") ;;
  *)   STARTTLS=false; TLSFLAG=() ;;
esac

DEBIAN_FRONTEND=noninteractive apt-get install -y -q ejabberd python3-slixmpp openssl >/dev/null
(cd "$ROOT" && cargo build -q -p entente-xmpp --example s2s_peer) || exit 1
mkdir -p "$RUN/logs" "$RUN/spool" "$RUN/pki"
CAFILE=""
if [ "$MODE" = pki ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Entente test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$RUN/pki/ca.key" -out "$RUN/pki/ca.crt" 2>/dev/null
  for d in hub.test corp-a.test; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$d" -keyout "$RUN/pki/$d.key" -out "$RUN/pki/$d.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$d" > "$RUN/pki/$d.ext"
    openssl x509 -req -in "$RUN/pki/$d.csr" -CA "$RUN/pki/ca.crt" -CAkey "$RUN/pki/ca.key" \
      -CAcreateserial -days 2 -extfile "$RUN/pki/$d.ext" -out "$RUN/pki/$d.crt" 2>/dev/null
  done
  cat "$RUN/pki/corp-a.test.crt" "$RUN/pki/corp-a.test.key" > "$RUN/corp-a.test.pem"
  CAFILE="ca_file: \"$RUN/pki/ca.crt\""
else
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=corp-a.test" \
    -addext "subjectAltName=DNS:corp-a.test" -keyout "$RUN/k.pem" -out "$RUN/c.pem" 2>/dev/null
  cat "$RUN/c.pem" "$RUN/k.pem" > "$RUN/corp-a.test.pem"; rm "$RUN/k.pem" "$RUN/c.pem"
fi
cat > "$RUN/inetrc" <<INET
{resolv_conf, ""}.
{hosts_file, ""}.
{lookup, [file]}.
{host, {127,0,0,1}, ["localhost", "corp-a.test", "hub.test"]}.
{nameserver, {127,0,0,1}, $DNS_PORT}.
INET
cat > "$RUN/ejabberdctl.cfg" <<CTL
ERL_EPMD_ADDRESS=127.0.0.1
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT=$DIST_PORT
EJABBERD_PID_PATH=$RUN/ejabberd.pid
CTL
cat > "$RUN/ejabberd.yml" <<YML
loglevel: debug
hosts: ["corp-a.test"]
certfiles: ["$RUN/corp-a.test.pem"]
$CAFILE
listen:
  - {port: $C2S_PORT, ip: "127.0.0.1", module: ejabberd_c2s, starttls_required: true}
  - {port: $S2S_PORT, ip: "127.0.0.1", module: ejabberd_s2s_in}
s2s_use_starttls: $STARTTLS
outgoing_s2s_port: $PEER_PORT
outgoing_s2s_families: [ipv4]
s2s_dns_timeout: 2
s2s_dns_retries: 1
auth_method: internal
auth_password_format: scram
acl: {}
access_rules: {c2s: {allow: all}}
modules:
  mod_s2s_dialback: {}
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
YML
chown -R ejabberd:ejabberd "$RUN"; chmod 755 "$RUN"
echo "nameserver 127.0.0.1" > "$RUN/resolv.conf"
printf '127.0.0.1 localhost corp-a.test hub.test\n' > "$RUN/hosts"
NS=(unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"' sh "$RUN/resolv.conf" "$RUN/hosts")
EC=("${NS[@]}" ejabberdctl --config-dir "$RUN" --config "$RUN/ejabberd.yml" --ctl-config "$RUN/ejabberdctl.cfg" --logs "$RUN/logs" --spool "$RUN/spool")
PIDS=()
cleanup() {
  EJPID=$(cat "$RUN/ejabberd.pid" 2>/dev/null); [ -n "$EJPID" ] && kill "$EJPID" 2>/dev/null
  for i in $(seq 50); do [ -n "$EJPID" ] && kill -0 "$EJPID" 2>/dev/null || break; sleep 0.2; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

"$ROOT/target/debug/examples/s2s_peer" --listen "127.0.0.1:$PEER_PORT" --peer corp-a.test \
  --peer-addr "127.0.0.1:$S2S_PORT" --messages 1 --timeout 60 "${TLSFLAG[@]}" > "$RUN/peer.out" 2>&1 &
PEERPID=$!; PIDS+=($PEERPID)
$PY "$HERE/mini_dns.py" --port $DNS_PORT --a hub.test --a corp-a.test --srv hub.test:$PEER_PORT \
  --timeout 90 > "$RUN/dns.out" 2>&1 & PIDS+=($!)
"${EC[@]}" foreground > "$RUN/ejabberd.console" 2>&1 & PIDS+=($!)
for i in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$C2S_PORT) 2>/dev/null && break; sleep 0.2; done
"${EC[@]}" register alice corp-a.test alicepw
$PY "$HERE/send_xmpp.py" alice@corp-a.test alicepw bob@hub.test "hello from alice via ejabberd" \
  127.0.0.1 $C2S_PORT 2>&1 | grep -v DEBUG | tail -3
rc=0; wait $PEERPID || rc=$?
echo "===== s2s_peer (hub.test) ====="; cat "$RUN/peer.out"
echo "===== ejabberd s2s log ====="; grep -hEi 's2s|dialback' "$RUN"/logs/*.log | tail -30
grep -q 'EVENT Message' "$RUN/peer.out" || rc=1
if [ "$MODE" = pki ]; then
  grep -q "mechanism='EXTERNAL'" "$RUN/peer.out" || rc=1
  ! grep -q 'VerifyDialback\|<db:result' "$RUN/peer.out" || rc=1
fi
if [ "$MODE" != plain ]; then
  grep -q 'TLS up' "$RUN/peer.out" || rc=1
  ! grep -q 'TLS failed' "$RUN/peer.out" || rc=1
fi
echo "s2s_peer exit code: $rc (0 = message received as an event and echo accepted)"
exit $rc
