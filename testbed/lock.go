package testbed

import (
	"fmt"
	"os"
	"syscall"
)

// LockPath is the file whose flock serialises every user of the (one, shared) testbed on this
// machine: test packages, scripts/test.sh and scripts/bench.sh. Holders that already own the
// lock for a whole run (the scripts) export MEDIC_TESTBED_LOCK_HELD=1 so the packages they
// start do not wait for themselves.
const LockPath = "/tmp/medic-testbed.lock"

// lockFile keeps the lock's descriptor referenced: an *os.File that nothing refers to is
// closed by its finalizer at the next GC, and closing it drops the flock mid-run.
var lockFile *os.File

// lockTestbed blocks until this process holds the testbed lock; the kernel drops it at exit.
func lockTestbed() {
	if os.Getenv("MEDIC_TESTBED_LOCK_HELD") != "" {
		return
	}
	f, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed lock: %v\n", err)
		os.Exit(1)
	}
	if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		fmt.Fprintf(os.Stderr, "testbed lock: %v\n", err)
		os.Exit(1)
	}
	// f stays open (and locked) for the life of the process.
	lockFile = f
}
