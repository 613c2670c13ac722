// Package config loads and validates medic's YAML configuration.
//
// Every option is documented in config.example.yaml at the repository root; Validate names
// each bad key with its full dotted path so `medic check-config` can point at it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"
)

type Config struct {
	Homeserver Homeserver `yaml:"homeserver"`
	Bot        Bot        `yaml:"bot"`
	// Admins are the only users whose commands, reactions and invites the bot acts on.
	Admins []id.UserID `yaml:"admins"`
	Rooms  Rooms       `yaml:"rooms"`
	// DataDir holds files the bot creates for itself: the pickle key, the recovery key, and
	// the default SQLite database.
	DataDir    string        `yaml:"data_dir"`
	Database   dbutil.Config `yaml:"database"`
	Encryption Encryption    `yaml:"encryption"`
	Synapse    Synapse       `yaml:"synapse"`
	Federation Federation    `yaml:"federation"`
	Unreject   Unreject      `yaml:"unreject"`
	Jobs       Jobs          `yaml:"jobs"`
	Health     Health        `yaml:"health"`
	Import     Import        `yaml:"import"`
	State      State         `yaml:"state"`
	Recover    Recover       `yaml:"recover"`
	Metrics    Metrics       `yaml:"metrics"`
	Logging    Logging       `yaml:"logging"`
}

// Metrics configures the HTTP listener for monitoring: /healthz, /ready and Prometheus'
// /metrics.
type Metrics struct {
	// Listen is the address ("127.0.0.1:9330") the listener binds; empty: no listener.
	Listen string `yaml:"listen"`
	// CheckInterval is how often the health checks run for /metrics ("5m"), apart from the
	// scheduled report.
	CheckInterval string `yaml:"check_interval"`
}

// Interval returns metrics.check_interval as a duration (validated by Validate).
func (m Metrics) Interval() time.Duration { return Duration(m.CheckInterval) }

// State configures the state audit: !state audit --all and the daily state health check.
type State struct {
	// MaxRooms is how many rooms one audit of every room looks at, newest activity first.
	MaxRooms int `yaml:"max_rooms"`
	// Budget is how long `!state audit --all` may take; no room is started after it.
	Budget string `yaml:"budget"`
	// HealthBudget is the same for the health check (which must end within 60 s).
	HealthBudget string `yaml:"health_budget"`
	// HealthInterval is how often the health check audits; in between it repeats the last
	// audit's findings (the /metrics checks run every few minutes).
	HealthInterval string `yaml:"health_interval"`
	// Servers is how many other servers are asked per room; a difference counts only when
	// all that answer agree.
	Servers int `yaml:"servers"`
	// Workers is how many rooms are audited at once.
	Workers int `yaml:"workers"`
}

// Recover configures how !recover rejoins local users.
type Recover struct {
	// JoinAs is how medic acts as each user: appservice (the registration below), login_as_user
	// (Synapse's admin API; unavailable with MAS) or auto (the appservice when its token works,
	// else login-as-user).
	JoinAs string `yaml:"join_as"`
	// AppserviceRegistration is the registration file `medic appservice-registration` wrote
	// (and Synapse loads through app_service_config_files); medic reads its as_token.
	AppserviceRegistration string `yaml:"appservice_registration"`
	// PartialStateWait bounds how long a room's other users wait, after its first join, for
	// Synapse to fetch the room's full state ("10m").
	PartialStateWait string `yaml:"partial_state_wait"`
}

// Import configures !import history.
type Import struct {
	// Sources are other Synapse databases history may be imported from, by name.
	Sources map[string]ImportSource `yaml:"sources"`
	// ChunkSize is how many events one transaction imports (default 5000).
	ChunkSize int `yaml:"chunk_size"`
}

// ImportSource is another Synapse's database.
type ImportSource struct {
	// Type is postgres or sqlite.
	Type string `yaml:"type"`
	// Database is a PostgreSQL DSN, or the path of the SQLite file.
	Database string `yaml:"database"`
}

type Homeserver struct {
	// URL is where the bot reaches Synapse's client and admin APIs.
	URL string `yaml:"url"`
	// ServerName is the Matrix server name (the part after the colon in user IDs).
	ServerName string `yaml:"server_name"`
}

type Bot struct {
	UserID      id.UserID   `yaml:"user_id"`
	Password    string      `yaml:"password"`
	AccessToken string      `yaml:"access_token"`
	DeviceID    id.DeviceID `yaml:"device_id"`
	DisplayName string      `yaml:"displayname"`
	// CommandPrefix starts every command; "!" unless set.
	CommandPrefix string `yaml:"command_prefix"`
}

