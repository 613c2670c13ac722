package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/proc"
	"github.com/synapse-medic/medic/store"
)

const (
	stepDone   = "done"
	stepFailed = "failed"
	// stepStarted is recorded before a step runs: a medic killed inside the step leaves it,
	// and Resume then knows the job may already have changed the world (see Resume).
	stepStarted = "started"
)

// start runs a job (state running) in the background; prior are its steps recorded by
// earlier runs.
func (m *Manager) start(ctx context.Context, req Requester, job *store.Job, op operation, plan *Plan, prior []store.Step) {
	m.lock.Lock()
	m.running[job.ID] = true
	m.lock.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() {
			m.lock.Lock()
			delete(m.running, job.ID)
			delete(m.stop, job.ID)
			m.lock.Unlock()
		}()
		m.run(context.WithoutCancel(ctx), req, job, op, plan, prior)
	}()
}

func (m *Manager) stopRequested(jobID string) bool {
	m.lock.Lock()
	defer m.lock.Unlock()
	return m.stop[jobID]
}

// runState is what a run counts while its steps go.
type runState struct {
	mu       sync.Mutex
	total    int
	previous int // steps finished in earlier runs
	done     int
	failed   []string // "step name: error" (plain text: step names and errors hold remote text)
	failedAt int      // first failed step, -1 if none
	retried  []string
	started  time.Time
}

func (r *runState) status(jobID string, final bool) string {
	s := fmt.Sprintf("⏳ Job `%s`: %d/%d steps", jobID, r.done+len(r.failed), r.total)
	if n := r.done + len(r.failed) - r.previous; n > 0 && !final {
		rate := float64(n) / time.Since(r.started).Seconds()
		eta := time.Duration(float64(r.total-r.done-len(r.failed)) / rate * float64(time.Second))
		s += fmt.Sprintf(", %.1f/s, about %s left", rate, eta.Round(time.Second))
	}
	if len(r.failed) > 0 {
		last := r.failed[len(r.failed)-1]
		s += fmt.Sprintf(", %d failed (last: %s)", len(r.failed), mdtext.Text(last[strings.Index(last, ": ")+2:]))
	}
	return s + "."
}

func (m *Manager) run(ctx context.Context, req Requester, job *store.Job, op operation, plan *Plan, prior []store.Step) {
	log := m.log.With().Str("job_id", job.ID).Str("kind", job.Kind).Logger()
	ctx = log.WithContext(ctx)
	m.audit(ctx, job.ID, medicActor, "started")
	// The run ends only once its heartbeat has stopped writing: Wait (and whoever closes the
	// store after it) must not race a last beat.
	stopBeat, beatDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(beatDone)
		m.heartbeat(ctx, job.ID, stopBeat)
	}()
	defer func() {
		close(stopBeat)
		<-beatDone
	}()

	finished := map[int]bool{}
	before := map[int]string{} // steps that failed in an earlier run, with the error
	for _, s := range prior {
		switch s.State {
		case stepDone:
			finished[s.Idx] = true
		case stepFailed:
			before[s.Idx] = s.Error
		}
	}
	rs := &runState{total: len(plan.Steps), previous: len(finished), done: len(finished), failedAt: -1, started: time.Now()}
	notify := req.Notifier
	notify.Progress(ctx, job, rs.status(job.ID, false), false)
	lastEdit := time.Now()
	rep := &collector{say: func(md string) { notify.Say(ctx, md) }}

	runStep := func(idx int) bool {
		retry := false
		if msg, ok := before[idx]; ok {
			retry = true
			rs.mu.Lock()
			rs.retried = append(rs.retried, fmt.Sprintf("%s (failed before: %s)", plan.Steps[idx], msg))
			rs.mu.Unlock()
		} else if len(prior) > 0 {
			retry = m.wasStarted(prior, idx)
		}
		if err := m.store.SetStep(ctx, job.ID, idx, stepStarted, ""); err != nil {
			log.Err(err).Msg("Failed to record step start")
		}
		err := op.step(ctx, job.ID, idx, json.RawMessage(job.Args), plan, retry, rep)
		state, msg := stepDone, ""
		if err != nil {
			state, msg = stepFailed, err.Error()
			log.Warn().Err(err).Int("step", idx).Msg("Job step failed")
		}
		if err := m.store.SetStep(ctx, job.ID, idx, state, msg); err != nil {
			log.Err(err).Msg("Failed to record step")
		}
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if err != nil {
			rs.failed = append(rs.failed, fmt.Sprintf("%s: %s", plan.Steps[idx], msg))
			if rs.failedAt < 0 || idx < rs.failedAt {
				rs.failedAt = idx
			}
		} else {
			rs.done++
		}
		if time.Since(lastEdit) >= m.ProgressInterval {
			notify.Progress(ctx, job, rs.status(job.ID, false), false)
			lastEdit = time.Now()
		}
		return err == nil
	}

	stopped := false
	var notRun []string
	if op.order().StopsOnFailure() {
		for idx := range plan.Steps {
			if finished[idx] {
				continue
			}
			if stopped = m.stopRequested(job.ID); stopped {
				break
			}
			if !runStep(idx) {
				for next := idx + 1; next < len(plan.Steps); next++ {
					if !finished[next] {
						notRun = append(notRun, plan.Steps[next])
					}
				}
				break
			}
		}
	} else {
		sem := make(chan struct{}, op.order().workers())
		var wg sync.WaitGroup
		for idx := range plan.Steps {
			if finished[idx] {
				continue
			}
			if idx == len(plan.Steps)-1 && op.order().lastAfter {
				wg.Wait()
			}
			sem <- struct{}{}
			if stopped = m.stopRequested(job.ID); stopped {
				<-sem
				break
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				runStep(idx)
			}()
		}
		wg.Wait()
	}

	state := store.JobDone
	switch {
	case len(rs.failed) > 0:
		state = store.JobFailed
	case stopped:
		state = store.JobCancelled
	}
	op.finish(ctx, job.ID, state)
	if sum := op.summary(job.ID); sum != "" {
		rep.Note("%s", sum)
	}
	job.State = state
	job.Result = fmt.Sprintf("%d of %d steps done, %d failed", rs.done, rs.total, len(rs.failed))
	if state == store.JobFailed && op.order().StopsOnFailure() {
		job.Result = fmt.Sprintf("failed at step %d of %d (%s)", rs.failedAt+1, rs.total, plan.Steps[rs.failedAt])
	}
	if err := m.store.UpdateJob(ctx, job); err != nil {
		log.Err(err).Msg("Failed to save job state")
	}
	m.audit(ctx, job.ID, medicActor, "%s: %s", state, job.Result)
	if m.Observer != nil {
		m.Observer.RunEnded(job.Kind, state, time.Since(rs.started))
	}
	notify.Progress(ctx, job, rs.status(job.ID, true), true)
	notify.Report(ctx, job, m.report(job, plan, rs, stopped, notRun, rep.notes))
}

