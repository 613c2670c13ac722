#!/usr/bin/env bash
# The bounded chaos test (issue 13): MEDIC_CHAOS_RUNS runs (30 by default) of TestChaos, each
# killing medic (SIGKILL) at a random point of a random repair on the testbed, then resuming or
# undoing it. Brings up the two Synapse homeservers on PostgreSQL as scripts/test.sh does, holds
# the testbed lock for the whole run, prints the tally and stops the homeservers again.
# MEDIC_CHAOS_SEED=<seed> replays a run (the seed is printed first).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--tags=goolm}"
export MEDIC_CHAOS_RUNS="${MEDIC_CHAOS_RUNS:-30}"

command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl >/dev/null; }

if [ -n "${MEDIC_TESTBED_LOCK_HELD:-}" ] && [ -n "${MEDIC_TESTBED_HS1_URL:-}" ]; then
  # A testbed of one's own, already up and named in the environment (e.g. a private pair:
  # set -a; . /tmp/pairNM.env; set +a): use it as it is.
  :
else
  # One user of the testbed at a time on this machine (see testbed/lock.go).
  exec 9>/tmp/medic-testbed.lock
  flock 9
  export MEDIC_TESTBED_LOCK_HELD=1
  trap './testbed/testbed.sh down' EXIT
  # It holds the lock for the whole run, so it recreates hs1/hs2: every run starts fresh.
  env_out=$(MEDIC_TESTBED_RECREATE=1 ./testbed/testbed.sh up)
  # shellcheck disable=SC2046
  export $(echo "$env_out" | grep '^MEDIC_TESTBED_' | xargs)
fi

# -v, or go test would show nothing of a passing run; the whole log goes to a file, the
# terminal gets each run's verdict and the tally (MEDIC_CHAOS_TALLY, written by the test).
log=$(mktemp /tmp/medic-chaos.XXXXXX.log)
export MEDIC_CHAOS_TALLY="$log.tally"
echo "chaos: $MEDIC_CHAOS_RUNS runs; full log in $log"
rc=0
go test -v -count=1 -timeout 60m -run '^TestChaos$' ./cmd/medic >"$log" 2>&1 || rc=$?
grep -E 'chaos: [0-9]+ runs, MEDIC_CHAOS_SEED|^    --- (PASS|FAIL)|replay with' "$log" || true
if [ -s "$MEDIC_CHAOS_TALLY" ]; then cat "$MEDIC_CHAOS_TALLY"; else tail -50 "$log"; fi
exit $rc