type Rooms struct {
	// Admin lists room IDs in which admins' commands are answered.
	Admin []id.RoomID `yaml:"admin"`
	// AdoptAdminInvites makes a room an admin room when a configured admin invites the bot
	// into it. Invites from anyone else are always ignored.
	AdoptAdminInvites *bool `yaml:"adopt_admin_invites"`
	// AllowNonAdmins are users who are no admins but may read everything medic posts in the
	// admin and report rooms they are in. Anyone else who is joined or invited there makes
	// medic post only summaries in that room.
	AllowNonAdmins []id.UserID `yaml:"allow_non_admins"`
}

func (r Rooms) Adopt() bool { return r.AdoptAdminInvites == nil || *r.AdoptAdminInvites }

// Outsider tells whether user, when joined to or invited into a room medic posts to, must
// not read details there: anyone but medic itself, the admins and rooms.allow_non_admins.
func (c *Config) Outsider(user id.UserID) bool {
	return user != c.Bot.UserID && !slices.Contains(c.Admins, user) && !slices.Contains(c.Rooms.AllowNonAdmins, user)
}

type Encryption struct {
	Enabled *bool `yaml:"enabled"`
	// PickleKeyFile holds the key that encrypts the bot's Olm account in its database.
	// Created (random, mode 0600) when missing.
	PickleKeyFile string `yaml:"pickle_key_file"`
	// RecoveryKeyFile is where the bot writes the recovery key of its cross-signing keys when
	// it first creates them, and reads it on later starts. Never logged, never sent to chat.
	RecoveryKeyFile string `yaml:"recovery_key_file"`
	// RequireEncrypted drops admins' messages and reactions that were not sent encrypted
	// (reactions from Element never are: approve with !approve then).
	RequireEncrypted bool `yaml:"require_encrypted"`
	// RequireVerifiedDevice drops admins' messages and reactions that do not come, encrypted,
	// from a device that is at least TOFU cross-signed (signed by a master key the bot has
	// seen).
	RequireVerifiedDevice bool `yaml:"require_verified_device"`
}

func (e Encryption) On() bool { return e.Enabled == nil || *e.Enabled }

type Synapse struct {
	// DatabaseDSN is Synapse's PostgreSQL database (for diagnosis and repairs).
	DatabaseDSN string `yaml:"database"`
	// SigningKeyPath is the file Synapse signs federation requests with.
	SigningKeyPath string `yaml:"signing_key_path"`
	// Logs are the places Synapse's logs can be read from.
	Logs []LogSource `yaml:"logs"`
	// RestartCommand restarts Synapse after repairs that need it (e.g. "systemctl restart
	// matrix-synapse"). Empty: the bot asks the admin to restart and waits.
	RestartCommand string `yaml:"restart_command"`
	// MetricsURL is Synapse's Prometheus endpoint (enable_metrics and a metrics listener in
	// homeserver.yaml), a second source for failing destinations: the servers listed in
	// Synapse's federation_metrics_domains whose PDUs stopped being delivered.
	MetricsURL string `yaml:"metrics_url"`
}

type LogSource struct {
	// Type is file (a path or glob, rotated and .gz files included), journald, or container.
	Type string `yaml:"type"`
	Path string `yaml:"path"`
	Unit string `yaml:"unit"`
}

// Unreject configures !unreject.
type Unreject struct {
	// AuthChecker is the medic-authcheck binary (built with GOEXPERIMENT=jsonv2, see the
	// Makefile). Empty: next to medic's executable, then $PATH.
	AuthChecker string `yaml:"auth_checker"`
}

type Federation struct {
	// DangerouslyAllowLoopbackAndSelfSignedTestingOnly lets medic connect to other servers on
	// loopback addresses and accept self-signed certificates (netguard.Policy.Testing). For
	// the local testbed only.
	DangerouslyAllowLoopbackAndSelfSignedTestingOnly bool `yaml:"dangerously_allow_loopback_and_self_signed_testing_only"`
}

type Jobs struct {
	// Approvals is how many distinct admins must approve a job (2: a two-person rule; the
	// requester may be one of them, once).
	Approvals int `yaml:"approvals"`
	// ExpireAfter is how long a plan waits for approval ("15m").
	ExpireAfter string `yaml:"expire_after"`
}