// wasStarted tells whether a step may have run in an earlier run: the job got past it or
// was cut off around it (a step finished later, or it is the first unfinished one).
func (m *Manager) wasStarted(prior []store.Step, idx int) bool {
	for _, s := range prior {
		if s.Idx >= idx {
			return true
		}
	}
	return false
}

func (m *Manager) report(job *store.Job, plan *Plan, rs *runState, stopped bool, notRun, notes []string) string {
	var b strings.Builder
	icon := map[string]string{store.JobDone: "✅", store.JobFailed: "❌", store.JobCancelled: "⏹"}[job.State]
	// Step names, errors and the result (which names a step) are plain text that may hold
	// other servers' names and answers: escaped. The plan's title is Markdown already.
	fmt.Fprintf(&b, "%s Job `%s` %s: **%s**. %s in %s.", icon, job.ID, job.State, plan.Title, mdtext.Text(job.Result),
		time.Since(rs.started).Round(time.Millisecond))
	if stopped {
		b.WriteString(" Stopped on request; the remaining steps were not run.")
	}
	if job.State == store.JobFailed && len(notRun) > 0 {
		fmt.Fprintf(&b, " The steps after it were not run: %s.", mdtext.Text(strings.Join(notRun, "; ")))
	}
	if job.State == store.JobFailed && rs.done == 0 {
		b.WriteString(" No step completed, so nothing was changed.")
	}
	for i, f := range rs.failed {
		if i == 10 {
			fmt.Fprintf(&b, "\n* … and %d more failures (`%sjob %s` lists the steps)", len(rs.failed)-10, m.Prefix, job.ID)
			break
		}
		fmt.Fprintf(&b, "\n* failed: %s", mdtext.Text(f))
	}
	for _, r := range rs.retried {
		fmt.Fprintf(&b, "\n* retried: %s", mdtext.Text(r))
	}
	if job.State == store.JobFailed {
		fmt.Fprintf(&b, "\n\nOnce the cause is fixed, `%sresume %s` re-plans and retries the failed and unfinished steps only; `%scancel %s` gives the job up.",
			m.Prefix, job.ID, m.Prefix, job.ID)
	}
	for _, n := range notes {
		fmt.Fprintf(&b, "\n\n%s", n)
	}
	return b.String()
}

// A running job's process writes a heartbeat every heartbeatEvery; a "running" job whose
// heartbeat is older than heartbeatStale has lost its process.
const (
	heartbeatEvery = 5 * time.Second
	heartbeatStale = 4 * heartbeatEvery
)

func heartbeatKey(jobID string) string { return "job_heartbeat:" + jobID }

// heartbeat keeps the job's heartbeat fresh until stop is closed. It names this process
// (proc.Self: boot ID and PID) and the time.
func (m *Manager) heartbeat(ctx context.Context, jobID string, stop <-chan struct{}) {
	beat := func() {
		_ = m.store.Set(ctx, heartbeatKey(jobID), fmt.Sprintf("%s %d", proc.Self(), time.Now().UnixMilli()))
	}
	beat()
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			beat()
		}
	}
}

// alive tells whether some medic process is running the job: its heartbeat names a process
// that is not gone (proc.ID.Gone: a PID alone is not enough, because in a container medic is
// PID 1 again after a quick restart) and is fresh.
func (m *Manager) alive(ctx context.Context, jobID string) bool {
	m.lock.Lock()
	mine := m.running[jobID]
	m.lock.Unlock()
	if mine {
		return true
	}
	v, err := m.store.Get(ctx, heartbeatKey(jobID))
	if err != nil || v == "" {
		return false
	}
	var boot string
	var pid int
	var ms int64
	if _, err = fmt.Sscan(v, &boot, &pid, &ms); err != nil {
		return false
	}
	who := proc.ID{Boot: boot, PID: pid}
	if who == proc.Self() || who.Gone() {
		return false // this process's, and it does not run the job any more; or a dead one's
	}
	return time.Since(time.UnixMilli(ms)) < heartbeatStale
}
