package authcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binary is the checker's file name.
const Binary = "medic-authcheck"

// Find returns the checker to run: the configured path, else medic-authcheck next to medic's
// own executable, else in $PATH.
func Find(configured string) (string, error) {
	if configured != "" {
		if _, err := os.Stat(configured); err != nil {
			return "", fmt.Errorf("auth checker %s: %w", configured, err)
		}
		return configured, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), Binary)
		if _, err = os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(Binary)
	if err != nil {
		return "", fmt.Errorf("%s not found next to medic or in $PATH (build it with `make build`, or set unreject.auth_checker)", Binary)
	}
	return p, nil
}

// Run checks events in the checker at path. feed sends the inputs in order (it runs in its
// own goroutine); onVerdict gets each verdict in order.
func Run(ctx context.Context, path string, hdr Header, feed func(send func(Input) error) error, onVerdict func(Verdict) error) error {
	cmd := exec.CommandContext(ctx, path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err = cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	feedErr := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(stdin, 1<<20)
		enc := json.NewEncoder(w)
		err := enc.Encode(hdr)
		if err == nil {
			err = feed(func(in Input) error { return enc.Encode(in) })
		}
		if err == nil {
			err = w.Flush()
		}
		_ = stdin.Close()
		feedErr <- err
	}()
	dec := json.NewDecoder(bufio.NewReaderSize(stdout, 1<<20))
	var verdictErr error
	for {
		var v Verdict
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			verdictErr = fmt.Errorf("read verdict: %w", err)
			break
		}
		if err := onVerdict(v); err != nil {
			verdictErr = err
			break
		}
	}
	if verdictErr != nil {
		_ = cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	if err := <-feedErr; err != nil && verdictErr == nil && waitErr == nil {
		return fmt.Errorf("send events to the auth checker: %w", err)
	}
	if verdictErr != nil {
		return verdictErr
	}
	if waitErr != nil {
		return fmt.Errorf("auth checker: %w: %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	return nil
}
