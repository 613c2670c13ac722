package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/id"
)

// WriteConfig writes body as a medic config, dir/config.yaml, and returns its path.
func WriteConfig(t T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// BasicMedicConfig writes a medic config that knows hs1 only by its client API: the given bot
// account and hs1's admin as the admin, then extra (more YAML). It returns the config's path.
func (tb *Testbed) BasicMedicConfig(t T, dir string, bot id.UserID, password, extra string) string {
	t.Helper()
	h := tb.HS1
	return WriteConfig(t, dir, fmt.Sprintf(`
homeserver: {url: %q, server_name: %q}
bot: {user_id: %q, password: %q}
admins: [%q]
`, h.URL, h.Name, bot, password, h.UserID("admin"))+extra)
}

// MedicConfig writes a medic config for hs1 into dir (data in dir/data): the given bot
// account, hs1's admin as the admin, and Synapse's database, signing key and logs, with the
// testing-only federation switch on. It returns the config's path.
func (tb *Testbed) MedicConfig(t T, dir string, bot id.UserID, password string) string {
	t.Helper()
	return tb.medicConfig(t, dir, bot, password, AuthChecker(t), "", "")
}

// medicConfig is MedicConfig with the auth checker's path (empty: next to medic), more
// lines of the synapse section and more YAML after it.
func (tb *Testbed) medicConfig(t T, dir string, bot id.UserID, password, authChecker, synapseExtra, extra string) string {
	t.Helper()
	h := tb.HS1
	return tb.BasicMedicConfig(t, dir, bot, password, fmt.Sprintf(`data_dir: %s
synapse:
  database: %q
  signing_key_path: %q
  logs: [{type: file, path: %q}]
  restart_command: %q
%sfederation: {dangerously_allow_loopback_and_self_signed_testing_only: true}
unreject: {auth_checker: %q}
`, filepath.Join(dir, "data"), h.DSN, h.SigningKeyPath(), h.LogPath()+"*", tb.RestartCommand(h), synapseExtra, authChecker)+extra)
}

var restartCommandLine = regexp.MustCompile(`(?m)^  restart_command: .*$`)

// ClearRestartCommand empties the restart_command of a config MedicConfig wrote, so medic
// asks the admin to restart Synapse instead.
func ClearRestartCommand(t T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cleared := restartCommandLine.ReplaceAll(raw, []byte(`  restart_command: ""`))
	if string(cleared) == string(raw) {
		t.Fatal("the test config has no restart_command line to clear")
	}
	if err = os.WriteFile(path, cleared, 0o600); err != nil {
		t.Fatal(err)
	}
}

// ReplaceInConfig replaces text in a config file (e.g. the database DSN); it fails the test
// when the text is not there.
func ReplaceInConfig(t T, path, old, new string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), old) {
		t.Fatalf("the config has no %q to replace", old)
	}
	if err = os.WriteFile(path, []byte(strings.ReplaceAll(string(raw), old, new)), 0o600); err != nil {
		t.Fatal(err)
	}
}
