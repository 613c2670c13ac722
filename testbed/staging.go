package testbed

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Staging is a T for staging code run outside `go test` (testbed/stage, which `make demo`
// runs): a failure ends the script with an error instead of failing a test. Cleanups run
// when the script ends, last first, as t.Cleanup's do.
type Staging struct {
	Log      io.Writer // Logf's output (os.Stderr when nil)
	cleanups []func()
	failed   bool
	tmp      []string
}

// errStagingFatal unwinds staging from Fatal/Fatalf to RunStaging.
var errStagingFatal = errors.New("staging failed")

// RunStaging runs fn with a Staging and returns its failure, if any; a panic that is not a
// failure goes on.
func RunStaging(log io.Writer, fn func(t *Staging)) (err error) {
	s := &Staging{Log: log}
	defer func() {
		for i := len(s.cleanups) - 1; i >= 0; i-- {
			s.cleanups[i]()
		}
		for _, d := range s.tmp {
			_ = os.RemoveAll(d)
		}
		if r := recover(); r != nil {
			if r != errStagingFatal {
				panic(r)
			}
			err = errStagingFatal
		}
		if err == nil && s.failed {
			err = errStagingFatal
		}
	}()
	fn(s)
	return nil
}

func (s *Staging) out() io.Writer {
	if s.Log == nil {
		return os.Stderr
	}
	return s.Log
}

func (s *Staging) Helper() {}

func (s *Staging) Fatal(args ...any) {
	fmt.Fprintln(s.out(), args...)
	s.failed = true
	panic(errStagingFatal)
}

func (s *Staging) Fatalf(format string, args ...any) {
	fmt.Fprintf(s.out(), format+"\n", args...)
	s.failed = true
	panic(errStagingFatal)
}

func (s *Staging) Errorf(format string, args ...any) {
	fmt.Fprintf(s.out(), format+"\n", args...)
	s.failed = true
}

func (s *Staging) Logf(format string, args ...any) { fmt.Fprintf(s.out(), format+"\n", args...) }

func (s *Staging) Cleanup(fn func()) { s.cleanups = append(s.cleanups, fn) }

func (s *Staging) Failed() bool { return s.failed }

func (s *Staging) TempDir() string {
	d, err := os.MkdirTemp("", "medic-stage")
	if err != nil {
		s.Fatal(err)
	}
	s.tmp = append(s.tmp, d)
	return d
}
