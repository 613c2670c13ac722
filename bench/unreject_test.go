package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/testbed"
)

// The unreject bench (P4): a room whose rejected power-levels event took N later events down
// with it, generated in a scratch database with Synapse's real schema. Every event is really
// signed (hs1's key), so the plan verifies them all. The child process does what a job does:
// the plan at proposal ("plan"), then, once approved, the re-plan that checks for drift and
// the transaction ("run" is both), in one process as in medic, so its peak RSS is theirs alone
// (the checker's is reported separately).
const (
	benchChainEnv   = "MEDIC_BENCH_CHAIN"
	benchChildEnv   = "MEDIC_BENCH_UNREJECT_CHILD"
	benchRoomVer    = "10"
	benchChainRoom  = "!benchchain:hs1.test:8481"
	benchMessageTpl = `{"type":"m.room.message","sender":%q,"room_id":%q,"content":{"msgtype":"m.text","body":"lost message %d"},"auth_events":[%q,%q,%q],"prev_events":[%q],"depth":4,"origin_server_ts":%d}`
)

// craftStream signs event templates with craftevent and calls fn for each result, in order.
func craftStream(b *testing.B, tb *testbed.Testbed, templates func(w *bufio.Writer) error, fn func(eventID string, pdu []byte) error) {
	cmd := exec.Command(testbed.CraftEventBinary(b), tb.HS1.Name, tb.HS1.SigningKeyPath(), benchRoomVer)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		w := bufio.NewWriterSize(stdin, 1<<20)
		if err := templates(w); err != nil {
			b.Error(err)
		}
		_ = w.Flush()
		_ = stdin.Close()
	}()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var res struct {
			EventID string          `json:"event_id"`
			PDU     json.RawMessage `json:"pdu"`
		}
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			b.Fatal(err)
		}
		if err := fn(res.EventID, res.PDU); err != nil {
			b.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
}

type benchRow struct {
	eventID, typ, stateKey string
	pdu                    []byte
	depth                  int64
	rejected               bool
}

func BenchmarkUnrejectChain(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv(benchChainEnv)); err == nil && v > 0 {
		n = v
	}
	tb := testbed.Get(b)
	ctx := context.Background()
	dsn := testbed.ScratchDB(b, tb.HS1)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	sender := tb.HS1.UserID("admin").String()
	start := time.Now()

	// create → member → power levels (the root, rejected) → n messages citing it (rejected).
	var rows []benchRow
	add := func(typ, stateKey string, depth int64, rejected bool) func(string, []byte) error {
		return func(eventID string, pdu []byte) error {
			rows = append(rows, benchRow{eventID, typ, stateKey, pdu, depth, rejected})
			return nil
		}
	}
	ts := time.Now().UnixMilli() - int64(n) - 1000
	one := func(tpl string, typ, sk string, depth int64, rejected bool) string {
		craftStream(b, tb, func(w *bufio.Writer) error { _, err := w.WriteString(tpl); return err }, add(typ, sk, depth, rejected))
		return rows[len(rows)-1].eventID
	}
	create := one(fmt.Sprintf(`{"type":"m.room.create","state_key":"","sender":%q,"room_id":%q,"content":{"creator":%q,"room_version":%q},"auth_events":[],"prev_events":[],"depth":1,"origin_server_ts":%d}`,
		sender, benchChainRoom, sender, benchRoomVer, ts), "m.room.create", "", 1, false)
	member := one(fmt.Sprintf(`{"type":"m.room.member","state_key":%q,"sender":%q,"room_id":%q,"content":{"membership":"join"},"auth_events":[%q],"prev_events":[%q],"depth":2,"origin_server_ts":%d}`,
		sender, sender, benchChainRoom, create, create, ts+1), "m.room.member", sender, 2, false)
	pl := one(fmt.Sprintf(`{"type":"m.room.power_levels","state_key":"","sender":%q,"room_id":%q,"content":{"users":{%q:100},"users_default":0,"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0,"events":{"m.room.name":60}},"auth_events":[%q,%q],"prev_events":[%q],"depth":3,"origin_server_ts":%d}`,
		sender, benchChainRoom, sender, create, member, member, ts+2), "m.room.power_levels", "", 3, true)

	// Stream the chain straight into the scratch database.
	copyRows := func(rs []benchRow, firstStream int64) {
		evRows := make([][]any, len(rs))
		jsRows := make([][]any, len(rs))
		var rejRows [][]any
		for i, r := range rs {
			var sk, reason any
			if r.typ != "m.room.message" {
				sk = r.stateKey
			}
			if r.rejected {
				reason = "auth_error"
				rejRows = append(rejRows, []any{r.eventID, "auth_error", fmt.Sprint(ts)})
			}
			evRows[i] = []any{firstStream + int64(i), r.depth, r.eventID, r.typ, benchChainRoom, true, false, r.depth, ts, ts, sender, "master", sk, reason}
			jsRows[i] = []any{r.eventID, benchChainRoom, "{}", string(r.pdu), int64(3)}
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"events"}, []string{"stream_ordering", "topological_ordering", "event_id", "type", "room_id",
			"processed", "outlier", "depth", "origin_server_ts", "received_ts", "sender", "instance_name", "state_key", "rejection_reason"}, pgx.CopyFromRows(evRows)); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"event_json"}, []string{"event_id", "room_id", "internal_metadata", "json", "format_version"}, pgx.CopyFromRows(jsRows)); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"rejections"}, []string{"event_id", "reason", "last_check"}, pgx.CopyFromRows(rejRows)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err = conn.Exec(ctx, `INSERT INTO rooms (room_id, is_public, creator, room_version) VALUES ($1, false, $2, $3)`, benchChainRoom, sender, benchRoomVer); err != nil {
		b.Fatal(err)
	}
	copyRows(rows, 1)
	var batch []benchRow
	next := int64(len(rows) + 1)
	craftStream(b, tb, func(w *bufio.Writer) error {
		for i := 0; i < n; i++ {
			if _, err := fmt.Fprintf(w, benchMessageTpl, sender, benchChainRoom, i, create, pl, member, pl, ts+3+int64(i)); err != nil {
				return err
			}
		}
		return nil
	}, func(eventID string, pdu []byte) error {
		batch = append(batch, benchRow{eventID, "m.room.message", "", pdu, 4, true})
		if len(batch) == 10_000 {
			copyRows(batch, next)
			next += int64(len(batch))
			batch = batch[:0]
		}
		return nil
	})
	copyRows(batch, next)
	if _, err = conn.Exec(ctx, `ANALYZE events; ANALYZE event_json; ANALYZE rejections`); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated and signed a chain of %d rejected events in %s", n+1, time.Since(start).Round(time.Millisecond))

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		child := exec.Command(os.Args[0], "-test.run", "^TestUnrejectBenchChild$", "-test.bench", "^$")
		child.Env = append(os.Environ(), benchChildEnv+"=1", "MEDIC_TESTBED_LOCK_HELD=1", "MEDIC_BENCH_DSN="+dsn, "MEDIC_BENCH_KEY="+tb.HS1.SigningKeyPath(),
			"MEDIC_BENCH_SERVER="+tb.HS1.Name, "MEDIC_BENCH_CHECKER="+testbed.AuthChecker(b))
		out, err := child.CombinedOutput()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		var planS, replanS, stepS, rssMB, checkerMB float64
		var unrejected, reused int
		for _, line := range strings.Split(string(out), "\n") {
			if _, err := fmt.Sscanf(strings.TrimSpace(line), "RESULT unrejected=%d plan_s=%f replan_s=%f reused=%d step_s=%f peak_rss_mb=%f checker_peak_rss_mb=%f",
				&unrejected, &planS, &replanS, &reused, &stepS, &rssMB, &checkerMB); err == nil {
				break
			}
		}
		if unrejected != n+1 {
			b.Fatalf("the plan un-rejects %d of %d events:\n%s", unrejected, n+1, out)
		}
		runS := replanS + stepS
		load, _ := os.ReadFile("/proc/loadavg")
		fmt.Printf("unreject: chain of %d events: plan %.2f s + run %.2f s (re-plan at approval %.2f s, verification reused: %v; transaction %.2f s) = %.2f s, "+
			"peak RSS medic %.1f MB, checker %.1f MB (targets: plan + run < 10 s, < 100 MB; load average %s)\n",
			unrejected, planS, runS, replanS, reused == 1, stepS, planS+runS, rssMB, checkerMB, strings.Join(strings.Fields(string(load))[:3], " "))
		b.ReportMetric(planS, "plan_s")
		b.ReportMetric(runS, "run_s")
		b.ReportMetric(replanS, "replan_s")
		b.ReportMetric(planS+runS, "total_s")
		b.ReportMetric(rssMB, "peak_rss_MB")
		b.ReportMetric(checkerMB, "checker_peak_rss_MB")
	}
}