// Expiry returns jobs.expire_after as a duration (validated by Validate).
func (j Jobs) Expiry() time.Duration {
	d, _ := time.ParseDuration(j.ExpireAfter)
	return d
}

// Health configures health reports (!health and the scheduled report): when they are
// posted, where, and the thresholds each check uses.
type Health struct {
	// Schedule lists the times of day ("09:00", "17:30", "08:00:30") a report is posted.
	// Empty: no scheduled reports, only !health.
	Schedule []string `yaml:"schedule"`
	// Timezone of Schedule (an IANA name like Europe/Berlin); UTC unless set.
	Timezone string `yaml:"timezone"`
	// Rooms the scheduled report goes to; empty: every admin room.
	Rooms []id.RoomID `yaml:"rooms"`
	// Post is always, changed (a check's status or its findings changed since the last
	// posted report) or worsened (a check got worse or has new findings).
	Post string `yaml:"post"`
	// FederationAddress is where the federation self-test sends its signed request
	// ("host:port"); empty: wherever server-name resolution (.well-known, SRV, 8448) leads,
	// as remote servers would.
	FederationAddress string `yaml:"federation_address"`
	// Disks are the file systems whose free space is checked (media store, database).
	Disks      []HealthDisk     `yaml:"disks"`
	Thresholds HealthThresholds `yaml:"thresholds"`
}

type HealthDisk struct {
	Name string `yaml:"name"`
	Path string `yaml:"path"`
}

// HealthThresholds are the limits from which a check warns or is critical.
type HealthThresholds struct {
	// DestinationWarnAfter / DestinationCriticalAfter: how long a destination has been failing.
	DestinationWarnAfter     string `yaml:"destination_warn_after"`
	DestinationCriticalAfter string `yaml:"destination_critical_after"`
	// RejectionsWarn / RejectionsCritical: new rejected events in one room since the last report.
	RejectionsWarn     int `yaml:"rejections_warn"`
	RejectionsCritical int `yaml:"rejections_critical"`
	// RejectionChainWalks: how many rooms (those with the most new rejections) get their
	// rejection chains walked in full for the report; the others are only probed for a chain.
	RejectionChainWalks int `yaml:"rejection_chain_walks"`
	// PartialJoinAfter: a room still partially joined after this long is stuck.
	PartialJoinAfter string `yaml:"partial_join_after"`
	// ExtremitiesWarn / ExtremitiesCritical: forward extremities in one room.
	ExtremitiesWarn     int `yaml:"extremities_warn"`
	ExtremitiesCritical int `yaml:"extremities_critical"`
	// RoomStateWarn: estimated state_groups_state rows of one room.
	RoomStateWarn int64 `yaml:"room_state_warn"`
	// DatabaseWarnGB: database size.
	DatabaseWarnGB float64 `yaml:"database_warn_gb"`
	// DiskWarnPercent / DiskCriticalPercent: free space left on a checked file system.
	DiskWarnPercent     float64 `yaml:"disk_warn_percent"`
	DiskCriticalPercent float64 `yaml:"disk_critical_percent"`
	// SyncStaleAfter: medic's own sync is unhealthy when its last success is older.
	SyncStaleAfter string `yaml:"sync_stale_after"`
}

// Duration parses one of the threshold durations (validated by Validate).
func Duration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// Location returns health.timezone as a location (validated by Validate).
func (h Health) Location() *time.Location {
	loc, err := time.LoadLocation(h.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// ParseTimeOfDay parses "15:04" or "15:04:05" into an offset from midnight.
func ParseTimeOfDay(s string) (time.Duration, error) {
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second, nil
		}
	}
	return 0, fmt.Errorf("not a time of day like 09:00: %q", s)
}

type Logging struct {
	// Level is trace, debug, info, warn or error.
	Level string `yaml:"level"`
	// JSON prints one JSON object per line instead of the console format.
	JSON bool `yaml:"json"`
}

// Load reads a config file and fills defaults. Unknown keys are errors: a misspelled key
// that is silently ignored is how an option ends up "on" in someone's head only.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(raw, filepath.Dir(path))
}

// Parse decodes YAML config text; relative paths are resolved against baseDir.
func Parse(raw []byte, baseDir string) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	cfg.fillDefaults(baseDir)
	return &cfg, nil
}

