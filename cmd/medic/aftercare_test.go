package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/testbed"
)

// logSince returns what Synapse wrote to its log after offset bytes.
func logSince(t *testing.T, h *testbed.Homeserver, offset int64) string {
	t.Helper()
	raw, err := os.ReadFile(h.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(raw)) < offset {
		return string(raw)
	}
	return string(raw[offset:])
}

func logSize(h *testbed.Homeserver) int64 {
	fi, err := os.Stat(h.LogPath())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestAftercareOffline stages on hs1 (Synapse stopped) what a restore leaves behind: a
// stream sequence behind stream_positions, another behind its table, a table and a
// function owned by another role, one-time keys already handed out, a remote user's device
// list cached, a server in backoff. Synapse refuses to start (its log says why); `medic exec
// --yes aftercare` repairs each and starts it; `!undo` of the job restores the rows it changed.
func TestAftercareOffline(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	h := tb.HS1
	alice := tb.Register(t, h, testbed.UniqueName("alice"), false)
	keys := map[id.KeyID]mautrix.OneTimeKey{}
	for i := range 5 {
		keys[id.NewKeyID(id.KeyAlgorithmSignedCurve25519, fmt.Sprintf("AAAAA%d", i))] = mautrix.OneTimeKey{Key: id.Curve25519(fmt.Sprintf("key%dkey%dkey%d", i, i, i)),
			Signatures: signatures.Signatures{alice.UserID: {id.NewKeyID(id.KeyAlgorithmEd25519, alice.DeviceID.String()): "unchecked"}}}
	}
	if _, err := alice.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: keys}); err != nil {
		t.Fatal(err)
	}
	otks := h.Count(t, `SELECT count(*) FROM e2e_one_time_keys_json`)
	if otks < 5 {
		t.Fatalf("%d one-time keys after the upload", otks)
	}
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "before the backup"}); err != nil {
		t.Fatal(err)
	}
	remote := "@" + testbed.UniqueName("bob") + ":" + tb.HS2.Name
	dead := testbed.UniqueName("gone") + ".invalid"
	role := "medic_restorer"

	tb.Stop(t, h)
	// The restore's leftovers. A sequence behind its stream's stream_positions entry (above
	// its tables: ids allocated whose rows are gone) stops Synapse, which moves a sequence
	// only up to its tables; one behind its table only (state groups: no stream) it moves
	// itself, and the aftercare too.
	position := h.Count(t, `SELECT max(stream_id) FROM device_lists_stream`) + 100
	h.Exec(t, `INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ('device_lists_stream', 'master', $1)
		ON CONFLICT (stream_name, instance_name) DO UPDATE SET stream_id = $1`, position)
	h.Exec(t, `SELECT setval('device_lists_sequence', 1)`)
	// Whatever happens below, the server must start again when the test ends (its cleanup).
	t.Cleanup(func() {
		h.Exec(t, `SELECT setval('device_lists_sequence', GREATEST($1, (SELECT last_value FROM device_lists_sequence)))`, position)
	})
	h.Exec(t, fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s NOLOGIN; END IF; END$$`, role, role))
	h.Exec(t, `ALTER TABLE room_tags OWNER TO `+role)
	h.Exec(t, `CREATE OR REPLACE FUNCTION medic_restored_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'`)
	h.Exec(t, `ALTER FUNCTION medic_restored_fn() OWNER TO `+role)
	t.Cleanup(func() {
		h.Exec(t, `ALTER TABLE room_tags OWNER TO synapse`)
		h.Exec(t, `DROP FUNCTION IF EXISTS medic_restored_fn()`)
	})
	h.Exec(t, `INSERT INTO device_lists_remote_extremeties (user_id, stream_id) VALUES ($1, '12')`, remote)
	now := time.Now().UnixMilli()
	h.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $3)`, dead, now, now-3600_000)

	// Without the aftercare Synapse does not start, and says why.
	offset := logSize(h)
	if out, err := exec.Command(testbed.Script(), "start", fmt.Sprint(h.N)).CombinedOutput(); err == nil {
		t.Fatalf("Synapse started on the restored database:\n%s", out)
	}
	if log := logSince(t, h, offset); !strings.Contains(log, "IncorrectDatabaseSetup") ||
		!strings.Contains(log, "Postgres sequence 'device_lists_sequence' is inconsistent with associated stream position") {
		t.Fatalf("Synapse's log does not show IncorrectDatabaseSetup for device_lists_sequence:\n%s", log)
	}

	// Behind its table only: Synapse would move it itself (staged after the failed start,
	// which already did so for every sequence it checked).
	h.Exec(t, `SELECT setval('state_group_id_seq', 1)`)

	cfg := tb.MedicConfig(t, t.TempDir(), h.UserID("medic"), tb.MedicPassword)
	offset = logSize(h)
	var stdout, stderr bytes.Buffer
	code := run([]string{"exec", "-c", cfg, "--yes", "aftercare"}, nil, &stdout, &stderr)
	out := stdout.String()
	t.Logf("aftercare:\n%s%s", out, stderr.String())
	if code != 0 {
		t.Errorf("aftercare exit %d", code) // the checks below say what is left undone
	}
	m := jobIDPattern.FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no plan in the output")
	}
	job := m[1]
	for _, want := range []string{"stream sequence(s) behind", "`device_lists_sequence` ", "`state_group_id_seq` 1 →", "stop Synapse at start-up", "The database ends at"} {
		if !strings.Contains(out, want) {
			t.Errorf("the plan does not say %q", want)
		}
	}

	// (a) sequences: Synapse started, nothing in its log about them.
	if log := logSince(t, h, offset); strings.Contains(log, "IncorrectDatabaseSetup") || strings.Contains(log, "is behind table") {
		t.Errorf("Synapse's log after the aftercare still complains about sequences:\n%s", log)
	}
	if resp, err := http.Get(h.URL + "/_matrix/client/versions"); err != nil {
		t.Errorf("Synapse does not answer after the aftercare: %v", err)
	} else {
		resp.Body.Close()
	}
	if n := h.Count(t, `SELECT (last_value >= $1)::int FROM device_lists_sequence`, position); n != 1 {
		t.Errorf("device_lists_sequence is still behind stream_positions")
	}
	// (b) owners.
	if n := h.Count(t, `SELECT count(*) FROM pg_class WHERE relname = 'room_tags' AND pg_get_userbyid(relowner) = 'synapse'`); n != 1 {
		t.Errorf("room_tags is not owned by synapse")
	}
	if n := h.Count(t, `SELECT count(*) FROM pg_proc WHERE proname = 'medic_restored_fn' AND pg_get_userbyid(proowner) = 'synapse'`); n != 1 {
		t.Errorf("medic_restored_fn is not owned by synapse")
	}
	// (d) one-time keys, with the devices counted.
	if n := h.Count(t, `SELECT count(*) FROM e2e_one_time_keys_json`); n != 0 {
		t.Errorf("%d one-time keys left", n)
	}
	if !strings.Contains(out, fmt.Sprintf("%d one-time key(s) of", otks)) {
		t.Errorf("the plan does not count the %d one-time keys", otks)
	}
	// (e) the remote user's device list is marked for resync (Synapse may have resynced it
	// already: then its resync queue row is gone again; the report says it was marked).
	if n := h.Count(t, `SELECT count(*) FROM medic.journal WHERE job_id = $1 AND tbl = 'device_lists_remote_resync' AND key->'user_id' ? $2`, job, remote); n != 1 {
		t.Errorf("%s's device list was not marked for resync (journal entries: %d)", remote, n)
	}
	// (f) backoff.
	if n := h.Count(t, `SELECT count(*) FROM destinations WHERE destination = $1 AND failure_ts IS NULL AND retry_last_ts = 0 AND retry_interval = 0`, dead); n != 1 {
		t.Errorf("the backoff from %s was not cleared", dead)
	}

	// While Synapse runs, the offline part refuses.
	stdout.Reset()
	stderr.Reset()
	if code = run([]string{"exec", "-c", cfg, "--yes", "aftercare --offline"}, nil, &stdout, &stderr); code == 0 ||
		!strings.Contains(stdout.String(), "needs Synapse stopped") {
		t.Errorf("the offline part did not refuse while Synapse runs (exit %d):\n%s", code, stdout.String())
	}

	// Undo puts back the rows: the keys and the retry timings.
	stdout.Reset()
	stderr.Reset()
	if code = run([]string{"exec", "-c", cfg, "--yes", "undo " + job}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("undo exit %d:\n%s%s", code, stdout.String(), stderr.String())
	}
	if n := h.Count(t, `SELECT count(*) FROM e2e_one_time_keys_json`); n != otks {
		t.Errorf("%d one-time keys after the undo, want %d", n, otks)
	}
	if n := h.Count(t, `SELECT count(*) FROM destinations WHERE destination = $1 AND failure_ts = $2 AND retry_last_ts = $3 AND retry_interval = 600000`, dead, now-3600_000, now); n != 1 {
		t.Errorf("the retry timings of %s were not restored", dead)
	}
}

// TestAftercareCollation: a database whose collation is not C gets the dump/restore recipe,
// and no step pretends to fix it in place.
func TestAftercareCollation(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	dsn := testbed.ScratchDB(t, tb.HS1)
	db, err := synapse.OpenDB(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	loc, err := db.DatabaseLocale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if loc.Collate == "C" {
		t.Skip("the cluster's default collation is C: a scratch database cannot show the hazard")
	}
	plan, err := (&recovery.Aftercare{DB: db}).Operation().Plan(ctx, recovery.AftercareArgs{})
	if err != nil {
		t.Fatal(err)
	}
	text := plan.Nothing + strings.Join(plan.Risks, " ")
	for _, want := range []string{"not C", "No in-place fix exists", "createdb --encoding=UTF8 --locale=C --template=template0", "pg_restore --no-owner"} {
		if !strings.Contains(text, want) {
			t.Errorf("the plan does not say %q:\n%s", want, text)
		}
	}
	if len(plan.Steps) != 0 {
		t.Errorf("steps for a collation that cannot be fixed in place: %v", plan.Steps)
	}
}

// TestAftercareAfterRestore is the seed-1 story: alice@hs1 in a room of hs2's, with one
// device (matrix-js-sdk with its Rust crypto, as Element) open through all of it, in an
// encrypted DM with bob@hs2; a backup; a room joined after it and an encrypted DM opened by
// carol@hs2, which hands out one of alice's one-time keys; the restore done by an admin as
// postgres (pg_restore --no-owner: every object now the postgres role's), which brings that
// key back. Synapse starts on it and misbehaves (it drops hs2's traffic for the room it
// forgot). With Synapse stopped, `medic exec --yes aftercare` gives the objects back,
// deletes the one-time keys and starts Synapse; run again while Synapse runs, it does the
// online part: the forgotten room is rejoined, and the restore check is ok. Then dave@hs2
// opens an encrypted DM with alice: her device, the one from before the backup, whose sync
// token is ahead of the restored streams, decrypts it and answers.
func TestAftercareAfterRestore(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	h := tb.HS1
	remote := tb.Admin(t, tb.HS2)
	alice := tb.Register(t, h, testbed.UniqueName("alice"), false)
	device, echo := startEcho(t, h, alice.UserID, tb.UserPassword)
	dm := func(name, body string) id.RoomID {
		t.Helper()
		sender := tb.Register(t, tb.HS2, testbed.UniqueName(name), false)
		return encryptedRoundTrip(t, device, tb.HS2, alice.UserID, sender.UserID, tb.UserPassword, body)
	}
	dm("bob", "before the backup")
	before, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "before the backup"})
	if err != nil {
		t.Fatal(err)
	}
	testbed.JoinVia(t, alice, before.RoomID, tb.HS2.Name)
	keys := func() int {
		return h.Count(t, `SELECT count(*) FROM e2e_one_time_keys_json WHERE user_id = $1`, alice.UserID)
	}
	dump := t.TempDir() + "/hs.dump"
	tb.Dump(t, h, dump)
	keysAtBackup := keys()
	after, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "after the backup"})
	if err != nil {
		t.Fatal(err)
	}
	testbed.JoinVia(t, alice, after.RoomID, tb.HS2.Name)
	// carol's client claims one of alice's one-time keys; alice's device uses it up. No
	// traffic comes for carol's DM after the restore: only the access log's join shows it.
	carolDM := dm("carol", "after the backup")
	send := func(room id.RoomID, body string) {
		t.Helper()
		if _, err := remote.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	send(after.RoomID, "said after the backup")
	// More traffic after the backup that alice's device sees (and answers): its sync token
	// runs well ahead of what the restored database will hold.
	for i := range 12 {
		send(after.RoomID, fmt.Sprintf("more after the backup %d", i))
	}
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(device.String(), "more after the backup 11"); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("alice's device did not see the traffic after the backup:\n%s", lastLines(device.String(), 20))
		}
	}
	// Her phone is off from here until dave's invite has reached the server: its next sync
	// carries the token from before the restore (as any client offline over a restore).
	if err := echo.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = echo.Process.Signal(syscall.SIGCONT) }()

	// The restore, as an admin in a hurry does it: as postgres, without --role.
	tb.Stop(t, h)
	tb.Run(t, "recreatedb", fmt.Sprint(h.N))
	u, err := url.Parse(h.DSN)
	if err != nil {
		t.Fatal(err)
	}
	restore := exec.Command("su", "postgres", "-c", "pg_restore --no-owner -d "+strings.TrimPrefix(u.Path, "/"))
	if restore.Stdin, err = os.Open(dump); err != nil {
		t.Fatal(err)
	}
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("pg_restore as postgres: %v\n%s", err, out)
	}
	if n := h.Count(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = 'postgres'`); n < 100 {
		t.Fatalf("only %d tables owned by postgres after the restore", n)
	}
	// The key carol's client claimed is back, ready to be handed out again.
	if n := keys(); n != keysAtBackup {
		t.Errorf("%d one-time keys of alice after the restore, %d at the backup", n, keysAtBackup)
	}

	// Synapse starts (its role is a superuser on the testbed) and misbehaves: hs2's traffic
	// for the room joined after the backup is dropped.
	offset := logSize(h)
	tb.Start(t, h)
	send(after.RoomID, "anyone there?")
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(logSince(t, h, offset), "Ignoring PDU for unknown room_id: "+after.RoomID.String()); {
		if time.Now().After(deadline) {
			t.Fatalf("hs1 did not drop hs2's traffic for %s", after.RoomID)
		}
		time.Sleep(time.Second)
	}
	tb.Run(t, "stop", fmt.Sprint(h.N))

	cfg := tb.MedicConfig(t, t.TempDir(), h.UserID("medic"), tb.MedicPassword)
	var stdout, stderr bytes.Buffer
	code := run([]string{"exec", "-c", cfg, "--yes", "aftercare"}, nil, &stdout, &stderr)
	out := stdout.String()
	t.Logf("offline aftercare:\n%s", abridge(out))
	if code != 0 {
		t.Fatalf("offline aftercare: exit %d\n%s", code, stderr.String())
	}
	for _, want := range []string{"owned by other roles (`postgres`) given to `synapse`", "transaction(s) with", "from 1 server(s) (`" + tb.HS2.Name + "`)",
		"`events_stream_seq`", "behind positions clients already hold"} {
		if !strings.Contains(out, want) {
			t.Errorf("the offline plan does not say %q", want)
		}
	}
	if n := h.Count(t, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> 'synapse'`); n != 0 {
		t.Errorf("%d relations still owned by another role", n)
	}
	afterOffline := logSize(h)

	stdout.Reset()
	stderr.Reset()
	code = run([]string{"exec", "-c", cfg, "--yes", "aftercare"}, nil, &stdout, &stderr)
	out = stdout.String()
	t.Logf("online aftercare:\n%s", abridge(out))
	if code != 0 {
		t.Errorf("online aftercare: exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(out, "Synapse is running") || !strings.Contains(out, "online part") {
		t.Errorf("the second run is not the online part")
	}
	// The report comes after the rejoin: every check this story touches is green (the
	// forgotten room included). Checks of other tests' staged damage on the shared
	// testbed (a rejection chain left for !unreject, say) are theirs, not the restore's.
	if !strings.Contains(out, "Health of ") {
		t.Errorf("the online part ends with no health report")
	}
	for _, check := range []string{"Synapse", "Synapse's database", "Federation self-test", "Failing destinations", "Forgotten rooms", "Partial joins", "After-restore hazards"} {
		if st := reportStatus(out, check); st != "OK" {
			stdout.Reset()
			run([]string{"exec", "-c", cfg, "health forgotten"}, nil, &stdout, &stderr)
			t.Errorf("the online part's health report: %q is %q, not OK; the forgotten rooms:\n%s", check, st, stdout.String())
		}
	}
	if strings.Contains(out, " CRITICAL ") || strings.Contains(out, " WARN ") {
		t.Logf("checks outside the restore story are not all green (other tests' staged damage on this testbed)")
	}
	for _, room := range []id.RoomID{after.RoomID, carolDM} {
		if n := h.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = $2 AND membership = 'join'`,
			room, alice.UserID); n != 1 {
			t.Errorf("alice is not back in %s, joined after the backup", room)
		}
	}
	stdout.Reset()
	if code = run([]string{"exec", "-c", cfg, "health restore"}, nil, &stdout, &stderr); code != 0 {
		t.Errorf("the restore check after the aftercare: exit %d\n%s", code, stdout.String())
	}

	// An encrypted message sent after the aftercare decrypts on alice's device from before
	// the backup: a fresh one-time key (the restored ones are gone), and a sync that delivers
	// the invite and the room key although the device's token was ahead of the restored
	// streams: the aftercare moved them past it, so Synapse has no token to bound (were it
	// to, what arrived before the device's sync would be behind the bound and never shown).
	defer func() {
		if bounded := strings.Count(logSince(t, h, afterOffline), "Bounding token from the future"); bounded > 0 {
			t.Errorf("Synapse bounded %d sync token(s) from the future after the aftercare: a client was ahead of the streams", bounded)
		}
	}()
	// dave's invite reaches the server before alice's device syncs again: it must still be
	// shown to her (Synapse gives it a stream position; a client whose token is past that
	// position never sees it).
	invited := make(chan struct{})
	go func() {
		defer close(invited)
		db, err := synapse.OpenDB(ctx, h.DSN)
		if err != nil {
			return
		}
		defer db.Close()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			var n int
			if db.Pool.QueryRow(ctx, `SELECT count(*) FROM local_current_membership WHERE user_id = $1 AND membership = 'invite'`, alice.UserID).Scan(&n) == nil && n > 0 {
				return
			}
		}
	}()
	go func() {
		<-invited
		_ = echo.Process.Signal(syscall.SIGCONT)
	}()
	dm("dave", "sent after the aftercare")
	if strings.Contains(device.String(), "could not decrypt") {
		t.Errorf("alice's device failed to decrypt a message:\n%s", lastLines(device.String(), 40))
	}
}

