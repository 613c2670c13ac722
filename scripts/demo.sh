#!/usr/bin/env bash
# Demo: brings up the local testbed (two real Synapse homeservers), creates an encrypted
# admin room for the testbed's admin with medic invited, prints how to connect, and runs
# medic in the foreground. Ctrl-C stops medic and the testbed.
set -euo pipefail
cd "$(dirname "$0")/.."
{ [ -x ./medic ] && [ -x ./medic-authcheck ]; } || make build
command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl >/dev/null; }

echo "Bringing up the testbed (the first run installs Synapse; later runs take ~15 s)..."
# shellcheck disable=SC2046
export $(./testbed/testbed.sh up | grep '^MEDIC_TESTBED_' | xargs)
trap './testbed/testbed.sh down' EXIT

HS=$MEDIC_TESTBED_HS1_URL
NAME=$MEDIC_TESTBED_HS1_NAME
DEMO=$PWD/.demo
rm -rf "$DEMO"; mkdir -p "$DEMO"
cat >"$DEMO/config.yaml" <<YAML
homeserver: {url: "$HS", server_name: "$NAME"}
bot: {user_id: "@medic:$NAME", password: "$MEDIC_TESTBED_PASSWORD_MEDIC"}
admins: ["@admin:$NAME"]
data_dir: $DEMO/data
synapse:
  database: "$MEDIC_TESTBED_HS1_DSN"
  signing_key_path: $(ls "$MEDIC_TESTBED_HS1_DIR"/*.signing.key)
  logs: [{type: file, path: "$MEDIC_TESTBED_HS1_DIR/homeserver.log*"}]
  restart_command: "$PWD/testbed/testbed.sh restart 1"
federation: {dangerously_allow_loopback_and_self_signed_testing_only: true}
YAML

token=$(curl -fsS -X POST "$HS/_matrix/client/v3/login" -H 'Content-Type: application/json' \
  -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"admin\"},\"password\":\"$MEDIC_TESTBED_PASSWORD_ADMIN\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
room=$(curl -fsS -X POST "$HS/_matrix/client/v3/createRoom" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "{\"name\":\"Medic admin\",\"preset\":\"private_chat\",\"invite\":[\"@medic:$NAME\"],\"initial_state\":[{\"type\":\"m.room.encryption\",\"state_key\":\"\",\"content\":{\"algorithm\":\"m.megolm.v1.aes-sha2\"}}]}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["room_id"])')
curl -fsS -X POST "$HS/_matrix/client/v3/logout" -H "Authorization: Bearer $token" >/dev/null

cat <<TXT

================================================================================
 Synapse Medic demo is starting.

 Connect a Matrix client (Element Web/Desktop, or any other) to:
     homeserver:  $HS
     user:        admin        password: $MEDIC_TESTBED_PASSWORD_ADMIN
 Open the encrypted room "Medic admin" ($room); medic joins it on start.
 Type:   !help      then   !ping   and   !version

 Without a graphical client (matrix-js-sdk with Rust crypto, like Element):
     (cd e2e/jsclient && npm ci) && node e2e/jsclient/roundtrip.mjs --hs $HS \\
       --user @admin:$NAME --password $MEDIC_TESTBED_PASSWORD_ADMIN --room '$room' \\
       --send '!help' --expect-from @medic:$NAME

 From this host, without Matrix:
     ./medic exec -c .demo/config.yaml '!version'

 The second homeserver ($MEDIC_TESTBED_HS2_NAME) is at $MEDIC_TESTBED_HS2_URL.
 Ctrl-C stops medic and both homeservers.
================================================================================

TXT
./medic run -c "$DEMO/config.yaml"
