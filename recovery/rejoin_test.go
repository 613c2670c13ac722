package recovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/synapse-medic/medic/store/storetest"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// fakeLogin is the part of Synapse a puppet join talks to: login-as-user with a validity,
// a join that is rate limited a number of times, and logout.
type fakeLogin struct {
	mu       sync.Mutex
	limited  int                  // joins answered 429 before one succeeds
	until    map[string]time.Time // token → valid until
	loggedIn map[string]bool
	minted   []string
	bad      []string // joins made with an expired or logged-out token
}

func (f *fakeLogin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case strings.HasPrefix(r.URL.Path, "/_synapse/admin/v1/users/"):
		var req struct {
			ValidUntil int64 `json:"valid_until_ms"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		t := fmt.Sprintf("t%d", len(f.minted)+1)
		f.minted = append(f.minted, t)
		f.until[t], f.loggedIn[t] = time.UnixMilli(req.ValidUntil), true
		_, _ = fmt.Fprintf(w, `{"access_token": %q}`, t)
	case strings.HasSuffix(r.URL.Path, "/logout"):
		delete(f.loggedIn, token)
		_, _ = w.Write([]byte(`{}`))
	case strings.Contains(r.URL.Path, "/join/"):
		if !f.loggedIn[token] || time.Now().After(f.until[token]) {
			f.bad = append(f.bad, token)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode": "M_UNKNOWN_TOKEN", "error": "expired or logged out"}`))
			return
		}
		if f.limited > 0 {
			f.limited--
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 250}`))
			return
		}
		_, _ = w.Write([]byte(`{"room_id": "!r:x"}`))
	default:
		http.NotFound(w, r)
	}
}

// A join that keeps being rate limited goes on with a fresh token before its token expires;
// each token is logged out and none is used past its lifetime.
func TestPuppetJoinRenewsToken(t *testing.T) {
	lifetime, renewal := tokenLifetime, tokenRenewal
	tokenLifetime, tokenRenewal = 1500*time.Millisecond, 600*time.Millisecond
	t.Cleanup(func() { tokenLifetime, tokenRenewal = lifetime, renewal })

	fake := &fakeLogin{limited: 10, until: map[string]time.Time{}, loggedIn: map[string]bool{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	cli, err := mautrix.NewClient(srv.URL, "@medic:x", "admin-token")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := storetest.Open(t)
	r := &Rejoiner{Admin: adminapi.New(cli), Store: st, HomeserverURL: srv.URL}

	if err = r.puppetJoin(context.Background(), nil, "job1", "!r:x", "@u:x", []string{"x"}); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.minted) < 2 {
		t.Errorf("the join retried for %d tokens' worth with one token", len(fake.minted))
	}
	if len(fake.bad) > 0 {
		t.Errorf("joins with expired or logged-out tokens: %v", fake.bad)
	}
	if len(fake.loggedIn) > 0 {
		t.Errorf("tokens not logged out: %v", fake.loggedIn)
	}
	if left, _ := st.AllMinted(context.Background()); len(left) > 0 {
		t.Errorf("tokens still recorded: %+v", left)
	}
}
