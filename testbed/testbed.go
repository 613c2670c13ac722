// Package testbed gives Go tests two real, federating Synapse homeservers on PostgreSQL
// (hs1.test:8481 and hs2.test:8482, TLS federation on loopback), brought up by testbed.sh.
//
// Use it from a package's TestMain:
//
//	func TestMain(m *testing.M) { testbed.Main(m) }
//
// If the environment already describes a running testbed (the test script brings one up for
// the whole run and exports MEDIC_TESTBED_*), Main uses it; otherwise it brings one up for
// this package and stops it at the end. Tests that stop or damage a homeserver must put it
// back (see Homeserver.Stop and t.Cleanup) because the homeservers are shared.
package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"
)

// Homeserver is one testbed Synapse.
type Homeserver struct {
	N    int
	Name string // server name, e.g. hs1.test:8481
	URL  string // client/admin API, plain HTTP on loopback
	DSN  string // its PostgreSQL database
	Dir  string // config directory on the host (inside the chroot)
	// SQLite is the database file of a homeserver on SQLite (hs3); DSN is empty then.
	SQLite string
}

// Testbed is the running pair.
type Testbed struct {
	HS1, HS2      *Homeserver
	SharedSecret  string
	AdminPassword string
	MedicPassword string
	UserPassword  string
	script        string
	vars          map[string]string
}

var (
	current *Testbed
	once    sync.Once
)

// Script is the path of testbed.sh.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testbed.sh")
}

// Main runs the package's tests against the testbed.
func Main(m *testing.M) {
	lockTestbed()
	// Whoever brings the testbed up under the lock takes it down again. An environment that
	// names a testbed is trusted only while both servers answer: another package run may have
	// taken its own testbed down since.
	ownUp := !answers(os.Getenv("MEDIC_TESTBED_HS1_URL")) || !answers(os.Getenv("MEDIC_TESTBED_HS2_URL"))
	if n := os.Getenv("MEDIC_TESTBED_HS1_N"); ownUp && n != "" && n != "1" {
		// The environment names a private pair (testbed.sh fresh) that is down: bringing up
		// and later taking down the shared hs1/hs2 instead would pull them from under
		// whoever else uses them.
		fmt.Fprintf(os.Stderr, "testbed: the private pair named by the environment (hs%s) does not answer; start it again (testbed.sh start %s) instead of falling back to hs1/hs2\n", n, n)
		os.Exit(1)
	}
	if ownUp {
		out, err := script("up").Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "testbed up failed: %v\n", err)
			if ee, ok := err.(*exec.ExitError); ok {
				os.Stderr.Write(ee.Stderr)
			}
			os.Exit(1)
		}
		for k, v := range parseEnv(out) {
			_ = os.Setenv(k, v)
		}
	}
	code := m.Run()
	if ownUp {
		_ = script("down").Run()
	}
	os.Exit(code)
}

// script runs testbed.sh from Main, which holds the testbed lock: the script must not wait
// for it (testbed.sh up takes the lock unless told it is held).
func script(args ...string) *exec.Cmd {
	cmd := exec.Command(Script(), args...)
	cmd.Env = append(os.Environ(), "MEDIC_TESTBED_LOCK_HELD=1")
	return cmd
}

// answers reports whether a homeserver's client API responds.
func answers(url string) bool {
	if url == "" {
		return false
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url + "/_matrix/client/versions")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func parseEnv(out []byte) map[string]string {
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "MEDIC_TESTBED_") {
			vars[k] = v
		}
	}
	return vars
}

// Get returns the testbed (Main must have run).
func Get(t T) *Testbed {
	t.Helper()
	once.Do(func() {
		env := func(k string) string { return os.Getenv("MEDIC_TESTBED_" + k) }
		hs := func(n int) *Homeserver {
			p := fmt.Sprintf("HS%d_", n)
			if v, err := strconv.Atoi(env(p + "N")); err == nil && v > 0 {
				n = v // the pair may be spare homeservers (hs4/hs5) standing in for hs1/hs2
			}
			return &Homeserver{N: n, Name: env(p + "NAME"), URL: env(p + "URL"), DSN: env(p + "DSN"), Dir: env(p + "DIR"),
				SQLite: env(p + "SQLITE")}
		}
		current = &Testbed{
			HS1: hs(1), HS2: hs(2),
			SharedSecret:  env("SHARED_SECRET"),
			AdminPassword: env("PASSWORD_ADMIN"),
			MedicPassword: env("PASSWORD_MEDIC"),
			UserPassword:  env("PASSWORD_USER"),
			script:        Script(),
		}
	})
	if current.HS1.URL == "" {
		t.Fatal("no testbed: call testbed.Main from TestMain")
	}
	return current
}

// UserID returns @name:server on this homeserver.
func (h *Homeserver) UserID(name string) id.UserID { return id.NewUserID(name, h.Name) }

