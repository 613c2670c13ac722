// Package proc names this medic process in records that other medic processes judge later:
// a running job's heartbeat (package jobs) and a minted login-as-user token (package
// recovery). A bot and any number of `medic exec` share medic's store, and each must tell a
// record of a live process from one left by a process that is gone.
//
// The name is a random boot ID plus the PID. A PID alone is not enough: in a container medic
// is PID 1, and after a quick restart PID 1 is a new process while the dead one's records
// still name PID 1.
package proc

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"go.mau.fi/util/random"
)

// ID names one medic process.
type ID struct {
	Boot string // random, drawn once per process
	PID  int
}

var self = ID{Boot: random.String(16), PID: os.Getpid()}

// Self is this process.
func Self() ID { return self }

// String is the stored form: "boot pid".
func (id ID) String() string { return fmt.Sprintf("%s %d", id.Boot, id.PID) }

// Parse reads the stored form. A record without a boot ID (written before there was one)
// gives ok false: nothing can tell whether its process lives.
func Parse(s string) (id ID, ok bool) {
	if _, err := fmt.Sscan(s, &id.Boot, &id.PID); err != nil || strings.TrimSpace(id.Boot) == "" || id.PID <= 0 {
		return ID{}, false
	}
	return id, true
}

// Gone tells whether the process named has ended. Medic's store is local to its host, so a
// PID that no longer exists is gone at once; a PID that is ours but with another boot ID was
// an earlier process (medic as PID 1 in a restarted container). A live PID may, rarely, be
// another program that reused it: records that must not outlive their process also carry a
// time (a heartbeat, a token's lifetime).
func (id ID) Gone() bool {
	switch {
	case id.Boot == self.Boot:
		return false
	case id.PID == self.PID || id.PID <= 0:
		return true
	}
	return syscall.Kill(id.PID, 0) == syscall.ESRCH
}
