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
