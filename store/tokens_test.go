package store_test

import (
	"context"
	"testing"

	"github.com/synapse-medic/medic/proc"
)

// A mint is recorded before the token exists, then completed; the record names the process.
func TestMintRecords(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	rec, err := st.BeginMint(ctx, "@u:x", "job1", proc.Self())
	if err != nil {
		t.Fatal(err)
	}
	all, err := st.AllMinted(ctx)
	if err != nil || len(all) != 1 || all[0].Token != "" || all[0].By != proc.Self() || all[0].UserID != "@u:x" {
		t.Fatalf("under way: %+v %v", all, err)
	}
	if err = st.SetMinted(ctx, rec, "tok"); err != nil {
		t.Fatal(err)
	}
	if all, _ = st.AllMinted(ctx); len(all) != 1 || all[0].Token != "tok" || all[0].ID != rec {
		t.Fatalf("minted: %+v", all)
	}
	if err = st.DeleteMinted(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if all, _ = st.AllMinted(ctx); len(all) != 0 {
		t.Fatalf("after delete: %+v", all)
	}
}
