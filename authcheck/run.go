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

	"github.com/tidwall/gjson"
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
			var line []byte
			err = feed(func(in Input) error {
				line, err = appendInput(line[:0], in)
				if err == nil {
					_, err = w.Write(line)
				}
				return err
			})
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

// appendInput appends in as one JSON line, the event's JSON as it is. Encoding an Input with
// encoding/json would check and compact each event's JSON again: for a 100k-event chain that
// was a fifth of medic's CPU while the checker waits. Synapse writes event_json compact, and
// gjson checks it is JSON (faster than encoding/json's scanner), so nothing can end the
// value early and slip fields into the line.
func appendInput(b []byte, in Input) ([]byte, error) {
	if len(in.Event) == 0 {
		in.Event = json.RawMessage("null") // as encoding/json writes it: the checker reports a parse failure
	}
	if !gjson.ValidBytes(in.Event) {
		return b, fmt.Errorf("event %s: its JSON is not valid", in.EventID)
	}
	id, err := json.Marshal(in.EventID)
	if err != nil {
		return b, err
	}
	b = append(b, `{"event_id":`...)
	b = append(b, id...)
	b = append(b, `,"event":`...)
	b = append(b, in.Event...)
	for _, f := range []struct {
		set  bool
		name string
	}{{in.Rejected, "rejected"}, {in.Check, "check"}, {in.Force, "force"}} {
		if f.set {
			b = append(b, `,"`+f.name+`":true`...)
		}
	}
	return append(b, "}\n"...), nil
}