// LogPath is Synapse's own log (homeserver.log in the config directory).
func (h *Homeserver) LogPath() string { return filepath.Join(h.Dir, "homeserver.log") }

// MetricsURL is Synapse's Prometheus endpoint (testbed.sh: a metrics listener on 9400+N).
func (h *Homeserver) MetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/_synapse/metrics", 9400+h.N)
}

// SigningKeyPath is the key file Synapse signs federation traffic with.
func (h *Homeserver) SigningKeyPath() string {
	matches, _ := filepath.Glob(filepath.Join(h.Dir, "*.signing.key"))
	if len(matches) == 0 {
		return ""
	}
	return matches[0]
}

func (tb *Testbed) run(t T, args ...string) {
	t.Helper()
	out, err := exec.Command(tb.script, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testbed %v: %v\n%s", args, err, out)
	}
}

// Run runs testbed.sh with args (e.g. "stop", "1"), failing the test if it fails.
func (tb *Testbed) Run(t T, args ...string) {
	t.Helper()
	tb.run(t, args...)
}

// Stop stops the homeserver; it is started again when the test ends.
func (tb *Testbed) Stop(t T, h *Homeserver) {
	t.Helper()
	tb.run(t, "stop", fmt.Sprint(h.N))
	t.Cleanup(func() { tb.run(t, "start", fmt.Sprint(h.N)) })
}

// FreshHS3 creates hs3 from scratch (Synapse on SQLite, hs3.test:8483, users admin, alice,
// bob) and starts it; it is stopped when the test ends. Its data is recreated every time, so
// it never carries rooms of hs1/hs2 databases that `up` recreated since.
func (tb *Testbed) FreshHS3(t T) *Homeserver {
	t.Helper()
	tb.run(t, "fresh", "3")
	t.Cleanup(func() { tb.run(t, "stop", "3") })
	name, url, dir, sqlite := "hs3.test:8483", "http://127.0.0.1:8028", "", ""
	for k, v := range parseEnv(mustOutput(t, tb.script, "env")) {
		switch k {
		case "MEDIC_TESTBED_HS3_NAME":
			name = v
		case "MEDIC_TESTBED_HS3_URL":
			url = v
		case "MEDIC_TESTBED_HS3_DIR":
			dir = v
		case "MEDIC_TESTBED_HS3_SQLITE":
			sqlite = v
		}
	}
	return &Homeserver{N: 3, Name: name, URL: url, Dir: dir, SQLite: sqlite}
}

func mustOutput(t T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

// Start starts a stopped homeserver and waits until it answers.
func (tb *Testbed) Start(t T, h *Homeserver) {
	t.Helper()
	tb.run(t, "start", fmt.Sprint(h.N))
}

// Restart restarts the homeserver (e.g. to drop Synapse's caches after a DB change).
func (tb *Testbed) Restart(t T, h *Homeserver) {
	t.Helper()
	tb.run(t, "stop", fmt.Sprint(h.N))
	tb.run(t, "start", fmt.Sprint(h.N))
}

// Dump writes a pg_dump (custom format) of the homeserver's database to path.
func (tb *Testbed) Dump(t T, h *Homeserver, path string) {
	t.Helper()
	out, err := exec.Command("pg_dump", "-Fc", "-f", path, h.DSN).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
}

// Restore replaces the homeserver's database with a dump, as an admin restoring a backup
// would: stop Synapse, drop and recreate the database, pg_restore, start Synapse.
func (tb *Testbed) Restore(t T, h *Homeserver, path string) {
	t.Helper()
	tb.run(t, "stop", fmt.Sprint(h.N))
	tb.run(t, "recreatedb", fmt.Sprint(h.N))
	out, err := exec.Command("pg_restore", "--no-owner", "--role=synapse", "-d", h.DSN, path).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	tb.run(t, "start", fmt.Sprint(h.N))
}

// Login logs a user in with a password (a new device each time).
func (tb *Testbed) Login(t T, h *Homeserver, user, password string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(h.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("login %s on %s: %v", user, h.Name, err)
	}
	// Log the device out at the end, so shared users don't pile up devices that every
	// encrypted message must then be encrypted for.
	t.Cleanup(func() { _, _ = cli.Logout(context.Background()) })
	return cli
}

// Admin logs in the homeserver's admin user.
func (tb *Testbed) Admin(t T, h *Homeserver) *mautrix.Client {
	return tb.Login(t, h, "admin", tb.AdminPassword)
}

// Register creates a new user with the shared secret and returns it logged in.
func (tb *Testbed) Register(t T, h *Homeserver, name string, admin bool) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(h.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	adm := &synapseadmin.Client{Client: cli}
	resp, err := adm.SharedSecretRegister(context.Background(), tb.SharedSecret, synapseadmin.ReqSharedSecretRegister{
		Username: name, Password: tb.UserPassword, Admin: admin,
	})
	if err != nil {
		t.Fatalf("register %s on %s: %v", name, h.Name, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

// UniqueName returns a user or room name unique within this run.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

// AdminAPI returns mautrix-go's Synapse admin client for an admin's client.
func AdminAPI(cli *mautrix.Client) *synapseadmin.Client { return &synapseadmin.Client{Client: cli} }

// WithConn runs fn with a connection to the homeserver's database; an error fails the test.
func (h *Homeserver) WithConn(t T, fn func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, h.DSN)
	if err != nil {
		t.Fatalf("connect to %s's database: %v", h.Name, err)
	}
	defer conn.Close(ctx)
	if err = fn(ctx, conn); err != nil {
		t.Fatal(err)
	}
}

// Exec runs SQL on the homeserver's database (for fault injection in tests).
func (h *Homeserver) Exec(t T, sql string, args ...any) {
	t.Helper()
	h.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	})
}

// Count runs a query returning one integer on the homeserver's database.
func (h *Homeserver) Count(t T, sql string, args ...any) (n int) {
	t.Helper()
	h.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	})
	return n
}

