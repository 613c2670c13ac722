package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// binary is one of the project's commands as the tests build it.
type binary struct {
	pkg  string   // the package, relative to the repository root
	tags string   // build tags
	env  []string // environment beyond the caller's, e.g. GOEXPERIMENT
}

var (
	// medicBinary is medic as the Makefile builds it (goolm: pure-Go Olm), plus medictest:
	// the test hooks the production binary lacks (journal.HoldPointEnv).
	medicBinary = binary{pkg: "./cmd/medic", tags: "goolm,medictest"}
	// The commands that need mautrix-go's federation/pdu, which needs GOEXPERIMENT=jsonv2 (and
	// medic must not have it: see the Makefile).
	authCheckerBinary = binary{pkg: "./cmd/medic-authcheck", env: []string{"GOEXPERIMENT=jsonv2"}}
	craftEventBinary  = binary{pkg: "./testbed/craftevent", env: []string{"GOEXPERIMENT=jsonv2"}}
)

// MedicBinary returns medic, built with the test hooks (see medicBinary).
func MedicBinary(t T) string { return build(t, medicBinary) }

// AuthChecker returns medic-authcheck, built as the Makefile builds it.
func AuthChecker(t T) string { return build(t, authCheckerBinary) }

// CraftEventBinary returns the craftevent tool (see testbed/craftevent), for streaming many
// templates through it.
func CraftEventBinary(t T) string { return build(t, craftEventBinary) }

var builds sync.Map // binary → *built

type built struct {
	once sync.Once
	path string
	err  error
}

// build builds b once per test process and returns the binary's path. The flags are b's
// alone: the caller's GOFLAGS and GOEXPERIMENT do not leak in.
func build(t T, b binary) string {
	t.Helper()
	v, _ := builds.LoadOrStore(b.pkg, &built{})
	bb := v.(*built)
	bb.once.Do(func() {
		dir, err := os.MkdirTemp("", "medic-test-bin")
		if err != nil {
			bb.err = err
			return
		}
		bb.path = filepath.Join(dir, filepath.Base(b.pkg))
		args := []string{"build", "-o", bb.path}
		if b.tags != "" {
			args = append(args, "-tags", b.tags)
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Dir = filepath.Join(filepath.Dir(Script()), "..")
		// The last value of a variable wins.
		cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOEXPERIMENT="), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			bb.err = fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
		}
	})
	if bb.err != nil {
		t.Fatal(bb.err)
	}
	return bb.path
}