// TestUnrejectBenchChild is the benchmark's child process: it plans !unreject on the scratch
// room, plans again as the approval does, runs the database step and prints its figures.
// Skipped unless the bench runs it.
func TestUnrejectBenchChild(t *testing.T) {
	if os.Getenv(benchChildEnv) == "" {
		t.Skip("run by BenchmarkUnrejectChain")
	}
	ctx := context.Background()
	db, err := synapse.OpenDB(ctx, os.Getenv("MEDIC_BENCH_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u := &recovery.Unrejecter{DB: db, ServerName: os.Getenv("MEDIC_BENCH_SERVER"), Checker: os.Getenv("MEDIC_BENCH_CHECKER"),
		OwnKey: func() (*federation.SigningKey, error) { return synapse.LoadSigningKey(os.Getenv("MEDIC_BENCH_KEY")) }}
	op := u.Operation()
	args := recovery.UnrejectArgs{Room: benchChainRoom}
	t0 := time.Now()
	plan, err := op.Plan(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	planDur := time.Since(t0)
	// Counted in place: decoding the plan's 100k IDs just to count them would add the
	// harness's own garbage to the peak RSS measured as medic's.
	if !gjson.ValidBytes(plan.Data) {
		t.Fatalf("the plan's data is not JSON: %.200s", plan.Data)
	}
	unrejected := int(gjson.GetBytes(plan.Data, "events.#").Int())
	// Approval: the manager plans again and runs only if the fingerprint is unchanged.
	t1 := time.Now()
	fresh, err := op.Plan(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	replanDur := time.Since(t1)
	if fresh.Fingerprint() != plan.Fingerprint() {
		t.Fatalf("the re-plan at approval differs: %s vs %s", fresh.Fingerprint(), plan.Fingerprint())
	}
	hits, _ := u.VerdictCacheStats()
	t2 := time.Now()
	if err = jobs.RunStep(ctx, op, "bench", args, plan, 0, nil); err != nil {
		t.Fatal(err)
	}
	stepDur := time.Since(t2)
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	fmt.Printf("RESULT unrejected=%d plan_s=%.3f replan_s=%.3f reused=%d step_s=%.3f peak_rss_mb=%.1f checker_peak_rss_mb=%.1f\n",
		unrejected, planDur.Seconds(), replanDur.Seconds(), hits, stepDur.Seconds(), float64(self.Maxrss)/1024, float64(children.Maxrss)/1024)
}