// Buffer is an output sink safe for concurrent writes (logs, a child process's output).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Reset empties the buffer.
func (b *Buffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// RestartCommand is the shell command that restarts homeserver h (synapse.restart_command).
func (tb *Testbed) RestartCommand(h *Homeserver) string {
	return tb.script + " restart " + fmt.Sprint(h.N)
}

// JoinVia joins cli to roomID through server via, retrying for 30 s while federation settles.
func JoinVia(t T, cli *mautrix.Client, roomID id.RoomID, via string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cli.JoinRoom(context.Background(), roomID.String(), &mautrix.ReqJoinRoom{Via: []string{via}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s join %s: %v", cli.UserID, roomID, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// CraftEvent signs an event template as homeserver h (content hash, signature) for a room of
// the given version and returns its event ID and PDU: for events h itself would refuse to
// create, delivered over federation by the test.
func CraftEvent(t T, h *Homeserver, roomVersion string, template map[string]any) (string, json.RawMessage) {
	t.Helper()
	in, err := json.Marshal(template)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(CraftEventBinary(t), h.Name, h.SigningKeyPath(), roomVersion)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("craftevent: %v\n%s", err, out)
	}
	var res struct {
		EventID string          `json:"event_id"`
		PDU     json.RawMessage `json:"pdu"`
	}
	if err = json.Unmarshal(out, &res); err != nil {
		t.Fatalf("craftevent output %q: %v", out, err)
	}
	return res.EventID, res.PDU
}

// ScratchDB creates a database on the testbed's PostgreSQL with a copy of homeserver h's
// Synapse schema (all tables, or the ones named), without rows, drops it when the test ends,
// and returns its DSN. Benchmarks and tests fill it with generated rows.
func ScratchDB(t T, h *Homeserver, tables ...string) string {
	t.Helper()
	name := UniqueName("scratch_")
	h.Exec(t, "CREATE DATABASE "+name)
	t.Cleanup(func() { h.Exec(t, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	u, err := url.Parse(h.DSN)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	args := []string{"--schema-only", "--no-owner"}
	for _, tbl := range tables {
		args = append(args, "-t", tbl)
	}
	dump, err := exec.Command("pg_dump", append(args, h.DSN)...).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	load := exec.Command("psql", "-q", "-v", "ON_ERROR_STOP=1", u.String())
	load.Stdin = bytes.NewReader(dump)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("load schema: %v\n%s", err, out)
	}
	return u.String()
}

// InstallAppservice copies an appservice registration file into homeserver h's directory and
// names it in app_service_config_files of its homeserver.yaml. Synapse loads it at its next
// (re)start, which is the caller's to do. When the test ends both are removed again and h
// restarted, so later tests see the server as it was.
func (tb *Testbed) InstallAppservice(t testing.TB, h *Homeserver, registration string) {
	t.Helper()
	raw, err := os.ReadFile(registration)
	if err != nil {
		t.Fatal(err)
	}
	hostPath := filepath.Join(h.Dir, "medic-appservice.yaml")
	if err = os.WriteFile(hostPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Synapse runs in the chroot: it sees the file under the chroot's own root.
	inChroot := "/" + strings.TrimPrefix(strings.TrimPrefix(hostPath, os.Getenv("MEDIC_TESTBED_ROOT")), "/")
	cfgPath := filepath.Join(h.Dir, "homeserver.yaml")
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(orig, []byte("app_service_config_files")) {
		t.Fatalf("%s already names appservices", cfgPath)
	}
	line := fmt.Sprintf("app_service_config_files: [%q]\n", inChroot)
	if err = os.WriteFile(cfgPath, append(append([]byte{}, orig...), line...), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(cfgPath, orig, 0o600)
		_ = os.Remove(hostPath)
		tb.Restart(t, h)
	})
}