func (c *Config) fillDefaults(baseDir string) {
	setDefault(&c.DataDir, "data")
	if !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(baseDir, c.DataDir)
	}
	if c.Database.Type == "" {
		c.Database.Type = "sqlite3-fk-wal"
		c.Database.URI = "file:" + filepath.Join(c.DataDir, "medic.db") + "?_txlock=immediate"
	}
	setDefault(&c.Database.MaxOpenConns, 5)
	setDefault(&c.Database.MaxIdleConns, 1)
	setDefault(&c.Encryption.PickleKeyFile, filepath.Join(c.DataDir, "pickle.key"))
	setDefault(&c.Encryption.RecoveryKeyFile, filepath.Join(c.DataDir, "recovery-key.txt"))
	setDefault(&c.Bot.CommandPrefix, "!")
	setDefault(&c.Bot.DisplayName, "Synapse Medic")
	setDefault(&c.Jobs.Approvals, 1)
	setDefault(&c.Jobs.ExpireAfter, "15m")
	setDefault(&c.Logging.Level, "info")
	h, th := &c.Health, &c.Health.Thresholds
	setDefault(&h.Timezone, "UTC")
	setDefault(&h.Post, "always")
	setDefault(&th.DestinationWarnAfter, "10m")
	setDefault(&th.DestinationCriticalAfter, "6h")
	setDefault(&th.PartialJoinAfter, "30m")
	setDefault(&th.SyncStaleAfter, "5m")
	setDefault(&th.RejectionsWarn, 1)
	setDefault(&th.RejectionsCritical, 10)
	setDefault(&th.RejectionChainWalks, 3)
	setDefault(&th.ExtremitiesWarn, 10)
	setDefault(&th.ExtremitiesCritical, 50)
	setDefault(&th.RoomStateWarn, 10_000_000)
	setDefault(&th.DatabaseWarnGB, 100)
	setDefault(&th.DiskWarnPercent, 15)
	setDefault(&th.DiskCriticalPercent, 5)
	setDefault(&c.Import.ChunkSize, 5000)
	setDefault(&c.State.MaxRooms, 200)
	setDefault(&c.State.Budget, "2m")
	setDefault(&c.State.HealthBudget, "40s")
	setDefault(&c.State.HealthInterval, "24h")
	setDefault(&c.State.Servers, 2)
	setDefault(&c.State.Workers, 8)
	setDefault(&c.Recover.JoinAs, "auto")
	setDefault(&c.Recover.PartialStateWait, "10m")
	if p := c.Recover.AppserviceRegistration; p != "" && !filepath.IsAbs(p) {
		c.Recover.AppserviceRegistration = filepath.Join(baseDir, p)
	}
	setDefault(&c.Metrics.CheckInterval, "5m")
	for name, src := range c.Import.Sources {
		if src.Type == "sqlite" && src.Database != "" && !filepath.IsAbs(src.Database) {
			src.Database = filepath.Join(baseDir, src.Database)
			c.Import.Sources[name] = src
		}
	}
}

// setDefault sets an option left at its zero value.
func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Problem is one bad key and why.
type Problem struct {
	Key    string
	Reason string
}

func (p Problem) String() string { return p.Key + ": " + p.Reason }

// Problems is every problem Validate found.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return "invalid config:\n  " + strings.Join(lines, "\n  ")
}

