package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/testbed"
)

// The defaults of state.budget and state.workers (config.example.yaml).
const (
	stateBudget  = 2 * time.Minute
	stateWorkers = 8
)

// BenchmarkStateAudit times `!state audit --all` over 200 rooms (MEDIC_BENCH_STATE_ROOMS)
// with remote members: public rooms on hs2 that alice@hs1 joined, created once and reused by
// later runs on the same testbed. Each room costs the audit its current state from Synapse's
// database and three signed federation requests to hs2 (timestamp_to_event, state_ids, the
// latest event when Synapse lacks it). It prints the wall time against the budget.
func BenchmarkStateAudit(b *testing.B) {
	tb := testbed.Get(b)
	ctx := context.Background()
	n := 200
	if v, err := strconv.Atoi(os.Getenv("MEDIC_BENCH_STATE_ROOMS")); err == nil && v > 0 {
		n = v
	}
	db, err := synapse.OpenDB(ctx, tb.HS1.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	existing, err := db.AuditRooms(ctx, n)
	if err != nil {
		b.Fatal(err)
	}
	if need := n - len(existing); need > 0 {
		start := time.Now()
		fmt.Printf("state audit bench: creating %d room(s) on %s joined from %s…\n", need, tb.HS2.Name, tb.HS1.Name)
		remote := tb.Admin(b, tb.HS2)
		alice := tb.Login(b, tb.HS1, "alice", tb.UserPassword)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := range need {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				resp, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("state bench %d", i)})
				if err != nil {
					b.Error(err)
					return
				}
				testbed.JoinVia(b, alice, resp.RoomID, tb.HS2.Name)
			}()
		}
		wg.Wait()
		if b.Failed() {
			return
		}
		// room_stats_current is updated by Synapse in the background.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			if existing, err = db.AuditRooms(ctx, n); err != nil {
				b.Fatal(err)
			} else if len(existing) >= n || time.Now().After(deadline) {
				break
			}
		}
		fmt.Printf("state audit bench: %d room(s) ready in %s\n", len(existing), time.Since(start).Round(time.Second))
	}
	sa := &diagnose.StateAuditor{DB: db, ServerName: tb.HS1.Name, Servers: 2,
		Federation: sync.OnceValues(func() (*federation.Client, error) {
			return synapse.NewFederationClient(tb.HS1.Name, tb.HS1.SigningKeyPath(), true)
		})}
	b.ResetTimer()
	var total time.Duration
	for i := range b.N {
		rep, err := sa.AuditAll(ctx, n, stateBudget, stateWorkers)
		if err != nil {
			b.Fatal(err)
		}
		diverging, failed := rep.Counts()
		total += rep.Took
		fmt.Printf("state audit run %d/%d: %d of %d room(s) in %s (%s per room, %d workers; budget %s), %d not audited, %d diverge, %d not compared\n",
			i+1, b.N, len(rep.Rooms), rep.Considered, rep.Took.Round(time.Millisecond),
			(rep.Took / time.Duration(max(len(rep.Rooms), 1))).Round(time.Millisecond), stateWorkers, stateBudget, len(rep.Skipped), diverging, failed)
	}
	fmt.Printf("state audit: %s per audit of %d rooms over %d run(s) (budget %s)\n", (total / time.Duration(b.N)).Round(time.Millisecond), n, b.N, stateBudget)
}
