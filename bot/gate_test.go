package bot

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/commands"
	"github.com/synapse-medic/medic/config"
)

// TestUntrusted is the gate's rule: the encryption requirements apply to every message and
// reaction alike, whatever it looks like.
func TestUntrusted(t *testing.T) {
	msg := &event.Event{Type: event.EventMessage, Content: event.Content{Parsed: &event.MessageEventContent{Body: "hello"}}}
	reaction := &event.Event{Type: event.EventReaction, Content: event.Content{Parsed: &event.ReactionEventContent{}}}
	with := func(evt *event.Event, encrypted bool, trust id.TrustState) *event.Event {
		e := *evt
		e.Mautrix.WasEncrypted, e.Mautrix.TrustState = encrypted, trust
		return &e
	}
	none, enc, verified, both := config.Encryption{}, config.Encryption{RequireEncrypted: true},
		config.Encryption{RequireVerifiedDevice: true}, config.Encryption{RequireEncrypted: true, RequireVerifiedDevice: true}
	for _, evt := range []*event.Event{msg, reaction} {
		for _, c := range []struct {
			enc       config.Encryption
			encrypted bool
			trust     id.TrustState
			want      refusal
		}{
			{none, false, id.TrustStateUnset, trusted},
			{enc, false, id.TrustStateUnset, notEncrypted},
			{enc, true, id.TrustStateUnknownDevice, trusted},
			{verified, false, id.TrustStateUnset, notVerified},
			{verified, true, id.TrustStateUnknownDevice, notVerified},
			{verified, true, id.TrustStateForwarded, notVerified},
			{verified, true, id.TrustStateCrossSignedUntrusted, notVerified},
			{verified, true, id.TrustStateCrossSignedTOFU, trusted},
			{both, false, id.TrustStateUnset, notEncrypted},
			{both, true, id.TrustStateUnknownDevice, notVerified},
			{both, true, id.TrustStateCrossSignedVerified, trusted},
		} {
			if got := untrusted(c.enc, with(evt, c.encrypted, c.trust)); got != c.want {
				t.Errorf("%s, %+v, encrypted=%v, trust=%s: %d, want %d", evt.Type.Type, c.enc, c.encrypted, c.trust, got, c.want)
			}
		}
	}
}

// TestIsCommand: a refused message is answered exactly when the processor would have run it
// as one of medic's commands, however it is written.
func TestIsCommand(t *testing.T) {
	cfg, err := config.Parse([]byte("{}"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	botUser := id.UserID("@medic:example.org")
	cli := &mautrix.Client{UserID: botUser}
	b := &Bot{cfg: cfg, Client: cli, proc: commands.NewProcessor(cli, &app.App{Config: cfg}, nil)}
	structured := &event.MSC4391BotCommandInput{Command: "ping", Arguments: json.RawMessage(`{}`)}
	edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "* !ping"}
	edit.SetEdit("$orig")
	for _, c := range []struct {
		what    string
		content *event.MessageEventContent
		want    bool
	}{
		{"plain", &event.MessageEventContent{MsgType: event.MsgText, Body: "!ping"}, true},
		{"leading whitespace", &event.MessageEventContent{MsgType: event.MsgText, Body: " \t!ping"}, true},
		{"HTML", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello", Format: event.FormatHTML, FormattedBody: "!approve <i>abc</i>"}, true},
		{"MSC4391", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello", Mentions: &event.Mentions{UserIDs: []id.UserID{botUser}}, MSC4391BotCommand: structured}, true},
		{"MSC4391 for another bot", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello", Mentions: &event.Mentions{UserIDs: []id.UserID{"@other:example.org"}}, MSC4391BotCommand: structured}, false},
		{"subcommand", &event.MessageEventContent{MsgType: event.MsgText, Body: "!recover scan"}, true},
		{"chat", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello !ping"}, false},
		{"another bot's command", &event.MessageEventContent{MsgType: event.MsgText, Body: "!ban @x:example.org"}, false},
		{"notice", &event.MessageEventContent{MsgType: event.MsgNotice, Body: "!ping"}, false},
		{"edit", edit, false},
	} {
		evt := &event.Event{Type: event.EventMessage, Content: event.Content{Parsed: c.content}}
		if got := b.isCommand(context.Background(), evt); got != c.want {
			t.Errorf("%s: isCommand = %v, want %v", c.what, got, c.want)
		}
	}
}
