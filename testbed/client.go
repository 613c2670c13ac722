package testbed

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	_ "go.mau.fi/util/dbutil/litestream" // sqlite3-fk-wal for the crypto store
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Client is a test user's syncing client, with end-to-end encryption like Element's (mautrix-go
// crypto), that records every timeline event it sees, decrypted where it can.
type Client struct {
	*mautrix.Client
	Crypto *cryptohelper.CryptoHelper
	t      testing.TB
	cancel context.CancelFunc
	done   chan struct{}

	lock   sync.Mutex
	events []*event.Event
	wake   chan struct{}
}

// Syncing starts sync (with encryption) for a logged-in client and stops it when the test ends.
func Syncing(t testing.TB, cli *mautrix.Client) *Client {
	t.Helper()
	c := &Client{Client: cli, t: t, wake: make(chan struct{})}
	if os.Getenv("MEDIC_TEST_CLIENT_LOG") != "" {
		cli.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	ch, err := cryptohelper.NewCryptoHelper(cli, []byte("test pickle key"), filepath.Join(t.TempDir(), "crypto.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err = ch.Init(context.Background()); err != nil {
		t.Fatalf("init crypto for %s: %v", cli.UserID, err)
	}
	cli.Crypto = ch
	c.Crypto = ch
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	record := func(ctx context.Context, evt *event.Event) { c.record(evt) }
	syncer.OnEventType(event.EventMessage, record)
	syncer.OnEventType(event.EventReaction, record)
	syncer.OnEventType(event.EventRedaction, record)
	syncer.OnEventType(event.StateMember, record)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		_ = cli.SyncWithContext(ctx)
	}()
	t.Cleanup(c.Stop)
	return c
}

// Stop stops syncing.
func (c *Client) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
	_ = c.Crypto.Close()
}

func (c *Client) record(evt *event.Event) {
	c.lock.Lock()
	c.events = append(c.events, evt)
	close(c.wake)
	c.wake = make(chan struct{})
	c.lock.Unlock()
}

// Events returns every event seen so far.
func (c *Client) Events() []*event.Event {
	c.lock.Lock()
	defer c.lock.Unlock()
	return append([]*event.Event(nil), c.events...)
}

// WaitFor waits until an event matching match has been seen and returns it; it fails the test
// after timeout.
func (c *Client) WaitFor(timeout time.Duration, what string, match func(*event.Event) bool) *event.Event {
	c.t.Helper()
	evt := c.TryWaitFor(timeout, match)
	if evt == nil {
		c.t.Fatalf("%s: timed out after %s waiting for %s", c.UserID, timeout, what)
	}
	return evt
}

// TryWaitFor is WaitFor that returns nil on timeout.
func (c *Client) TryWaitFor(timeout time.Duration, match func(*event.Event) bool) *event.Event {
	deadline := time.After(timeout)
	seen := 0
	for {
		c.lock.Lock()
		evts, wake := c.events[seen:], c.wake
		seen = len(c.events)
		c.lock.Unlock()
		for _, evt := range evts {
			if match(evt) {
				return evt
			}
		}
		select {
		case <-wake:
		case <-deadline:
			return nil
		}
	}
}

// SendText sends a text message (encrypted in encrypted rooms) and returns its event ID.
func (c *Client) SendText(roomID id.RoomID, text string) id.EventID {
	c.t.Helper()
	resp, err := c.SendMessageEvent(context.Background(), roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: text})
	if err != nil {
		c.t.Fatalf("%s: send %q: %v", c.UserID, text, err)
	}
	return resp.EventID
}

// CreateRoom creates a private room the way Element does (private_chat preset, with
// m.room.encryption in the initial state when encrypted) and invites the given users.
func (c *Client) CreateRoom(encrypted bool, invite ...id.UserID) id.RoomID {
	c.t.Helper()
	req := &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: invite, Name: UniqueName("room")}
	if encrypted {
		req.InitialState = []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}}
	}
	resp, err := c.Client.CreateRoom(context.Background(), req)
	if err != nil {
		c.t.Fatalf("%s: create room: %v", c.UserID, err)
	}
	return resp.RoomID
}

// Message returns the message content of evt, or nil.
func Message(evt *event.Event) *event.MessageEventContent {
	if evt.Type != event.EventMessage {
		return nil
	}
	msg, _ := evt.Content.Parsed.(*event.MessageEventContent)
	return msg
}

// ReplyTo matches a message from sender that replies to the event inReplyTo.
func ReplyTo(sender id.UserID, inReplyTo id.EventID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		msg := Message(evt)
		return msg != nil && evt.Sender == sender && msg.RelatesTo.GetReplyTo() == inReplyTo
	}
}

// Joined matches user's join in roomID.
func Joined(roomID id.RoomID, user id.UserID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		return evt.RoomID == roomID && evt.Type == event.StateMember && evt.GetStateKey() == user.String() &&
			evt.Content.AsMember().Membership == event.MembershipJoin
	}
}
