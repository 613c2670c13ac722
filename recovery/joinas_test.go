package recovery

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"

	"github.com/synapse-medic/medic/synapse/adminapi"
)

// The registration is what Synapse's appservice loader wants: every required key, url
// explicitly null (no transactions pushed), a non-exclusive namespace of exactly this
// server's users, not rate limited, random tokens.
func TestNewRegistration(t *testing.T) {
	a, err := NewRegistration("example.org")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewRegistration("example.org")
	var reg map[string]any
	if err = yaml.Unmarshal(a, &reg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "as_token", "hs_token", "sender_localpart"} {
		if s, _ := reg[k].(string); s == "" {
			t.Errorf("%s missing", k)
		}
	}
	if u, ok := reg["url"]; !ok || u != nil {
		t.Errorf("url must be present and null, got %v (present %v)", u, ok)
	}
	if reg["rate_limited"] != false {
		t.Errorf("rate_limited = %v", reg["rate_limited"])
	}
	if reg["sender_localpart"] == "medic" {
		t.Errorf("the sender is the bot's own account")
	}
	if reg["as_token"] == reg["hs_token"] {
		t.Errorf("as_token and hs_token are the same")
	}
	tokA, _ := LoadAppserviceToken(writeTemp(t, a))
	tokB, _ := LoadAppserviceToken(writeTemp(t, b))
	if tokA == "" || tokA == tokB {
		t.Errorf("tokens not random: %q, %q", tokA, tokB)
	}
	users := reg["namespaces"].(map[string]any)["users"].([]any)
	ns := users[0].(map[string]any)
	if ns["exclusive"] != false {
		t.Errorf("the namespace is exclusive")
	}
	re := regexp.MustCompile("^" + ns["regex"].(string) + "$")
	for user, want := range map[string]bool{"@alice:example.org": true, "@medic:example.org": true, "@alice:example.org.evil": false, "@alice:exampleXorg": false} {
		if re.MatchString(user) != want {
			t.Errorf("namespace matches %s: %v", user, !want)
		}
	}
	if _, err = NewRegistration(""); err == nil {
		t.Errorf("a registration without a server name")
	}
}

func writeTemp(t *testing.T, raw []byte) string {
	path := filepath.Join(t.TempDir(), "reg.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeAuth answers the calls that decide the join method.
type fakeAuth struct {
	asToken     string // the token Synapse knows for the appservice ("" none)
	loginAsUser bool   // the login-as-user admin API exists
	mas         bool   // auth metadata names an issuer
	logins      int    // login-as-user calls that would have minted a token
}

func (f *fakeAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case r.URL.Path == "/_matrix/client/v3/account/whoami":
		if token != "admin" && (f.asToken == "" || token != f.asToken) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown token"}`))
			return
		}
		_, _ = w.Write([]byte(`{"user_id": "@medic-rejoin:example.org"}`))
	case r.URL.Path == "/_matrix/client/v1/auth_metadata" && f.mas:
		_, _ = w.Write([]byte(`{"issuer": "https://auth.example.org/"}`))
	case strings.HasPrefix(r.URL.Path, "/_synapse/admin/v1/users/") && strings.HasSuffix(r.URL.Path, "/login") && f.loginAsUser:
		if strings.Contains(r.URL.Path, "@medic:example.org") || strings.Contains(r.URL.Path, "%40medic%3Aexample.org") {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errcode": "M_UNKNOWN", "error": "Cannot use admin API to login as self"}`))
			return
		}
		f.logins++
		_, _ = w.Write([]byte(`{"access_token": "minted"}`))
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}`))
	}
}

func TestChooseJoinMethod(t *testing.T) {
	reg, err := NewRegistration("example.org")
	if err != nil {
		t.Fatal(err)
	}
	regPath := writeTemp(t, reg)
	asToken, _ := LoadAppserviceToken(regPath)
	for _, tc := range []struct {
		name         string
		joinAs       string
		registration bool
		fake         fakeAuth
		want         string // kind, or "none" for NoJoinMethodError, "error" for another error
	}{
		{"auto, appservice works", JoinAuto, true, fakeAuth{asToken: asToken, loginAsUser: true}, JoinAppservice},
		{"auto, appservice not loaded by Synapse", JoinAuto, true, fakeAuth{loginAsUser: true}, JoinLoginAsUser},
		{"auto, no appservice configured", JoinAuto, false, fakeAuth{loginAsUser: true}, JoinLoginAsUser},
		{"auto, MAS without appservice", JoinAuto, false, fakeAuth{mas: true}, "none"},
		{"auto, MAS with appservice", JoinAuto, true, fakeAuth{asToken: asToken, mas: true}, JoinAppservice},
		{"auto, login-as-user missing", JoinAuto, true, fakeAuth{}, "none"},
		{"appservice forced, not loaded", JoinAppservice, true, fakeAuth{loginAsUser: true}, "error"},
		{"login-as-user forced, appservice works", JoinLoginAsUser, true, fakeAuth{asToken: asToken, loginAsUser: true}, JoinLoginAsUser},
		{"login-as-user forced, MAS", JoinLoginAsUser, false, fakeAuth{mas: true}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(&tc.fake)
			defer srv.Close()
			cli, _ := mautrix.NewClient(srv.URL, "@medic:example.org", "admin")
			r := &Rejoiner{Admin: adminapi.New(cli), HomeserverURL: srv.URL, ServerName: "example.invalid", BotUser: "@medic:example.org", JoinAs: tc.joinAs}
			if tc.registration {
				r.Registration = regPath
			}
			m, err := r.ChooseJoinMethod(context.Background())
			var none *NoJoinMethodError
			switch {
			case tc.want == "none":
				if !errors.As(err, &none) || !strings.Contains(err.Error(), "app_service_config_files") {
					t.Errorf("want the appservice steps, got %v / %+v", err, m)
				}
			case tc.want == "error":
				if err == nil || errors.As(err, &none) {
					t.Errorf("want an error that is not the steps, got %v / %+v", err, m)
				}
			case err != nil:
				t.Errorf("want %s, got %v", tc.want, err)
			case m.Kind != tc.want || m.Why == "":
				t.Errorf("want %s, got %+v", tc.want, m)
			}
			if tc.fake.logins > 0 {
				t.Errorf("deciding the method minted %d token(s)", tc.fake.logins)
			}
		})
	}
}

// FuzzParseRegistrationToken: any file content gives a token or an error, never a panic, and
// a token never carries whitespace into an Authorization header.
func FuzzParseRegistrationToken(f *testing.F) {
	reg, _ := NewRegistration("example.org")
	f.Add(reg)
	f.Add([]byte("as_token: abc\nurl: null\n"))
	f.Add([]byte("as_token: [1, 2]\n"))
	f.Add([]byte("as_token: \"a b\"\n"))
	f.Add([]byte("{{{"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		token, err := parseRegistrationToken(raw)
		if err == nil && (token == "" || strings.ContainsAny(token, " \t\r\n")) {
			t.Fatalf("token %q accepted", token)
		}
	})
}
