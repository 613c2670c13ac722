package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/testbed"
)

// TestSetupErrorsSayWhatToDo: the errors a newcomer's setup hits first answer with what to do,
// not only with Synapse's or PostgreSQL's words.
func TestSetupErrorsSayWhatToDo(t *testing.T) {
	tb := testbed.Get(t)

	t.Run("bot not a server admin", func(t *testing.T) {
		bot := tb.Register(t, tb.HS1, testbed.UniqueName("plainbot"), false)
		cfg := tb.MedicConfig(t, t.TempDir(), bot.UserID, tb.UserPassword)
		out, code := execMedic(t, cfg, "!federation reset all")
		t.Logf("medic said:\n%s", out)
		if code == 0 || !strings.Contains(out, "not a Synapse server admin") || !strings.Contains(out, "UPDATE users SET admin = 1") {
			t.Errorf("exit %d; the answer does not say to make the bot a server admin", code)
		}
	})

	t.Run("database role without rights", func(t *testing.T) {
		role := testbed.UniqueName("norights")
		tb.HS1.Exec(t, `CREATE ROLE `+role+` LOGIN PASSWORD 'pw'`)
		t.Cleanup(func() { tb.HS1.Exec(t, `DROP ROLE IF EXISTS `+role) })
		u, err := url.Parse(tb.HS1.DSN)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(role, "pw")
		cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
		testbed.ReplaceInConfig(t, cfg, tb.HS1.DSN, u.String())
		out, code := execMedic(t, cfg, "!rejected")
		t.Logf("medic said:\n%s", out)
		if code == 0 || !strings.Contains(out, "lacks a right") || !strings.Contains(out, "permission denied") {
			t.Errorf("exit %d; the answer does not say the role lacks rights", code)
		}
		if strings.Contains(out, "pw@") || strings.Contains(out, ":pw") {
			t.Error("the role's password reached the output")
		}
	})
}