// reportStatus is the status a health report gives the check titled title (its line reads
// "🟢 <title>   OK   <summary>"), "" if the report has no such line.
func reportStatus(report, title string) string {
	re := regexp.MustCompile(`(?m)^\S+ ` + regexp.QuoteMeta(title) + `\s+(OK|WARN|CRITICAL|SKIPPED)\s`)
	if m := re.FindStringSubmatch(report); m != nil {
		return m[1]
	}
	return ""
}

// abridge cuts a command's output's long lines (the owners of 200 objects), so that a
// failing test's own messages stay in what CI shows of its log.
func abridge(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + fmt.Sprintf(" … (%d bytes)", len(l))
		}
	}
	return strings.Join(lines, "\n")
}

// lastLines is the end of a client's log: what went wrong last, short enough to stay in
// what CI shows of a failing run.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… %d line(s) before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return abridge(strings.Join(lines, "\n"))
}

// jsClient is the Element-like test client (e2e/jsclient/roundtrip.mjs), installed on first use.
func jsClient(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "e2e", "jsclient")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		if out, err := exec.Command("npm", "ci", "--prefix", dir, "--no-audit", "--no-fund").CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	return filepath.Join(dir, "roundtrip.mjs")
}

// startEcho logs user in on hs with a new device that stays open for the rest of the test,
// as Element does (echo mode: it joins the rooms it is invited to and answers every message
// it could decrypt). The returned buffer is its log.
func startEcho(t *testing.T, hs *testbed.Homeserver, user id.UserID, password string) (*testbed.Buffer, *exec.Cmd) {
	t.Helper()
	echoLog := &testbed.Buffer{}
	echo := exec.Command("node", jsClient(t), "--hs", hs.URL, "--user", user.String(), "--password", password, "--echo", "--timeout", "1800")
	echo.Stderr = echoLog
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Process.Kill(); _ = echo.Wait() })
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(echoLog.String(), "initial sync done"); {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver's client did not sync:\n%s", echoLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return echoLog, echo
}

