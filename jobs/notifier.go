package jobs

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/store"
)

// Notifier is everything the spine says, to whoever asked: the admin room (package bot) or
// the terminal (package terminal). Texts are Markdown.
type Notifier interface {
	// Say posts a message (a note while a step runs, a "nothing to do", a new plan's preface).
	Say(ctx context.Context, md string)
	// Prompt shows a plan awaiting approval. In chat the answer comes later (AnswerLater),
	// through !approve/!cancel or a reaction; the terminal asks at once.
	Prompt(ctx context.Context, job *store.Job, plan string) Answer
	// Progress shows a running job's progress; each call replaces the last one of the job.
	// final is set once, when the job has ended.
	Progress(ctx context.Context, job *store.Job, status string, final bool)
	// Report posts the outcome of a run (job.State is done, failed or cancelled).
	Report(ctx context.Context, job *store.Job, report string)
}

// Answer is what a Notifier's prompt got.
type Answer int

const (
	// AnswerLater: the prompt was posted; approval arrives as a command.
	AnswerLater Answer = iota
	// AnswerYes: the operator on the host approved there and then.
	AnswerYes
	// AnswerNo: the operator on the host declined.
	AnswerNo
)

// Requester is who asked and where medic answers them.
type Requester struct {
	User id.UserID
	// Room is where it was asked (kept with the job, e.g. to tell of an interruption).
	Room id.RoomID
	// Host is set for the operator on medic's host (`medic exec`): root there can do all
	// medic can, so one approval of theirs suffices, but it is never counted as one of the
	// admins jobs.approvals asks for.
	Host     bool
	Notifier Notifier
}
