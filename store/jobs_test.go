package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/synapse-medic/medic/proc"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/store/storetest"
)

func openStore(t *testing.T) *store.Store {
	st, _ := storetest.Open(t)
	return st
}

// The compare-and-set is what keeps two approvals (or an approval and a cancel) from both
// winning.
func insertJob(t *testing.T, st *store.Store, jobID string) *store.Job {
	t.Helper()
	job := &store.Job{ID: jobID, Kind: "test", Args: "{}", State: store.JobAwaiting, Plan: "{}",
		RequestedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute), ApprovalsNeeded: 1}
	if err := st.InsertJob(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	return job
}

func TestSetJobStateIfIsCompareAndSet(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	job := insertJob(t, st, "abc123")
	if ok, err := st.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobRunning); !ok || err != nil {
		t.Fatalf("first transition: %v %v", ok, err)
	}
	if ok, _ := st.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobCancelled); ok {
		t.Fatal("a second transition from the old state won")
	}
	got, _ := st.GetJob(ctx, job.ID)
	if got.State != store.JobRunning {
		t.Fatalf("state %s", got.State)
	}
	if missing, err := st.GetJob(ctx, "nosuch"); missing != nil || err != nil {
		t.Fatalf("unknown job: %v %v", missing, err)
	}
}

func TestApprovalsAreDistinct(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	insertJob(t, st, "job1")
	for _, u := range []string{"@a:x", "@a:x", "@b:x"} {
		if _, err := st.AddApproval(ctx, "job1", u); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := st.Approvals(ctx, "job1")
	if len(got) != 2 || got[0] != "@a:x" || got[1] != "@b:x" {
		t.Fatalf("approvers %v", got)
	}
}

func TestStepsUpsert(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	insertJob(t, st, "j")
	_ = st.SetStep(ctx, "j", 1, "failed", "boom")
	_ = st.SetStep(ctx, "j", 0, "done", "")
	_ = st.SetStep(ctx, "j", 1, "done", "")
	steps, err := st.Steps(ctx, "j")
	if err != nil || len(steps) != 2 || steps[1].State != "done" || steps[1].Error != "" {
		t.Fatalf("steps %+v %v", steps, err)
	}
}

// TestAdoptedRooms: who adopted a room and when is kept, and a room can be forgotten.
func TestAdoptedRooms(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	before := time.Now().Add(-time.Second)
	if err := st.AddAdminRoom(ctx, "!a:example.org", "@admin:example.org"); err != nil {
		t.Fatal(err)
	}
	rooms, err := st.AdoptedRooms(ctx)
	if err != nil || len(rooms) != 1 || rooms[0].RoomID != "!a:example.org" || rooms[0].InvitedBy != "@admin:example.org" || rooms[0].AddedAt.Before(before) {
		t.Fatalf("adopted rooms: %+v (%v)", rooms, err)
	}
	for _, want := range []bool{true, false} {
		if removed, err := st.RemoveAdminRoom(ctx, "!a:example.org"); err != nil || removed != want {
			t.Fatalf("remove: %v (%v), want %v", removed, err, want)
		}
	}
	if ids, err := st.AdminRooms(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("after remove: %v (%v)", ids, err)
	}
}

// TestCounts: jobs counted by kind and state, and the login-as-user tokens not logged out.
func TestCounts(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	insertJob(t, st, "a1")
	insertJob(t, st, "a2")
	failed := insertJob(t, st, "a3")
	failed.State = store.JobFailed
	if err := st.UpdateJob(ctx, failed); err != nil {
		t.Fatal(err)
	}
	counts, err := st.JobCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.JobCount{{Kind: "test", State: store.JobAwaiting, Count: 2}, {Kind: "test", State: store.JobFailed, Count: 1}}
	if len(counts) != 2 || counts[0] != want[0] || counts[1] != want[1] {
		t.Fatalf("counts %+v, want %+v", counts, want)
	}
	var recs []string
	for range 2 {
		rec, err := st.BeginMint(ctx, "@u:x", "a1", proc.Self())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if err = st.DeleteMinted(ctx, recs[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := st.CountMinted(ctx); n != 1 || err != nil {
		t.Fatalf("minted tokens outstanding: %d, %v", n, err)
	}
}