// encryptedRoundTrip has sender, on senderHS, invite receiver (whose client runs in echo
// mode, logging to echoLog) to an encrypted DM, send body and wait for the echo. It fails
// the test unless both directions decrypted.
func encryptedRoundTrip(t *testing.T, echoLog *testbed.Buffer, senderHS *testbed.Homeserver, receiver, sender id.UserID, password, body string) id.RoomID {
	t.Helper()
	cmd := exec.Command("node", jsClient(t), "--hs", senderHS.URL, "--user", sender.String(), "--password", password,
		"--invite", receiver.String(), "--send", body, "--expect-from", receiver.String(), "--timeout", "90")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("receiver's log (tail): %s\nsender's log (tail): %s\nsender's client: %v\nstdout: %s", lastLines(echoLog.String(), 30), lastLines(stderr.String(), 30), err, out)
	}
	var res struct {
		RoomID            id.RoomID `json:"room_id"`
		ReplyBody         string    `json:"reply_body"`
		ReplyWasEncrypted bool      `json:"reply_was_encrypted"`
		DecryptionFailed  bool      `json:"reply_decryption_failed"`
	}
	if err = json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("sender's client output %q: %v", out, err)
	}
	if !res.ReplyWasEncrypted || res.DecryptionFailed || res.ReplyBody != "echo: "+body {
		t.Errorf("round trip: encrypted=%v decryption failed=%v reply %q\nreceiver: %s", res.ReplyWasEncrypted, res.DecryptionFailed, res.ReplyBody, echoLog.String())
	}
	return res.RoomID
}

