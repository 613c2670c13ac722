#!/usr/bin/env bash
# Runs every test against the real testbed: brings up two Synapse homeservers on PostgreSQL
# (installing what is missing, cached after the first run), runs the Go tests, the bounded
# fuzz runs, and stops the homeservers again.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--tags=goolm}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl >/dev/null; }
# promtool (contrib/'s alert rules) comes with Debian's prometheus package. Only the tool is
# wanted: policy-rc.d keeps the package's service from starting while it installs (unless the
# host already has a policy), and on a systemd host the unit it enables is disabled again.
if ! command -v promtool >/dev/null; then
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
export MEDIC_REQUIRE_PROMTOOL=1
promtool check rules contrib/*.yml

# One user of the testbed at a time on this machine (see testbed/lock.go).
exec 9>/tmp/medic-testbed.lock
flock 9
export MEDIC_TESTBED_LOCK_HELD=1

trap './testbed/testbed.sh down' EXIT
# It holds the lock for the whole run, so it recreates hs1/hs2: every run starts fresh.
env_out=$(MEDIC_TESTBED_RECREATE=1 ./testbed/testbed.sh up)
# shellcheck disable=SC2046
export $(echo "$env_out" | grep '^MEDIC_TESTBED_' | xargs)

(cd e2e/jsclient && npm ci --no-audit --no-fund --loglevel=error)

# One package at a time: the packages share the two homeservers. ./cmd/medic includes 3 runs
# of the chaos test (`make chaos` runs 30), about 2 minutes more: hence 30m, not 20m.
go test -p 1 -count=1 -timeout 30m ./...

# The auth checker (and the test-only event crafter) need GOEXPERIMENT=jsonv2, which medic must
# not have (see the Makefile): `./...` above skips them, so they run here.
GOEXPERIMENT=jsonv2 GOFLAGS= go test -count=1 ./cmd/medic-authcheck ./testbed/craftevent
GOEXPERIMENT=jsonv2 GOFLAGS= go vet ./cmd/medic-authcheck ./testbed/craftevent

# Bounded fuzzing of the parsers (the seed corpora already ran above). Budgets are counts of
# inputs (about 15 s each on a quiet 2-core machine), not durations: with a duration, Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline exceeded" when the clock
# runs out mid-input (golang/go#75804, fixed in Go 1.27), as it did once here under load.
GOEXPERIMENT=jsonv2 GOFLAGS= go test -run '^$' -fuzz '^FuzzCheck$' -fuzztime "${MEDIC_FUZZTIME:-40000x}" ./cmd/medic-authcheck
go test -run '^$' -fuzz '^FuzzRun$' -fuzztime "${MEDIC_FUZZTIME:-12000x}" ./terminal
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime "${MEDIC_FUZZTIME:-40000x}" ./config
go test -run '^$' -fuzz '^FuzzParseMetrics$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./synapse
go test -run '^$' -fuzz '^FuzzParseLine$' -fuzztime "${MEDIC_FUZZTIME:-50000x}" ./synapselog
go test -run '^$' -fuzz '^FuzzPeerLogFeed$' -fuzztime "${MEDIC_FUZZTIME:-50000x}" ./synapselog
go test -run '^$' -fuzz '^FuzzStartupFailure$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./synapselog
go test -run '^$' -fuzz '^FuzzParseSyncToken$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./synapselog
go test -run '^$' -fuzz '^FuzzParseSince$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./commands
go test -run '^$' -fuzz '^FuzzParseStateAudit$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./commands
go test -run '^$' -fuzz '^FuzzParseStateEvent$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./diagnose
go test -run '^$' -fuzz '^FuzzParseAftercareArgs$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./commands
go test -run '^$' -fuzz '^FuzzParseRegistrationToken$' -fuzztime "${MEDIC_FUZZTIME:-20000x}" ./recovery
