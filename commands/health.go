package commands

import (
	"context"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/health"
)

func healthCommand() *Handler {
	return &Handler{
		Name: "health",
		Description: text("Health report: every check with ok/warn/critical, why, and the fix; or one check with the rows behind it (" +
			strings.Join(health.IDs(), ", ") + ")"),
		Parameters: []*cmdschema.Parameter{{Key: "check", Schema: cmdschema.PrimitiveTypeString.Schema(), Optional: true,
			Description: text("One check to show in detail")}},
		TailParam: "check",
		Func: func(ce *Event) {
			var only []string
			if len(ce.Args) > 0 {
				name := strings.ToLower(strings.Join(ce.Args, " "))
				if health.Find(name) == nil {
					Fail(ce, "There is no health check `%s`. Checks: %s.", name, "`"+strings.Join(health.IDs(), "`, `")+"`")
					return
				}
				only = []string{name}
			}
			rn := ce.Meta.Health
			rep, err := rn.Run(ce.Ctx, only...)
			if err != nil {
				Fail(ce, "Could not run the health checks: %v", err)
				return
			}
			trigger := "command"
			if len(only) > 0 {
				// A single check is not a report: it is shown but not stored, so it does not
				// move the "since the last report" window of the full report.
				r := rep.Results[0]
				if why := withheld(ce); why != "" {
					replyWhole(ce, Summary(r.DetailPlain(rep), why, SeeElsewhere))
					return
				}
				content := notice(r.DetailPlain(rep), r.DetailHTML(rep))
				content.SetReply(ce.Event)
				send(ce, content)
				return
			}
			if ce.Meta.Transport.Shared() { // charts are images: chat only
				if rep.Charts, err = rn.Charts(ce.Ctx, rep); err != nil {
					zerolog.Ctx(ce.Ctx).Warn().Err(err).Msg("Could not draw the health charts")
				}
			}
			if err = PostReport(ce.Ctx, ce.Proc.Client, ce.RoomID, rep, prefix(ce), ce.Event, withheld(ce)); err != nil {
				zerolog.Ctx(ce.Ctx).Err(err).Msg("Failed to post the health report")
			}
			if err = rn.Save(ce.Ctx, rep, trigger, true); err != nil {
				zerolog.Ctx(ce.Ctx).Err(err).Msg("Failed to store the health report")
			}
			if rep.Worst() == health.Critical {
				outcome(ce.Ctx).Failed = true // the terminal exits non-zero, for cron and monitoring
			}
		},
	}
}

func notice(plainBody, htmlBody string) *event.MessageEventContent {
	return &event.MessageEventContent{MsgType: event.MsgNotice, Body: plainBody, Format: event.FormatHTML, FormattedBody: htmlBody}
}

func send(ce *Event, content *event.MessageEventContent) {
	if _, err := ce.Proc.Client.SendMessageEvent(ce.Ctx, ce.RoomID, event.EventMessage, content); err != nil {
		zerolog.Ctx(ce.Ctx).Err(err).Msg("Failed to send reply")
	}
}

// PostReport posts a full health report to a room: the table (HTML, with a plain-text body)
// and then each chart as an image. In an encrypted room the images are uploaded encrypted
// (the event carries `file` with the key, never a plain `url`) and the events are encrypted
// by the client's crypto helper like every other message. Where details are withheld (why
// is set: Withheld), only the headline (the worst status and the counts) is posted.
func PostReport(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, rep *health.Report, pfx string, replyTo *event.Event, why string) error {
	content := notice(rep.Plain(pfx), rep.HTML(pfx))
	if why != "" {
		content = MarkdownNotice(Summary(rep.Plain(pfx), why, fmt.Sprintf(
			"`%shealth` in a room with only admins, or `medic exec health` on medic's host, shows the report.", pfx)))
	}
	if replyTo != nil {
		content.SetReply(replyTo)
	}
	if _, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, content); err != nil {
		return fmt.Errorf("send health report: %w", err)
	}
	if why != "" {
		return nil
	}
	encrypted := false
	if cli.StateStore != nil {
		var err error
		if encrypted, err = cli.StateStore.IsEncrypted(ctx, roomID); err != nil {
			return fmt.Errorf("check room encryption: %w", err)
		}
	}
	for _, c := range rep.Charts {
		if err := SendImage(ctx, cli, roomID, c, encrypted); err != nil {
			return err
		}
	}
	return nil
}

// SendImage uploads a chart and posts it as m.image, encrypted when the room is.
func SendImage(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, c health.Chart, encrypted bool) error {
	data, mime := c.PNG, "image/png"
	var file *attachment.EncryptedFile
	if encrypted {
		file = attachment.NewEncryptedFile()
		data = file.Encrypt(c.PNG)
		mime = "application/octet-stream"
	}
	up, err := cli.UploadBytes(ctx, data, mime)
	if err != nil {
		return fmt.Errorf("upload %s: %w", c.Name, err)
	}
	content := &event.MessageEventContent{
		MsgType: event.MsgImage,
		Body:    c.Name,
		Info:    &event.FileInfo{MimeType: "image/png", Size: len(c.PNG), Width: c.W, Height: c.H},
	}
	if encrypted {
		content.File = &event.EncryptedFileInfo{EncryptedFile: *file, URL: up.ContentURI.CUString()}
	} else {
		content.URL = up.ContentURI.CUString()
	}
	if _, err = cli.SendMessageEvent(ctx, roomID, event.EventMessage, content); err != nil {
		return fmt.Errorf("send %s: %w", c.Name, err)
	}
	return nil
}