// TestAftercareOwnersNeedSuperuser: when the role medic (and Synapse) connect as is no
// superuser, objects another role owns can be neither used nor taken over by it. The aftercare
// refuses with the statement a superuser must run; that statement works, and then the plan
// goes on.
func TestAftercareOwnersNeedSuperuser(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	role := "medic_aftercare_plain"
	tb.HS1.Exec(t, fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN NOSUPERUSER PASSWORD 'plain'; END IF; END$$`, role, role))
	// Registered first, so it runs after the scratch database is gone.
	t.Cleanup(func() { tb.HS1.Exec(t, `DROP ROLE IF EXISTS `+role) })
	// The scratch database's objects are the synapse role's.
	dsn := testbed.ScratchDB(t, tb.HS1)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	asOwner := u.String()
	u.User = url.UserPassword(role, "plain")
	db, err := synapse.OpenDB(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	op := (&recovery.Aftercare{DB: db}).Operation()
	_, err = op.Plan(ctx, recovery.AftercareArgs{})
	if err == nil || !strings.Contains(err.Error(), "may not take over") || !strings.Contains(err.Error(), "DO $$") {
		t.Fatalf("plan as a role that may not take the objects over: %v", err)
	}
	script := synapse.TakeOverScript(role)
	if !strings.Contains(err.Error(), script) {
		t.Fatalf("the refusal does not give the statement to run: %v", err)
	}
	owner, err := synapse.OpenDB(ctx, asOwner) // a superuser on the testbed
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err = owner.Pool.Exec(ctx, script); err != nil {
		t.Fatalf("the statement given to run as a superuser: %v", err)
	}
	if _, err = op.Plan(ctx, recovery.AftercareArgs{}); err != nil {
		t.Errorf("plan after the superuser's statement: %v", err)
	}
}
