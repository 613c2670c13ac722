#!/usr/bin/env bash
# Prints medic's performance figures (Go benchmarks against the real testbed). Figures, not
# verdicts: compare them with the targets in the issues.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--tags=goolm}"
if [ -z "${MEDIC_TESTBED_HS1_URL:-}" ]; then
  # This run brings the testbed up and down: hold the testbed lock for all of it.
  exec 9>/tmp/medic-testbed.lock
  flock 9
  export MEDIC_TESTBED_LOCK_HELD=1
  trap './testbed/testbed.sh down' EXIT
  # shellcheck disable=SC2046
  export $(MEDIC_TESTBED_RECREATE=1 ./testbed/testbed.sh up | grep '^MEDIC_TESTBED_' | xargs)
fi
go test -run '^$' -bench "${MEDIC_BENCH:-PingRoundTrip}" -benchtime "${MEDIC_BENCHTIME:-50x}" -count 1 ./bench
# The log scan against grep on a generated 1 GB log (MEDIC_BENCH_LOG_MB to change the size).
go test -run '^$' -bench RecoverScan -benchtime 1x -count 1 ./bench
# !import history: 142k generated events imported from a scratch source database, next to
# row-by-row INSERTs of the same data (MEDIC_BENCH_IMPORT_EVENTS to change the size).
go test -run '^$' -bench ImportHistory -benchtime 1x -count 1 -timeout 30m ./bench
# !unreject on a generated 100k-event rejection chain (MEDIC_BENCH_CHAIN to change the size):
# plan at proposal (verify every event) and run after approval (the drift re-plan, which reuses
# that verification when nothing changed, and the transaction), peak RSS of medic and checker.
go test -run '^$' -bench UnrejectChain -benchtime 1x -count 1 -timeout 30m ./bench
# The full health report on a generated database (5M events, 20M state_groups_state rows;
# generated once into medic_bench_health, minutes, then reused) with each query's plan checked
# for sequential scans of events/state_groups_state. MEDIC_BENCH_EVENTS / MEDIC_BENCH_STATE resize it.
go test -run '^$' -bench HealthReport -benchtime 3x -count 1 -timeout 60m ./bench
# `!state audit --all` over 200 rooms with remote members (created once on the testbed, then
# reused; MEDIC_BENCH_STATE_ROOMS to change the count) against its time budget (state.budget).
go test -run '^$' -bench StateAudit -benchtime 3x -count 1 -timeout 30m ./bench
# !recover room on 200 members of an invite-only room forgotten after a restore: login-as-user
# and medic's appservice side by side (time, joins/s, 429s, the partial-state wait).
go test -run '^$' -bench RejoinModes -benchtime 1x -count 1 -timeout 30m ./bench
