#!/usr/bin/env bash
# Demo: brings up the local testbed (two real Synapse homeservers), stages on hs1 the three
# incidents medic heals (testbed/stage, the code the tests use), creates an encrypted admin
# room for the testbed's admin with medic invited, prints what to type, and runs medic in the
# foreground. Ctrl-C stops medic, the proxy and the testbed.
#
#   scripts/demo.sh             the demo (make demo)
#   scripts/demo.sh fix-proxy   step 3 of the printed guide: fix the staged nginx proxy
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = fix-proxy ]; then
  conf=.demo/nginx/nginx.conf
  echo "The fix: proxy_pass without a URI part, so nginx passes the request URI unchanged ($conf):"
  grep -n 'proxy_pass' "$conf" | sed 's/^/  before: /'
  .demo/stage fix-proxy .demo
  grep -n 'proxy_pass' "$conf" | sed 's/^/  after:  /'
  echo "nginx restarted. Now !health again."
  exit 0
fi
{ [ -x ./medic ] && [ -x ./medic-authcheck ]; } || make build
command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl >/dev/null; }

echo "Bringing up the testbed (the first run installs Synapse; later runs take ~15 s)..."
# shellcheck disable=SC2046
export $(./testbed/testbed.sh up | grep '^MEDIC_TESTBED_' | xargs)

HS=$MEDIC_TESTBED_HS1_URL
NAME=$MEDIC_TESTBED_HS1_NAME
DEMO=$PWD/.demo
[ -x "$DEMO/stage" ] && "$DEMO/stage" stop-proxy "$DEMO" 2>/dev/null || true
rm -rf "$DEMO"; mkdir -p "$DEMO"
echo "Staging the incidents (about a minute)..."
go build -tags goolm -o "$DEMO/stage" ./testbed/stage
trap '"$DEMO/stage" stop-proxy "$DEMO"; ./testbed/testbed.sh down' EXIT
staged=$("$DEMO/stage" demo "$DEMO")
eval "$staged" # CONFIG, FORGOTTEN_ROOM, POISONED_ROOM, PROXY

token=$(curl -fsS -X POST "$HS/_matrix/client/v3/login" -H 'Content-Type: application/json' \
  -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"admin\"},\"password\":\"$MEDIC_TESTBED_PASSWORD_ADMIN\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
room=$(curl -fsS -X POST "$HS/_matrix/client/v3/createRoom" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "{\"name\":\"Medic admin\",\"preset\":\"private_chat\",\"invite\":[\"@medic:$NAME\"],\"initial_state\":[{\"type\":\"m.room.encryption\",\"state_key\":\"\",\"content\":{\"algorithm\":\"m.megolm.v1.aes-sha2\"}}]}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["room_id"])')
curl -fsS -X POST "$HS/_matrix/client/v3/logout" -H "Authorization: Bearer $token" >/dev/null

cat <<TXT

================================================================================
 Synapse Medic demo is starting. Three incidents are staged on $NAME:
   1. $FORGOTTEN_ROOM
      a room forgotten after a restore of $NAME's database (the other server keeps talking to it)
   2. $POISONED_ROOM
      a room poisoned by a wrongly rejected power-levels event (what follows is rejected too)
   3. nginx at $PROXY in front of $NAME's federation port normalises request URIs
      (health.federation_address points there, as DNS would for remote servers)

 Connect a Matrix client (Element Web/Desktop, or any other) to:
     homeserver:  $HS
     user:        admin        password: $MEDIC_TESTBED_PASSWORD_ADMIN
 Open the encrypted room "Medic admin" ($room); medic joins it on start.
 Type, in order:
     !health                          three 🔴: federation self-test, forgotten rooms, rejected events
     !recover all                     a plan; react ✅ (or !approve <job>): the members rejoin
     !unreject $POISONED_ROOM
                                      a plan; ✅: the power levels and what followed are restored
     (the proxy fix, in a shell)      ./scripts/demo.sh fix-proxy
     !health                          all 🟢

 Without a graphical client (matrix-js-sdk with Rust crypto, like Element):
     (cd e2e/jsclient && npm ci) && node e2e/jsclient/roundtrip.mjs --hs $HS \\
       --user @admin:$NAME --password $MEDIC_TESTBED_PASSWORD_ADMIN --room '$room' \\
       --send '!health' --expect-from @medic:$NAME

 From this host, without Matrix (the same steps; --yes approves at the terminal):
     ./medic exec -c .demo/config.yaml '!health'
     ./medic exec -c .demo/config.yaml --yes '!recover all'
     ./medic exec -c .demo/config.yaml --yes '!unreject $POISONED_ROOM'
     ./scripts/demo.sh fix-proxy
     ./medic exec -c .demo/config.yaml '!health'

 medic's monitoring: curl http://127.0.0.1:9330/metrics (and /healthz, /ready).
 The second homeserver ($MEDIC_TESTBED_HS2_NAME) is at $MEDIC_TESTBED_HS2_URL.
 Ctrl-C stops medic, the proxy and both homeservers.
================================================================================

TXT
./medic run -c "$CONFIG"
