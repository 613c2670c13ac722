package bot_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/synapse-medic/medic/bot"
	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/testbed"
)

// TestScheduledHealthReport: a report scheduled a few seconds ahead arrives in the encrypted
// admin room on time, as an encrypted HTML table, followed by its charts: encrypted events
// carrying an encrypted file (no plain URL) that decrypts to a PNG that decodes. `!health`
// in chat answers with the same table first, and the scheduled report then compares with it.
func TestScheduledHealthReport(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	at := time.Now().Add(40 * time.Second).In(time.FixedZone("UTC+2", 2*3600))
	cfg.Health.Timezone = "Europe/Athens" // a zone that is not UTC, to exercise the conversion
	loc := cfg.Health.Location()
	cfg.Health.Schedule = []string{at.In(loc).Format("15:04:05")}

	// A rejected event in a room, so the rejections-per-day chart has something to draw.
	target := admin.CreateRoom(false)
	rejected := admin.SendText(target, "to be marked rejected")
	tb.HS1.Exec(t, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', $2)`, rejected, fmt.Sprint(time.Now().UnixMilli()))
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM rejections WHERE event_id = $1`, rejected) })

	startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	cmd := admin.SendText(roomID, "!health")
	reply := admin.WaitFor(wait, "the !health reply", testbed.ReplyTo(botUser, cmd))
	msg := testbed.Message(reply)
	if !reply.Mautrix.WasEncrypted || msg.Format != event.FormatHTML || !strings.Contains(msg.FormattedBody, "<table>") ||
		!strings.Contains(msg.Body, "Rejected events") || strings.Contains(msg.Body, "no rejected events") {
		t.Fatalf("!health reply (encrypted %v): %s\n%s", reply.Mautrix.WasEncrypted, msg.Body, msg.FormattedBody)
	}
	detail := admin.SendText(roomID, "!health rejections")
	reply = admin.WaitFor(wait, "the !health rejections reply", testbed.ReplyTo(botUser, detail))
	if d := testbed.Message(reply); !strings.Contains(d.Body, target.String()+" | 1 |") || !strings.Contains(d.FormattedBody, "<td>"+target.String()+"</td>") {
		t.Errorf("!health rejections does not list the room with its rejected event:\n%s\n%s", d.Body, d.FormattedBody)
	}
	if !strings.Contains(msg.Body, "syncing, encryption working") {
		t.Errorf("the medic check does not see the bot's sync and encryption: %s", msg.Body)
	}

	isReport := func(evt *event.Event) bool {
		m := testbed.Message(evt)
		return m != nil && evt.Sender == botUser && m.RelatesTo.GetReplyTo() == "" && strings.Contains(m.Body, "Health of "+tb.HS1.Name)
	}
	report := admin.WaitFor(90*time.Second, "the scheduled report", isReport)
	arrived := time.UnixMilli(report.Timestamp)
	t.Logf("scheduled for %s, sent at %s", at.Format(time.TimeOnly), arrived.In(at.Location()).Format(time.TimeOnly))
	if arrived.Before(at.Add(-time.Second)) || arrived.After(at.Add(20*time.Second)) {
		t.Errorf("the report was due at %s but was sent at %s", at, arrived)
	}
	if body := testbed.Message(report).Body; !report.Mautrix.WasEncrypted || !strings.Contains(body, "compared with the last report") {
		t.Errorf("scheduled report (encrypted %v) does not compare with the !health report: %s", report.Mautrix.WasEncrypted, body)
	}

	image := admin.WaitFor(wait, "the chart", func(evt *event.Event) bool {
		m := testbed.Message(evt)
		return m != nil && evt.Sender == botUser && m.MsgType == event.MsgImage && evt.Timestamp >= report.Timestamp && strings.Contains(m.Body, "rejections")
	})
	img := testbed.Message(image)
	if !image.Mautrix.WasEncrypted || img.File == nil || img.URL != "" {
		t.Fatalf("the chart in an encrypted room must be an encrypted event with an encrypted file: encrypted=%v file=%v url=%q", image.Mautrix.WasEncrypted, img.File != nil, img.URL)
	}
	uri, err := img.File.URL.Parse()
	if err != nil {
		t.Fatal(err)
	}
	data, err := admin.DownloadBytes(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = png.Decode(bytes.NewReader(data)); err == nil {
		t.Fatal("the uploaded file is a plain PNG: it was not encrypted")
	}
	if err = img.File.DecryptInPlace(data); err != nil {
		t.Fatalf("decrypt the chart: %v", err)
	}
	pic, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the chart is not a PNG: %v", err)
	}
	if b := pic.Bounds(); b.Dx() != img.Info.Width || b.Dy() != img.Info.Height || b.Dx() < 100 {
		t.Errorf("chart size %v, event says %dx%d", b, img.Info.Width, img.Info.Height)
	}
}

// TestNextReport: the next scheduled time in the configured zone, rolling over midnight.
func TestNextReport(t *testing.T) {
	cfg := config.Health{Schedule: []string{"17:30", "09:00"}, Timezone: "Europe/Berlin"}
	for _, c := range []struct{ now, want string }{
		{"2026-11-21T16:00:00Z", "2026-11-21T16:30:00Z"}, // 17:00 in Berlin → 17:30
		{"2026-11-21T16:30:00Z", "2026-11-22T08:00:00Z"}, // exactly 17:30 → tomorrow 09:00
		{"2026-11-21T23:30:00Z", "2026-11-22T08:00:00Z"}, // after midnight in Berlin
	} {
		now, _ := time.Parse(time.RFC3339, c.now)
		got, ok := bot.NextReport(cfg, now)
		if !ok || !got.UTC().Equal(mustTime(c.want)) {
			t.Errorf("now %s: next %s, want %s", c.now, got.UTC(), c.want)
		}
	}
	if _, ok := bot.NextReport(config.Health{Timezone: "UTC"}, time.Now()); ok {
		t.Error("no schedule must mean no next report")
	}
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}
