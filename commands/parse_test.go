package commands

import (
	"strings"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
		ok   bool
	}{
		{nil, 24 * time.Hour, true},
		{[]string{"--since", "7d"}, 7 * 24 * time.Hour, true},
		{[]string{"--since=90m"}, 90 * time.Minute, true},
		{[]string{"--since", "0d"}, 0, false},
		{[]string{"--since", "-1h"}, 0, false},
		{[]string{"--since", "7days"}, 0, false},
		{[]string{"--since"}, 0, false},
		{[]string{"7d"}, 0, false},
	} {
		got, err := parseSince(tc.args)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseSince(%q) = %s, %v", tc.args, got, err)
		}
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"--since", "7d", "--since=1h", "99999999999999999999d", "-3d"} {
		f.Add(s, "24h")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		d, err := parseSince([]string{a, b})
		if err == nil && d <= 0 {
			t.Fatalf("parseSince(%q, %q) = %s without error", a, b, d)
		}
	})
}

func TestTakeForceSchema(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rest string
		want bool
	}{
		{[]string{"!r:x"}, "!r:x", false},
		{[]string{"!r:x", "--force-schema"}, "!r:x", true},
		{[]string{"--force-schema", "!r:x", "--root", "$e"}, "!r:x --root $e", true},
		{[]string{"!r:x", "--force-schemas"}, "!r:x --force-schemas", false},
		{nil, "", false},
	} {
		ce := &Event{Args: tc.args}
		orig := strings.Join(tc.args, " ")
		got := takeForceSchema(ce)
		if got != tc.want || strings.Join(ce.Args, " ") != tc.rest {
			t.Errorf("takeForceSchema(%q) = %v, args %q; want %v, %q", tc.args, got, ce.Args, tc.want, tc.rest)
		}
		if strings.Join(tc.args, " ") != orig {
			t.Errorf("takeForceSchema changed the caller's slice: %q", tc.args)
		}
	}
}

func TestParseStateAudit(t *testing.T) {
	week := 7 * 24 * time.Hour
	for _, tc := range []struct {
		args []string
		want stateAuditArgs
		ok   bool
	}{
		{[]string{"!r:x"}, stateAuditArgs{room: "!r:x", since: week}, true},
		{[]string{"--all"}, stateAuditArgs{all: true, since: week}, true},
		{[]string{"--all", "--since", "24h"}, stateAuditArgs{all: true, since: 24 * time.Hour}, true},
		{[]string{"#a:x", "--since=2d"}, stateAuditArgs{room: "#a:x", since: 48 * time.Hour}, true},
		{nil, stateAuditArgs{}, false},
		{[]string{"!r:x", "--all"}, stateAuditArgs{}, false},
		{[]string{"!r:x", "!s:x"}, stateAuditArgs{}, false},
		{[]string{"--since", "7d"}, stateAuditArgs{}, false},
		{[]string{"--all", "--since"}, stateAuditArgs{}, false},
		{[]string{"--all", "--force"}, stateAuditArgs{}, false},
	} {
		got, err := parseStateAudit(tc.args)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseStateAudit(%q) = %+v, %v", tc.args, got, err)
		}
	}
}

func FuzzParseStateAudit(f *testing.F) {
	for _, s := range []string{"--all", "!r:x", "--since", "7d", "--since=1h", "#a:x"} {
		f.Add(s, "--since", "24h")
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		got, err := parseStateAudit([]string{a, b, c})
		if err == nil && (got.since <= 0 || got.all == (got.room != "")) {
			t.Fatalf("parseStateAudit(%q, %q, %q) = %+v without error", a, b, c, got)
		}
	})
}

func TestParseAftercareArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want AftercareArgs
		err  string
	}{
		{nil, AftercareArgs{}, ""},
		{[]string{"--offline"}, AftercareArgs{Offline: true}, ""},
		{[]string{"--online", "--since", "3d"}, AftercareArgs{Online: true, Since: 72 * time.Hour}, ""},
		{[]string{"--since=90m"}, AftercareArgs{Since: 90 * time.Minute}, ""},
		{[]string{"--offline", "--online"}, AftercareArgs{}, "exclude each other"},
		{[]string{"--offline", "--since", "1h"}, AftercareArgs{}, "for the online part"},
		{[]string{"--since"}, AftercareArgs{}, "unexpected argument"},
		{[]string{"--since", "-1h"}, AftercareArgs{}, "not a duration"},
		{[]string{"now"}, AftercareArgs{}, "unexpected argument"},
	} {
		got, err := ParseAftercareArgs(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

func FuzzParseAftercareArgs(f *testing.F) {
	for _, s := range []string{"--since", "--since=7d", "--offline", "--online", "-1h", "99999999999999999999d"} {
		f.Add(s, "24h")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := ParseAftercareArgs([]string{a, b})
		if err == nil && (got.Since < 0 || (got.Offline && got.Online)) {
			t.Fatalf("ParseAftercareArgs(%q, %q) = %+v without error", a, b, got)
		}
	})
}
