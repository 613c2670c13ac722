package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

// scanFinds runs `!recover scan` until the log shows every room forgotten.
func scanFinds(t *testing.T, cfg string, rooms ...id.RoomID) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"exec", "-c", cfg, "!recover scan --since 1h"}, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("scan: exit %d: %s %s", code, stdout.String(), stderr.String())
		}
		all := true
		for _, r := range rooms {
			all = all && strings.Contains(stdout.String(), r.String())
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scan never listed every room:\n%s", stdout.String())
		}
		time.Sleep(2 * time.Second)
	}
}

// synapseLogSince returns what Synapse logged from offset on.
func synapseLogSince(t *testing.T, h *testbed.Homeserver, offset int64) string {
	t.Helper()
	f, err := os.Open(h.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err = f.Seek(offset, 0); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

func logOffset(t *testing.T, h *testbed.Homeserver) int64 {
	t.Helper()
	st, err := os.Stat(h.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// logTime reads the timestamp Synapse's log line starts with (UTC on the testbed).
func logTime(line string) (time.Time, bool) {
	if len(line) < 23 {
		return time.Time{}, false
	}
	ts, err := time.Parse("2006-01-02 15:04:05,000", line[:23])
	return ts, err == nil
}

var processedJoin = regexp.MustCompile(`\{(@[^}]*)\} Processed request: ([0-9.]+)sec/.*"POST (/_(?:matrix/client/v3|synapse/admin/v1)/join/[^ ?"]*)`)

// joinRequest is one join request from Synapse's access log: who, into which room, when it
// started (the line is written when the request ends, with its duration).
type joinRequest struct {
	user    string
	room    string
	started time.Time
}

func joinRequests(log string) []joinRequest {
	var out []joinRequest
	for _, line := range strings.Split(log, "\n") {
		m := processedJoin.FindStringSubmatch(line)
		ts, ok := logTime(line)
		if m == nil || !ok {
			continue
		}
		secs, _ := strconv.ParseFloat(m[2], 64)
		path, _ := url.PathUnescape(m[3])
		out = append(out, joinRequest{user: m[1], room: path[strings.LastIndex(path, "/")+1:],
			started: ts.Add(-time.Duration(secs * float64(time.Second)))})
	}
	return out
}

// checkPartialStateOrder asserts, from Synapse's log since offset, that each room was
// partial-state after the first join (Synapse cleared the flag) and that no other join
// request into it started before Synapse cleared the flag.
func checkPartialStateOrder(t *testing.T, h *testbed.Homeserver, offset int64, rooms ...id.RoomID) {
	t.Helper()
	// Synapse's log handler buffers lines and flushes them every 5 s (PeriodicallyFlushing-
	// MemoryHandler): wait for every room's flag line, then for one more flush.
	var log string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		log = synapseLogSince(t, h, offset)
		all := true
		for _, room := range rooms {
			all = all && strings.Contains(log, "Clearing partial-state flag for "+room.String())
		}
		if all || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(6 * time.Second)
	log = synapseLogSince(t, h, offset)
	joins := joinRequests(log)
	for _, room := range rooms {
		var cleared time.Time
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "Clearing partial-state flag for "+room.String()) {
				cleared, _ = logTime(line)
			}
		}
		if cleared.IsZero() {
			t.Errorf("%s: Synapse never cleared a partial-state flag: the first join was not a partial-state join", room)
			continue
		}
		var before []string
		total := 0
		for _, j := range joins {
			if j.room != room.String() {
				continue
			}
			total++
			if j.started.Before(cleared) {
				before = append(before, j.user+" at "+j.started.Format("15:04:05.000"))
			}
		}
		if len(before) != 1 {
			t.Errorf("%s: %d join request(s) started before Synapse cleared the partial-state flag at %s (want only the first): %s",
				room, len(before), cleared.Format("15:04:05.000"), strings.Join(before[:min(len(before), 5)], ", "))
		}
		t.Logf("%s: partial-state flag cleared at %s; %d join requests in the log, %d before", room, cleared.Format("15:04:05.000"), total, len(before))
	}
}

// TestRecoverAtScale (issue 14): 200 local users of an invite-only and of a public room,
// forgotten after a restore of hs1's database. `!recover all` rejoins every one of them with
// no failure reported, in both join modes; each room's first join is a partial-state join,
// and no other join starts before Synapse has fetched the room's full state.
//
// First with login-as-user; then, after the backup is restored again, with medic's
// appservice installed in hs1 (join_as: auto picks it), where Synapse's log shows no
// login-as-user call; and once more with the appservice, medic killed mid-job: that leaves no
// token or record to clean up.
func TestRecoverAtScale(t *testing.T) {
	tb := testbed.Get(t)
	s := tb.StageForgotten(t, 200, true)
	dir := t.TempDir()
	cfg := tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
	scanFinds(t, cfg, s.Rooms()...)

	offset := logOffset(t, tb.HS1)
	var stdout, stderr bytes.Buffer
	code := run([]string{"exec", "-c", cfg, "--yes", "!recover all --since 1h"}, nil, &stdout, &stderr)
	out := stdout.String()
	t.Logf("recover all, login-as-user (exit %d):\n%s%s", code, out, stderr.String())
	if code != 0 {
		t.Errorf("recover all: exit %d", code)
	}
	if !strings.Contains(out, "login-as-user admin API") {
		t.Errorf("the plan does not say users are joined with login-as-user")
	}
	for _, r := range s.Rooms() {
		if n := s.Joined(t, tb, r); n != len(s.Users) {
			t.Errorf("%s: %d of %d users joined", r, n, len(s.Users))
		}
	}
	checkReportCounts(t, out, 2*len(s.Users))
	checkPartialStateOrder(t, tb.HS1, offset, s.Rooms()...)
	if t.Failed() {
		return
	}

	// The appservice: registration written by medic, installed in hs1, loaded by the restart
	// the restore makes.
	reg := filepath.Join(dir, "appservice.yaml")
	stdout.Reset()
	if code = run([]string{"appservice-registration", "-c", cfg, "-o", reg}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("appservice-registration: exit %d: %s", code, stderr.String())
	}
	tb.InstallAppservice(t, tb.HS1, reg)
	s.Restore(t, tb)
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = testbed.WriteConfig(t, dir, string(raw)+fmt.Sprintf("recover: {join_as: auto, appservice_registration: %q}\n", reg))
	scanFinds(t, cfg, s.Rooms()...)

	offset = logOffset(t, tb.HS1)
	stdout.Reset()
	code = run([]string{"exec", "-c", cfg, "--yes", "!recover all --since 1h"}, nil, &stdout, &stderr)
	out = stdout.String()
	t.Logf("recover all, appservice (exit %d):\n%s%s", code, out, stderr.String())
	if code != 0 {
		t.Errorf("recover all: exit %d", code)
	}
	if !strings.Contains(out, "as medic's appservice") {
		t.Errorf("the plan does not say users are joined through the appservice")
	}
	for _, r := range s.Rooms() {
		if n := s.Joined(t, tb, r); n != len(s.Users) {
			t.Errorf("%s: %d of %d users joined", r, n, len(s.Users))
		}
	}
	checkReportCounts(t, out, 2*len(s.Users))
	checkPartialStateOrder(t, tb.HS1, offset, s.Rooms()...) // waits for Synapse's log to be flushed
	if regexp.MustCompile(`/_synapse/admin/v1/users/[^/ ]+/login`).MatchString(synapseLogSince(t, tb.HS1, offset)) {
		t.Errorf("Synapse's log shows a login-as-user call during the appservice job")
	}

	// Killed mid-job (the first joins made, Synapse fetching the rooms' state): nothing is
	// left to clean up, and once Synapse has the state a second run finds everyone in.
	s.Restore(t, tb)
	scanFinds(t, cfg, s.Rooms()...)
	out = execKilledWhen(t, testbed.MedicBinary(t), cfg, "!recover all --since 1h", "waiting for Synapse to finish fetching the room's state")
	t.Logf("recover all, appservice, killed:\n%s", out)
	if n := tb.HS1.Count(t, `SELECT count(*) FROM access_tokens WHERE puppets_user_id IS NOT NULL`); n != 0 {
		t.Errorf("%d login-as-user tokens in Synapse after the kill", n)
	}
	if n := countRows(t, filepath.Join(dir, "data", "medic.db"), "minted_token"); n != 0 {
		t.Errorf("%d minted tokens recorded in medic's store after the kill", n)
	}
	// Synapse goes on fetching the state of a room whose first join medic made before it
	// died (the plan would drift if that finished between its proposal and its approval).
	tb.HS1.WaitFullState(t, s.Rooms()...)
	stdout.Reset()
	code = run([]string{"exec", "-c", cfg, "--yes", "!recover all --since 1h"}, nil, &stdout, &stderr)
	out = stdout.String()
	t.Logf("recover all, appservice, after the kill (exit %d):\n%s%s", code, out, stderr.String())
	if code != 0 || !strings.Contains(out, ", 0 failed") && !strings.Contains(out, "Nothing to rejoin") {
		t.Errorf("the second run did not finish without failure (exit %d)", code)
	}
	for _, r := range s.Rooms() {
		if n := s.Joined(t, tb, r); n != len(s.Users) {
			t.Errorf("after the kill: %s: %d of %d users joined", r, n, len(s.Users))
		}
	}
}

// execKilledWhen runs `medic exec --yes line` as its own process (with env added to its
// environment) and SIGKILLs it as soon as it prints marker. It returns what medic printed.
func execKilledWhen(t *testing.T, bin, cfg, line, marker string, env ...string) string {
	t.Helper()
	cmd := exec.Command(bin, "exec", "-c", cfg, "--yes", line)
	cmd.Env = append(os.Environ(), env...)
	var out testbed.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(3 * time.Minute); !strings.Contains(out.String(), marker); {
		select {
		case err := <-exited:
			t.Fatalf("medic exited (%v) before printing %q:\n%s", err, marker, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("medic never printed %q:\n%s", marker, out.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return out.String()
}

// countRows counts a table's rows in medic's SQLite store.
func countRows(t *testing.T, path, table string) (n int) {
	t.Helper()
	db, err := sql.Open("sqlite3-fk-wal", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err = db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var reportCounts = regexp.MustCompile(`Rejoined (\d+) user\(s\); (\d+) already joined by Synapse's resync of the room's state; (\d+) failed\.`)

var stepsDone = regexp.MustCompile(`(\d+) of (\d+) steps done, 0 failed`)

// checkReportCounts asserts the job's result and the report's counts: every step done, at
// least want of them (rooms an earlier test on the same servers left forgotten may add
// some), each user rejoined or joined by the resync, none failed; and that medic said it
// waited for the room's state.
func checkReportCounts(t *testing.T, out string, want int) {
	t.Helper()
	steps := stepsDone.FindStringSubmatch(out)
	if steps == nil || steps[1] != steps[2] {
		t.Errorf("the job did not finish every step without failure")
		return
	}
	total, _ := strconv.Atoi(steps[1])
	if total < want {
		t.Errorf("%d steps, want at least %d", total, want)
	}
	want = total
	m := reportCounts.FindStringSubmatch(out)
	if m == nil {
		t.Errorf("the report does not count rejoined / joined by resync / failed")
		return
	}
	rejoined, _ := strconv.Atoi(m[1])
	resynced, _ := strconv.Atoi(m[2])
	if rejoined+resynced != want || m[3] != "0" {
		t.Errorf("report: %s (want %d rejoined or joined by the resync, 0 failed)", m[0], want)
	}
	if !strings.Contains(out, "waiting for Synapse to finish fetching the room's state") {
		t.Errorf("medic never said it waited for the room's state")
	}
}

// withoutLoginAsUser is hs1 behind a reverse proxy that answers as a Synapse delegating
// authentication to MAS does: the login-as-user admin API is not there (404 M_UNRECOGNIZED,
// what Synapse answers for a route it did not register), and with metadata set, the auth
// metadata endpoint names an issuer.
func withoutLoginAsUser(t *testing.T, target string, metadata bool) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	loginAs := regexp.MustCompile(`^/_synapse/admin/v1/users/[^/]+/login$`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case loginAs.MatchString(r.URL.Path):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}`))
		case metadata && r.URL.Path == "/_matrix/client/v1/auth_metadata":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"issuer": "https://auth.example.org/", "authorization_endpoint": "https://auth.example.org/authorize"}`))
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRecoverWithoutLoginAsUser (issue 14): on a Synapse without login-as-user (MAS,
// simulated by a reverse proxy) and without medic's appservice, `!recover` answers once with
// the steps to set the appservice up, creates no job and fails no user; `!health medic`
// warns that medic can join no one.
func TestRecoverWithoutLoginAsUser(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	alice := tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false)
	dump := filepath.Join(t.TempDir(), "hs1.dump")
	tb.Dump(t, tb.HS1, dump)
	remote := tb.Admin(t, tb.HS2)
	room, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "mas"})
	if err != nil {
		t.Fatal(err)
	}
	testbed.JoinVia(t, alice, room.RoomID, tb.HS2.Name)
	tb.Restore(t, tb.HS1, dump)

	for _, metadata := range []bool{true, false} {
		dir := t.TempDir()
		cfg := tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
		testbed.ReplaceInConfig(t, cfg, fmt.Sprintf("url: %q", tb.HS1.URL), fmt.Sprintf("url: %q", withoutLoginAsUser(t, tb.HS1.URL, metadata)))
		var stdout, stderr bytes.Buffer
		code := run([]string{"exec", "-c", cfg, "--yes", "!recover room " + room.RoomID.String() + " via " + tb.HS2.Name}, nil, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		t.Logf("auth metadata %v: exit %d:\n%s", metadata, code, out)
		if code == 0 || strings.Count(out, "medic cannot act as local users") != 1 || !strings.Contains(out, "app_service_config_files") ||
			!strings.Contains(out, "medic appservice-registration") {
			t.Errorf("no single answer with the appservice steps")
		}
		if metadata && !strings.Contains(out, "MAS") {
			t.Errorf("the answer does not say Synapse delegates authentication to MAS")
		}
		if strings.Contains(out, "Job `") || strings.Contains(out, "failed:") {
			t.Errorf("a job ran or users failed one by one")
		}
		stdout.Reset()
		run([]string{"exec", "-c", cfg, "!health medic"}, nil, &stdout, &stderr)
		if !strings.Contains(stdout.String(), "neither the appservice nor login-as-user works") {
			t.Errorf("!health medic does not warn that no join method works:\n%s", stdout.String())
		}
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND membership = 'join'`, room.RoomID); n != 0 {
		t.Errorf("%d local users joined", n)
	}
	// Straight to Synapse, login-as-user works: the check says so, without a warning.
	var stdout, stderr bytes.Buffer
	run([]string{"exec", "-c", tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword), "!health medic"}, nil, &stdout, &stderr)
	if line := lineWith(stdout.String(), "!recover joins users with"); !strings.Contains(line, "login-as-user") || strings.Contains(stdout.String(), "can join no local user") {
		t.Errorf("!health medic does not say login-as-user works:\n%s", stdout.String())
	}
}

// TestAppserviceRegistrationCommand: `medic appservice-registration` writes a private file
// (or prints), says what to do next, and never overwrites a registration Synapse may have
// loaded.
func TestAppserviceRegistrationCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := testbed.WriteConfig(t, dir, "homeserver: {url: \"http://127.0.0.1:1\", server_name: \"example.org\"}\n"+
		"bot: {user_id: \"@medic:example.org\", password: \"x\"}\nadmins: [\"@admin:example.org\"]\n")
	reg := filepath.Join(dir, "reg.yaml")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"appservice-registration", "-c", cfg, "-o", reg}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	st, err := os.Stat(reg)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("registration file: %v, mode %v", err, st.Mode())
	}
	if !strings.Contains(stdout.String(), "app_service_config_files") || !strings.Contains(stdout.String(), "restart Synapse") {
		t.Errorf("no next steps:\n%s", stdout.String())
	}
	first, _ := os.ReadFile(reg)
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"appservice-registration", "-c", cfg, "-o", reg}, nil, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "does not overwrite") {
		t.Errorf("overwrote: exit %d: %s", code, stderr.String())
	}
	if again, _ := os.ReadFile(reg); !bytes.Equal(first, again) {
		t.Errorf("the registration changed")
	}
	stdout.Reset()
	if code := run([]string{"appservice-registration", "-c", cfg}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "as_token:") ||
		bytes.Contains(first, []byte(strings.TrimSpace(lineWith(stdout.String(), "as_token:")))) {
		t.Errorf("printing a fresh registration: exit %d\n%s", code, stdout.String())
	}
}
