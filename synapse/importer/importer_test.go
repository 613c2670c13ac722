package importer

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"
)

// hashed returns ev with its content hash set as a homeserver sets it.
func hashed(t *testing.T, ev map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := canonicaljson.CanonicalJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canonical)
	ev["hashes"] = map[string]string{"sha256": base64.RawStdEncoding.EncodeToString(sum[:])}
	ev["signatures"] = map[string]any{"old.example": map[string]string{"ed25519:a": "sig"}}
	ev["unsigned"] = map[string]any{"age_ts": 5}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestContentHashAndIdentity(t *testing.T) {
	js := hashed(t, map[string]any{"type": "m.room.name", "state_key": "", "sender": "@a:old.example", "depth": 7,
		"room_id": "!r:old.example", "prev_events": []string{"$p"}, "auth_events": []string{"$a"},
		"origin_server_ts": 1700000000000, "content": map[string]any{"name": "renamed", "n": 1.5}})
	if !contentHashMatches(js) {
		t.Fatalf("a correctly hashed event does not verify: %s", js)
	}
	// Unsigned and signatures are outside the hash: changing them is not a different event.
	resigned := strings.Replace(js, `"sig"`, `"other"`, 1)
	idA, okA, err := identity(js)
	if err != nil {
		t.Fatal(err)
	}
	idB, okB, err := identity(resigned)
	if err != nil || idA != idB || !okB || !okA {
		t.Fatalf("a copy differing only in signatures counts as different: %v %v %v", err, okA, okB)
	}
	// Content edited in a database, hashes left alone: same identity fields, but the hash
	// no longer matches, so the two copies conflict.
	tampered := strings.Replace(js, `"renamed"`, `"tampered"`, 1)
	if contentHashMatches(tampered) {
		t.Fatal("tampered content still verifies")
	}
	idC, okC, _ := identity(tampered)
	if idC != idA || okC {
		t.Fatalf("tampered copy: identity equal %v, hash ok %v; want equal, false", idC == idA, okC)
	}
	for _, bad := range []string{``, `{}`, `{"hashes":{"sha256":"x"}}`, `[1]`, `{"hashes":1}`} {
		if contentHashMatches(bad) {
			t.Errorf("%q verifies", bad)
		}
	}
}
