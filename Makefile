# Build flags live here so nobody has to remember them:
# - goolm: pure-Go Olm for end-to-end encryption (no libolm/cgo for crypto).
# - GOEXPERIMENT=jsonv2 is deliberately NOT set: with it, mautrix-go v0.30.0 signs one-time
#   keys over the wrong JSON (canonicaljson.Marshal of a mautrix.OneTimeKey value yields the
#   bare key string, because the pointer-receiver MarshalJSON is then called), so no peer can
#   verify them and encrypted rooms break (TestPingInEncryptedAndUnencryptedRooms fails with
#   "One-time key has invalid signature"). Only federation/pdu and federation/eventauth need
#   jsonv2; they are not linked into medic but into medic-authcheck, a second binary that
#   !unreject runs (package authcheck).
# cgo stays on: the bot's SQLite store uses mattn/go-sqlite3.
GO ?= go
TAGS := goolm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.Version=$(VERSION)

.PHONY: build test chaos fuzz bench demo testbed-up testbed-down lint

build:
	$(GO) build -tags $(TAGS) -ldflags '$(LDFLAGS)' -o medic ./cmd/medic
	GOEXPERIMENT=jsonv2 $(GO) build -ldflags '-s -w' -o medic-authcheck ./cmd/medic-authcheck

# The one test command (README, .ci/run).
test:
	./scripts/test.sh

# The bounded chaos test, outside `make test` (which runs 3 of its runs): 30 runs, each kills
# medic at a random point of a random repair and resumes or undoes it; prints the tally.
# MEDIC_CHAOS_SEED=<seed> replays one (scripts/chaos.sh).
chaos:
	MEDIC_CHAOS_RUNS=$${MEDIC_CHAOS_RUNS:-30} ./scripts/chaos.sh

fuzz:
	$(GO) test -tags $(TAGS) -run '^$$' -fuzz '^FuzzRun$$' -fuzztime 2m ./terminal

# Performance figures, printed (not pass/fail).
bench:
	./scripts/bench.sh

# Bring up the local testbed and run the bot in an admin room with the testbed's admin.
demo: build
	./scripts/demo.sh

testbed-up:
	./testbed/testbed.sh up

testbed-down:
	./testbed/testbed.sh down

lint:
	gofmt -l . && $(GO) vet -tags $(TAGS) ./...
