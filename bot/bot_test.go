package bot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/bot"
	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/testbed"
)

func TestMain(m *testing.M) { testbed.Main(m) }

const wait = 30 * time.Second

type runningBot struct {
	*bot.Bot
	cfg   *config.Config
	store *store.Store
	logs  *testbed.Buffer
	stop  func()
}

// newBotAccount registers a fresh server-admin account for a bot, so each test starts with
// its own device and cross-signing keys.
func newBotAccount(t *testing.T, tb *testbed.Testbed) id.UserID {
	cli := tb.Register(t, tb.HS1, testbed.UniqueName("medic"), true)
	_, _ = cli.Logout(context.Background()) // drop the registration's device
	return cli.UserID
}

func botConfig(t *testing.T, tb *testbed.Testbed, botUser id.UserID, admins ...id.UserID) *config.Config {
	cfg, err := config.Parse([]byte("{}"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Homeserver.URL = tb.HS1.URL
	cfg.Homeserver.ServerName = tb.HS1.Name
	cfg.Bot.UserID = botUser
	cfg.Bot.Password = tb.UserPassword
	cfg.Admins = admins
	cfg.Logging.Level = "debug"
	if err = cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startBot(t *testing.T, cfg *config.Config) *runningBot {
	t.Helper()
	logs := &testbed.Buffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := bot.NewClient(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(ctx, cfg, st, cli, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	b := bot.New(a, cli)
	if err = b.Start(ctx); err != nil {
		t.Fatalf("start bot: %v\nlogs:\n%s", err, logs.String())
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	rb := &runningBot{Bot: b, cfg: cfg, store: st, logs: logs}
	var once sync.Once
	rb.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("bot run: %v", err)
			}
			_ = st.Close()
			if t.Failed() {
				t.Logf("bot logs:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(rb.stop)
	return rb
}

// adminClient logs in hs1's admin with a fresh encrypted, syncing client.
func adminClient(t *testing.T, tb *testbed.Testbed) *testbed.Client {
	return testbed.Syncing(t, tb.Admin(t, tb.HS1))
}

// ping sends !ping and waits for the bot's reply.
func ping(t *testing.T, c *testbed.Client, roomID id.RoomID, botUser id.UserID) *event.Event {
	t.Helper()
	evtID := c.SendText(roomID, "!ping")
	return c.WaitFor(wait, "the bot's reply to !ping", testbed.ReplyTo(botUser, evtID))
}

func roomWithBot(t *testing.T, admin *testbed.Client, botUser id.UserID, encrypted bool) id.RoomID {
	t.Helper()
	roomID := admin.CreateRoom(encrypted, botUser)
	admin.WaitFor(wait, "the bot to join", testbed.Joined(roomID, botUser))
	return roomID
}

func TestPingInEncryptedAndUnencryptedRooms(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	rb := startBot(t, botConfig(t, tb, botUser, admin.UserID))

	for _, encrypted := range []bool{true, false} {
		roomID := roomWithBot(t, admin, botUser, encrypted)
		reply := ping(t, admin, roomID, botUser)
		if !strings.HasPrefix(testbed.Message(reply).Body, "Pong!") {
			t.Errorf("reply is %q, want Pong!", testbed.Message(reply).Body)
		}
		if reply.Mautrix.WasEncrypted != encrypted {
			t.Errorf("encrypted room=%v but reply WasEncrypted=%v", encrypted, reply.Mautrix.WasEncrypted)
		}
	}
	// The secrets the bot holds never reach its log.
	rb.stop()
	recoveryKey, err := os.ReadFile(rb.cfg.Encryption.RecoveryKeyFile)
	if err != nil {
		t.Fatalf("recovery key file: %v", err)
	}
	pickle, _ := os.ReadFile(rb.cfg.Encryption.PickleKeyFile)
	for name, secret := range map[string]string{
		"password": rb.cfg.Bot.Password, "access token": rb.Client.AccessToken,
		"recovery key": strings.TrimSpace(string(recoveryKey)), "pickle key": strings.TrimSpace(string(pickle)),
	} {
		if secret == "" {
			t.Errorf("%s is empty", name)
		} else if strings.Contains(rb.logs.String(), secret) {
			t.Errorf("the bot's log contains its %s", name)
		}
	}
	for _, path := range []string{rb.cfg.Encryption.RecoveryKeyFile, rb.cfg.Encryption.PickleKeyFile} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: want mode 0600, got %v (%v)", filepath.Base(path), fi.Mode().Perm(), err)
		}
	}
}

func TestBotDeviceIsCrossSigned(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	rb := startBot(t, botConfig(t, tb, botUser, admin.UserID))
	ctx := context.Background()

	// As Element does: fetch the bot's keys and resolve the trust of its device.
	mach := admin.Crypto.Machine()
	devices, err := mach.FetchKeys(ctx, []id.UserID{botUser}, true)
	if err != nil {
		t.Fatal(err)
	}
	dev := devices[botUser][rb.Client.DeviceID]
	if dev == nil {
		t.Fatalf("bot device %s not in key query answer", rb.Client.DeviceID)
	}
	if trust := mach.ResolveTrust(dev); trust < id.TrustStateCrossSignedTOFU {
		t.Fatalf("bot device trust is %s, want at least cross-signed (TOFU)", trust)
	}

	// A restart with a new device (lost store, same account) cross-signs it again from the
	// recovery key file.
	rb.stop()
	cfg2 := *rb.cfg
	cfg2.Database.URI = "file:" + filepath.Join(t.TempDir(), "medic2.db") + "?_txlock=immediate"
	rb2 := startBot(t, &cfg2)
	if rb2.Client.DeviceID == rb.Client.DeviceID {
		t.Fatal("expected a new device after losing the store")
	}
	devices, err = mach.FetchKeys(ctx, []id.UserID{botUser}, true)
	if err != nil {
		t.Fatal(err)
	}
	if dev = devices[botUser][rb2.Client.DeviceID]; dev == nil || mach.ResolveTrust(dev) < id.TrustStateCrossSignedTOFU {
		t.Fatalf("new bot device not cross-signed: %v", dev)
	}
}

// TestGate checks everything the bot must not act on, using later admin pings as barriers:
// once the bot has answered a ping sent after an event, it has seen that event.
func TestGate(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	alice := testbed.Syncing(t, tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false))
	botUser := newBotAccount(t, tb)

	// A command sent before the bot starts is old: never answered.
	roomA := admin.CreateRoom(true)
	if _, err := admin.InviteUser(ctx, roomA, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoomByID(ctx, roomA); err != nil {
		t.Fatal(err)
	}
	// Force the bot into roomA before it runs, using the admin API (it joins local users).
	adm := testbed.AdminAPI(admin.Client)
	if err := adm.JoinUserToRoom(ctx, roomA, synapseadmin.ReqJoinUserToRoom{UserID: botUser}); err != nil {
		t.Fatal(err)
	}
	oldCmd := admin.SendText(roomA, "!ping")
	time.Sleep(1100 * time.Millisecond) // the bot's start time must be after the old command's timestamp

	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Rooms.Admin = []id.RoomID{roomA}
	off := false
	cfg.Rooms.AdoptAdminInvites = &off
	startBot(t, cfg)
	ping(t, admin, roomA, botUser)

	// A non-admin's command, an admin's command meant for another bot, a misspelling.
	aliceCmd := alice.SendText(roomA, "!ping")
	otherBot := admin.SendText(roomA, "!ban @spammer:example.org spam")
	typo := admin.SendText(roomA, "!pnig")
	reply := admin.WaitFor(wait, "did-you-mean reply", testbed.ReplyTo(botUser, typo))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "Did you mean") || !strings.Contains(body, "!ping") {
		t.Errorf("typo reply = %q, want a did-you-mean for !ping", body)
	}

	// An invite from a non-admin, and an admin's invite to a room that is not an admin room
	// (adoption is off): neither is joined.
	aliceRoom := alice.CreateRoom(true, botUser)
	adminOther := admin.CreateRoom(true, botUser)
	// A command in a room the bot is in but which is not an admin room.
	roomB := admin.CreateRoom(true)
	if err := adm.JoinUserToRoom(ctx, roomB, synapseadmin.ReqJoinUserToRoom{UserID: botUser}); err != nil {
		t.Fatal(err)
	}
	admin.WaitFor(wait, "bot forced into room B", testbed.Joined(roomB, botUser))
	roomBCmd := admin.SendText(roomB, "!ping")

	// Two barriers: the second ping is sent after the first reply, so the bot's sync has
	// moved past every event above and any action it would take has been taken.
	ping(t, admin, roomA, botUser)
	ping(t, admin, roomA, botUser)

	for what, evtID := range map[string]id.EventID{
		"an old command": oldCmd, "a non-admin's command": aliceCmd,
		"another bot's command": otherBot, "a command in a non-admin room": roomBCmd,
	} {
		for _, evt := range admin.Events() {
			if testbed.ReplyTo(botUser, evtID)(evt) {
				t.Errorf("the bot answered %s: %q", what, testbed.Message(evt).Body)
			}
		}
	}
	for what, roomID := range map[string]id.RoomID{"a non-admin's invite": aliceRoom, "an invite to a non-admin room": adminOther} {
		var member event.MemberEventContent
		if err := admin.StateEvent(ctx, roomID, event.StateMember, botUser.String(), &member); err == nil && member.Membership == event.MembershipJoin {
			t.Errorf("the bot accepted %s", what)
		} else if roomID == adminOther && member.Membership != event.MembershipInvite {
			t.Errorf("invite state in %s: %q (%v)", what, member.Membership, err)
		}
	}
}

func TestRequireEncryptedAndVerifiedDevice(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Encryption.RequireEncrypted = true
	cfg.Encryption.RequireVerifiedDevice = true
	rb := startBot(t, cfg)

	plain := roomWithBot(t, admin, botUser, false)
	cmd := admin.SendText(plain, "!ping")
	reply := admin.WaitFor(wait, "refusal of an unencrypted command", testbed.ReplyTo(botUser, cmd))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "must be sent encrypted") {
		t.Errorf("unencrypted command got %q", body)
	}

	enc := roomWithBot(t, admin, botUser, true)
	cmd = admin.SendText(enc, "!ping")
	reply = admin.WaitFor(wait, "refusal from an unverified device", testbed.ReplyTo(botUser, cmd))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "cross-signed device") {
		t.Errorf("command from unverified device got %q", body)
	}

	// The processor finds commands in more than the plain body: after leading whitespace, in
	// the HTML formatted_body, and in MSC4391 structured data. Each is refused alike.
	ctx := context.Background()
	for _, d := range disguisedPings(botUser) {
		resp, err := admin.SendMessageEvent(ctx, enc, event.EventMessage, d.content)
		if err != nil {
			t.Fatal(err)
		}
		reply = admin.WaitFor(wait, "an answer to "+d.what, testbed.ReplyTo(botUser, resp.EventID))
		if body := testbed.Message(reply).Body; !strings.Contains(body, "cross-signed device") {
			t.Errorf("%s from an unverified device got %q", d.what, body)
		}
	}

	// The admin cross-signs their device, as Element does on setup: now it is accepted.
	mach := admin.Crypto.Machine()
	if _, _, err := mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, tb.AdminPassword, ""); err != nil {
		t.Fatal(err)
	}
	if err := mach.SignOwnDevice(ctx, mach.OwnIdentity()); err != nil {
		t.Fatal(err)
	}
	if err := mach.SignOwnMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	// The bot learns of the new keys through device-list updates in sync; retry a few pings.
	deadline := time.Now().Add(wait)
	for {
		cmd = admin.SendText(enc, "!ping")
		reply = admin.WaitFor(wait, "reply after cross-signing", testbed.ReplyTo(botUser, cmd))
		if strings.HasPrefix(testbed.Message(reply).Body, "Pong!") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after cross-signing: %q", testbed.Message(reply).Body)
		}
		time.Sleep(time.Second)
	}

	// Reactions are sent in clear (Element never encrypts them), so a reaction says nothing
	// about the device it came from: neither ✅ from a second login nobody verified (a stolen
	// token) approves, nor ❌ from the verified device cancels. The first gets a hint naming
	// the command to send instead, once per prompt.
	ghost := testbed.UniqueName("gate") + ".test"
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $2)`,
		ghost, time.Now().UnixMilli())
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })
	planEvt, jobID := prompt(t, admin, enc, botUser, "!federation reset "+ghost)
	if body := testbed.Message(planEvt).Body; strings.Contains(body, "React ✅") || !strings.Contains(body, "Send `!approve "+jobID+"`") {
		t.Errorf("under the encryption requirements the plan must offer the commands, not reactions: %q", body)
	}
	stolen := tb.Admin(t, tb.HS1)
	if _, err := stolen.SendReaction(ctx, enc, planEvt.ID, "✅"); err != nil {
		t.Fatal(err)
	}
	react(t, admin, enc, planEvt.ID, "❌")
	ping(t, admin, enc, botUser)
	ping(t, admin, enc, botUser)
	if st := jobState(t, rb, jobID); st != store.JobAwaiting {
		t.Errorf("job %s is %s after reactions in clear, want %s", jobID, st, store.JobAwaiting)
	}
	hint := admin.WaitFor(wait, "a hint to approve by message", testbed.ReplyTo(botUser, planEvt.ID))
	if body := testbed.Message(hint).Body; !strings.Contains(body, "`!approve "+jobID+"`") {
		t.Errorf("hint for a refused reaction: %q", body)
	}
	hints := 0
	for _, evt := range admin.Events() {
		if testbed.ReplyTo(botUser, planEvt.ID)(evt) {
			hints++
		}
	}
	if hints != 1 {
		t.Errorf("%d hints for one prompt, want 1", hints)
	}

	// A client that does encrypt its reaction, from the verified device, approves.
	encrypted, err := admin.Crypto.Encrypt(ctx, enc, event.EventReaction, &event.ReactionEventContent{
		RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: planEvt.ID, Key: "✅"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = admin.SendMessageEvent(ctx, enc, event.EventEncrypted, encrypted); err != nil {
		t.Fatal(err)
	}
	waitJobState(t, rb, jobID, store.JobDone)
}

type disguised struct {
	what    string
	content *event.MessageEventContent
}

// disguisedPings are !ping written every other way the command processor reads.
func disguisedPings(botUser id.UserID) []disguised {
	return []disguised{
		{"leading whitespace", &event.MessageEventContent{MsgType: event.MsgText, Body: " !ping"}},
		{"HTML formatted_body", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello",
			Format: event.FormatHTML, FormattedBody: "!ping"}},
		{"an MSC4391 command", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello",
			Mentions:          &event.Mentions{UserIDs: []id.UserID{botUser}},
			MSC4391BotCommand: &event.MSC4391BotCommandInput{Command: "ping", Arguments: json.RawMessage(`{}`)}}},
	}
}

// TestElementStackHelp does the encrypted !help round trip with the client stack Element
// uses: matrix-js-sdk with its Rust crypto (e2e/jsclient).
func TestElementStackHelp(t *testing.T) {
	tb := testbed.Get(t)
	botUser := newBotAccount(t, tb)
	startBot(t, botConfig(t, tb, botUser, tb.HS1.UserID("admin")))

	dir := filepath.Join("..", "e2e", "jsclient")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		out, err := exec.Command("npm", "ci", "--prefix", dir, "--no-audit", "--no-fund").CombinedOutput()
		if err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	cmd := exec.Command("node", filepath.Join(dir, "roundtrip.mjs"),
		"--hs", tb.HS1.URL, "--user", "@admin:"+tb.HS1.Name, "--password", tb.AdminPassword,
		"--invite", botUser.String(), "--send", "!help", "--expect-from", botUser.String(), "--timeout", "60")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("js client: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	var res struct {
		ReplyBody         string `json:"reply_body"`
		ReplyWasEncrypted bool   `json:"reply_was_encrypted"`
		DecryptionFailed  bool   `json:"reply_decryption_failed"`
	}
	if err = json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("js client output %q: %v", out, err)
	}
	if !res.ReplyWasEncrypted || res.DecryptionFailed {
		t.Errorf("reply encrypted=%v decryption failed=%v", res.ReplyWasEncrypted, res.DecryptionFailed)
	}
	if !strings.Contains(res.ReplyBody, "Synapse Medic commands") || !strings.Contains(res.ReplyBody, "!ping") {
		t.Errorf("reply is not the help text: %q", res.ReplyBody)
	}
}

// TestCommandSpecsPublished: where the bot may send state, it publishes each command's
// description as an MSC4391 state event when it joins.
func TestCommandSpecsPublished(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	startBot(t, botConfig(t, tb, botUser, admin.UserID))
	ctx := context.Background()
	resp, err := admin.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{botUser},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{admin.UserID: 100, botUser: 50}},
	})
	if err != nil {
		t.Fatal(err)
	}
	admin.WaitFor(wait, "the bot to join", testbed.Joined(resp.RoomID, botUser))
	ping(t, admin, resp.RoomID, botUser) // specs are published right after the join
	for _, name := range []string{"help", "ping", "version"} {
		spec := &cmdschema.EventContent{Command: name}
		var got cmdschema.EventContent
		deadline := time.Now().Add(wait)
		for {
			err = admin.StateEvent(ctx, resp.RoomID, event.StateMSC4391BotCommand, spec.StateKey(botUser), &got)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || got.Command != name || got.Description == nil {
			t.Errorf("spec for %s: %+v (%v)", name, got, err)
		}
	}
}