// Validate checks every option and returns all problems at once (nil when there are none).
func (c *Config) Validate() error {
	var ps Problems
	bad := func(key, reason string, args ...any) {
		ps = append(ps, Problem{Key: key, Reason: fmt.Sprintf(reason, args...)})
	}
	if u, err := url.Parse(c.Homeserver.URL); c.Homeserver.URL == "" {
		bad("homeserver.url", "required")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("homeserver.url", "must be an http(s) URL, got %q", c.Homeserver.URL)
	}
	if c.Homeserver.ServerName == "" {
		bad("homeserver.server_name", "required")
	}
	if _, server, err := c.Bot.UserID.Parse(); c.Bot.UserID == "" {
		bad("bot.user_id", "required")
	} else if err != nil {
		bad("bot.user_id", "not a Matrix user ID: %v", err)
	} else if c.Homeserver.ServerName != "" && server != c.Homeserver.ServerName {
		bad("bot.user_id", "must be on %s, the configured server_name", c.Homeserver.ServerName)
	}
	if c.Bot.Password == "" && c.Bot.AccessToken == "" {
		bad("bot.password", "set bot.password or bot.access_token")
	}
	if c.Bot.AccessToken != "" && c.Bot.DeviceID == "" && c.Encryption.On() {
		bad("bot.device_id", "required with bot.access_token when encryption is enabled")
	}
	if !c.Encryption.On() && (c.Encryption.RequireEncrypted || c.Encryption.RequireVerifiedDevice) {
		bad("encryption.enabled", "require_encrypted and require_verified_device need encryption: medic would ignore every command")
	}
	if strings.ContainsAny(c.Bot.CommandPrefix, " \t\n") {
		bad("bot.command_prefix", "must not contain whitespace")
	}
	if len(c.Admins) == 0 {
		bad("admins", "list at least one admin user ID")
	}
	for i, a := range c.Admins {
		if _, _, err := a.Parse(); err != nil {
			bad(fmt.Sprintf("admins[%d]", i), "not a Matrix user ID: %q", a)
		}
	}
	for i, r := range c.Rooms.Admin {
		if !strings.HasPrefix(string(r), "!") {
			bad(fmt.Sprintf("rooms.admin[%d]", i), "must be a room ID (starting with !), got %q", r)
		}
	}
	for i, u := range c.Rooms.AllowNonAdmins {
		if _, _, err := u.Parse(); err != nil {
			bad(fmt.Sprintf("rooms.allow_non_admins[%d]", i), "not a Matrix user ID: %q", u)
		}
	}
	if len(c.Rooms.Admin) == 0 && !c.Rooms.Adopt() {
		bad("rooms.admin", "no admin rooms and rooms.adopt_admin_invites is false: the bot could never be commanded")
	}
	switch c.Database.Type {
	case "sqlite3-fk-wal", "postgres":
	default:
		bad("database.type", "must be sqlite3-fk-wal or postgres, got %q", c.Database.Type)
	}
	if c.Database.Type == "postgres" && c.Database.URI == "" {
		bad("database.uri", "required for postgres")
	}
	if c.Synapse.DatabaseDSN != "" {
		if u, err := url.Parse(c.Synapse.DatabaseDSN); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			if !strings.Contains(c.Synapse.DatabaseDSN, "=") { // also accept key=value DSNs
				bad("synapse.database", "must be a postgres:// URL or a key=value DSN")
			}
		}
	}
	if c.Synapse.SigningKeyPath != "" {
		if _, err := os.Stat(c.Synapse.SigningKeyPath); err != nil {
			bad("synapse.signing_key_path", "cannot read: %v", errors.Unwrap(err))
		}
	}
	if c.Synapse.MetricsURL != "" {
		if u, err := url.Parse(c.Synapse.MetricsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("synapse.metrics_url", "must be an http(s) URL, e.g. http://127.0.0.1:9000/_synapse/metrics")
		}
	}
	for i, l := range c.Synapse.Logs {
		key := fmt.Sprintf("synapse.logs[%d]", i)
		switch l.Type {
		case "file", "container":
			if l.Path == "" {
				bad(key+".path", "required for type %s", l.Type)
			}
		case "journald":
			if l.Unit == "" {
				bad(key+".unit", "required for type journald (e.g. matrix-synapse)")
			}
		default:
			bad(key+".type", "must be file, journald or container, got %q", l.Type)
		}
	}
	if c.Jobs.Approvals < 1 || c.Jobs.Approvals > len(c.Admins) && len(c.Admins) > 0 {
		bad("jobs.approvals", "must be between 1 and the number of admins (%d)", len(c.Admins))
	}
	if d, err := time.ParseDuration(c.Jobs.ExpireAfter); err != nil || d <= 0 {
		bad("jobs.expire_after", "must be a positive duration like 15m, got %q", c.Jobs.ExpireAfter)
	}
	c.validateHealth(bad)
	for name, src := range c.Import.Sources {
		key := "import.sources." + name
		switch src.Type {
		case "postgres", "sqlite":
		default:
			bad(key+".type", "must be postgres or sqlite, got %q", src.Type)
		}
		if src.Database == "" {
			bad(key+".database", "required (a PostgreSQL DSN, or the SQLite file's path)")
		} else if src.Type == "sqlite" {
			if _, err := os.Stat(src.Database); err != nil {
				bad(key+".database", "cannot read: %v", errors.Unwrap(err))
			}
		}
	}
	if c.Import.ChunkSize < 1 || c.Import.ChunkSize > 100000 {
		bad("import.chunk_size", "must be between 1 and 100000, got %d", c.Import.ChunkSize)
	}
	c.validateState(bad)
	switch c.Recover.JoinAs {
	case "auto", "login_as_user":
	case "appservice":
		if c.Recover.AppserviceRegistration == "" {
			bad("recover.appservice_registration", "required with join_as: appservice (write one with `medic appservice-registration`)")
		}
	default:
		bad("recover.join_as", "must be auto, appservice or login_as_user, got %q", c.Recover.JoinAs)
	}
	if p := c.Recover.AppserviceRegistration; p != "" {
		if _, err := os.Stat(p); err != nil {
			bad("recover.appservice_registration", "cannot read: %v", errors.Unwrap(err))
		}
	}
	if d, err := time.ParseDuration(c.Recover.PartialStateWait); err != nil || d <= 0 {
		bad("recover.partial_state_wait", "must be a positive duration like 10m, got %q", c.Recover.PartialStateWait)
	}
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil || port == "" {
			bad("metrics.listen", "must be host:port like 127.0.0.1:9330, got %q", c.Metrics.Listen)
		}
	}
	if d, err := time.ParseDuration(c.Metrics.CheckInterval); err != nil || d < 10*time.Second {
		bad("metrics.check_interval", "must be a duration of at least 10s like 5m, got %q", c.Metrics.CheckInterval)
	}
	switch c.Logging.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("logging.level", "must be trace, debug, info, warn or error, got %q", c.Logging.Level)
	}
	if len(ps) == 0 {
		return nil
	}
	return ps
}

