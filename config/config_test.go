package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"time"

	"maunium.net/go/mautrix/id"
)

func TestValidateNamesEachBadKey(t *testing.T) {
	cfg, err := Parse([]byte(`
homeserver: {url: "ftp://x", server_name: ""}
bot: {user_id: "medic", command_prefix: "! "}
admins: ["nobody"]
rooms: {admin: ["#alias:example.org"], adopt_admin_invites: false, allow_non_admins: ["eve"]}
database: {type: mysql}
synapse:
  database: "mysql://x"
  signing_key_path: /nonexistent/key
  logs: [{type: syslog}, {type: file}, {type: journald}]
  metrics_url: "127.0.0.1:9000/_synapse/metrics"
import:
  sources:
    old: {type: mysql, database: "x"}
    gone: {type: sqlite, database: /nonexistent/homeserver.db}
    empty: {type: postgres}
  chunk_size: -1
metrics: {listen: "9330", check_interval: 1s}
logging: {level: loud}
encryption: {enabled: false, require_verified_device: true}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("expected problems")
	}
	for _, key := range []string{
		"homeserver.url", "homeserver.server_name", "bot.user_id", "bot.password", "bot.command_prefix",
		"admins[0]", "rooms.admin[0]", "rooms.allow_non_admins[0]", "database.type", "synapse.database", "synapse.signing_key_path",
		"synapse.logs[0].type", "synapse.logs[1].path", "synapse.logs[2].unit", "synapse.metrics_url", "logging.level",
		"import.sources.old.type", "import.sources.gone.database", "import.sources.empty.database", "import.chunk_size",
		"encryption.enabled",
		"metrics.listen", "metrics.check_interval",
	} {
		if !strings.Contains(err.Error(), "\n  "+key+":") {
			t.Errorf("problem list does not name %s:\n%v", key, err)
		}
	}
}

// TestOutsider: who may read everything medic posts in a room.
func TestOutsider(t *testing.T) {
	cfg := &Config{Bot: Bot{UserID: "@medic:example.org"}, Admins: []id.UserID{"@admin:example.org"},
		Rooms: Rooms{AllowNonAdmins: []id.UserID{"@support:example.org"}}}
	for user, want := range map[id.UserID]bool{
		"@medic:example.org": false, "@admin:example.org": false, "@support:example.org": false,
		"@eve:example.org": true, "@admin:evil.example": true,
	} {
		if got := cfg.Outsider(user); got != want {
			t.Errorf("Outsider(%s) = %v, want %v", user, got, want)
		}
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := Parse([]byte("homeserver:\n  ulr: http://x\n"), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "ulr") {
		t.Fatalf("misspelled key not reported: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
homeserver: {url: "http://127.0.0.1:8008", server_name: "example.org"}
bot: {user_id: "@medic:example.org", password: "x"}
admins: ["@admin:example.org"]
`), "/etc/medic")
	if err != nil {
		t.Fatal(err)
	}
	if err = cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/etc/medic/data" || !strings.Contains(cfg.Database.URI, "/etc/medic/data/medic.db") ||
		cfg.Bot.CommandPrefix != "!" || !cfg.Encryption.On() || !cfg.Rooms.Adopt() ||
		cfg.Metrics.Listen != "" || cfg.Metrics.Interval() != 5*time.Minute {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("homeserver: {url: http://x}\nadmins: [a]\n")
	f.Add("bot: {user_id: \"@a:b\"}\nsynapse: {logs: [{type: file}]}\n")
	f.Add("{")
	f.Fuzz(func(t *testing.T, raw string) {
		cfg, err := Parse([]byte(raw), "/tmp")
		if err == nil {
			_ = cfg.Validate()
		}
	})
}

// TestExampleDocumentsEveryOption keeps config.example.yaml complete and loadable: it parses
// with unknown keys rejected, and every yaml key of Config appears in it.
func TestExampleDocumentsEveryOption(t *testing.T) {
	raw, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err = Parse(raw, t.TempDir()); err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	var walk func(tp reflect.Type, path string)
	walk = func(tp reflect.Type, path string) {
		for i := 0; i < tp.NumField(); i++ {
			f := tp.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			ft := f.Type
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if tag == "" { // inline (dbutil.Config embeds PoolConfig)
				walk(ft, path)
				continue
			}
			if tag == "ro_pool" || tag == "deadlock_detection" || tag == "conn_max_idle_time" || tag == "conn_max_lifetime" {
				continue // dbutil tuning knobs, documented by go.mau.fi/util
			}
			if !strings.Contains(string(raw), tag+":") {
				t.Errorf("config.example.yaml does not document %s%s", path, tag)
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
				walk(ft, path+tag+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

func TestHealthKeys(t *testing.T) {
	cfg, err := Parse([]byte(`
homeserver: {url: "http://127.0.0.1:8008", server_name: "example.org"}
bot: {user_id: "@medic:example.org", password: "x"}
admins: ["@admin:example.org"]
health:
  schedule: ["09:00", "25:00", "08:30:15"]
  timezone: Mars/Olympus
  rooms: ["#alias:example.org"]
  post: sometimes
  disks: [{name: media}]
  thresholds: {partial_join_after: soon, rejections_warn: 5, rejections_critical: 2, disk_warn_percent: 5, disk_critical_percent: 10}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("expected problems")
	}
	for _, key := range []string{"health.schedule[1]", "health.timezone", "health.rooms[0]", "health.post", "health.disks[0].path",
		"health.thresholds.partial_join_after", "health.thresholds.rejections_critical", "health.thresholds.disk_critical_percent"} {
		if !strings.Contains(err.Error(), "\n  "+key+":") {
			t.Errorf("problem list does not name %s:\n%v", key, err)
		}
	}
	if strings.Contains(err.Error(), "health.schedule[0]") || strings.Contains(err.Error(), "health.schedule[2]") {
		t.Errorf("valid times reported: %v", err)
	}
	if d, err := ParseTimeOfDay("08:30:15"); err != nil || d.String() != "8h30m15s" {
		t.Errorf("ParseTimeOfDay: %v %v", d, err)
	}
}