func (c *Config) validateState(bad func(key, reason string, args ...any)) {
	st := c.State
	if st.MaxRooms < 1 || st.MaxRooms > 100000 {
		bad("state.max_rooms", "must be between 1 and 100000, got %d", st.MaxRooms)
	}
	for key, v := range map[string]string{"state.budget": st.Budget, "state.health_budget": st.HealthBudget, "state.health_interval": st.HealthInterval} {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			bad(key, "must be a positive duration like 2m, got %q", v)
		}
	}
	if d := Duration(st.HealthBudget); d > 55*time.Second {
		bad("state.health_budget", "must be at most 55s (a health check ends within 60 s), got %q", st.HealthBudget)
	}
	if st.Servers < 1 || st.Servers > 10 {
		bad("state.servers", "must be between 1 and 10, got %d", st.Servers)
	}
	if st.Workers < 1 || st.Workers > 64 {
		bad("state.workers", "must be between 1 and 64, got %d", st.Workers)
	}
}

func (c *Config) validateHealth(bad func(key, reason string, args ...any)) {
	h := c.Health
	for i, s := range h.Schedule {
		if _, err := ParseTimeOfDay(s); err != nil {
			bad(fmt.Sprintf("health.schedule[%d]", i), "%v", err)
		}
	}
	if _, err := time.LoadLocation(h.Timezone); err != nil {
		bad("health.timezone", "unknown time zone %q (use an IANA name like Europe/Berlin)", h.Timezone)
	}
	for i, r := range h.Rooms {
		if !strings.HasPrefix(string(r), "!") {
			bad(fmt.Sprintf("health.rooms[%d]", i), "must be a room ID (starting with !), got %q", r)
		}
	}
	switch h.Post {
	case "always", "changed", "worsened":
	default:
		bad("health.post", "must be always, changed or worsened, got %q", h.Post)
	}
	for i, d := range h.Disks {
		if d.Path == "" {
			bad(fmt.Sprintf("health.disks[%d].path", i), "required")
		}
	}
	th := h.Thresholds
	for key, v := range map[string]string{
		"destination_warn_after": th.DestinationWarnAfter, "destination_critical_after": th.DestinationCriticalAfter,
		"partial_join_after": th.PartialJoinAfter, "sync_stale_after": th.SyncStaleAfter,
	} {
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			bad("health.thresholds."+key, "must be a duration like 30m, got %q", v)
		}
	}
	if th.RejectionsCritical < th.RejectionsWarn {
		bad("health.thresholds.rejections_critical", "must be at least rejections_warn (%d)", th.RejectionsWarn)
	}
	if th.RejectionChainWalks < 0 {
		bad("health.thresholds.rejection_chain_walks", "must not be negative")
	}
	if th.ExtremitiesCritical < th.ExtremitiesWarn {
		bad("health.thresholds.extremities_critical", "must be at least extremities_warn (%d)", th.ExtremitiesWarn)
	}
	if th.DiskCriticalPercent > th.DiskWarnPercent {
		bad("health.thresholds.disk_critical_percent", "must not exceed disk_warn_percent (%g)", th.DiskWarnPercent)
	}
}
