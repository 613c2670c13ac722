-- v0 -> v5: Latest revision
CREATE TABLE admin_room (
	room_id    TEXT   NOT NULL PRIMARY KEY,
	invited_by TEXT   NOT NULL,
	added_at   BIGINT NOT NULL
);

-- Small named values the bot keeps for itself (e.g. the terminal's access token).
CREATE TABLE kv (
	key   TEXT NOT NULL PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE job (
	id             TEXT    NOT NULL PRIMARY KEY,
	kind           TEXT    NOT NULL,
	args           TEXT    NOT NULL,
	room_id        TEXT    NOT NULL,
	requested_by   TEXT    NOT NULL,
	requested_at   BIGINT  NOT NULL,
	expires_at     BIGINT  NOT NULL,
	approvals_needed INTEGER NOT NULL,
	state          TEXT    NOT NULL,
	plan           TEXT    NOT NULL,
	fingerprint    TEXT    NOT NULL,
	prompt_event   TEXT    NOT NULL DEFAULT '',
	progress_event TEXT    NOT NULL DEFAULT '',
	result         TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE job_approval (
	job_id      TEXT   NOT NULL REFERENCES job(id) ON DELETE CASCADE,
	user_id     TEXT   NOT NULL,
	approved_at BIGINT NOT NULL,
	PRIMARY KEY (job_id, user_id)
);

CREATE TABLE job_step (
	job_id      TEXT    NOT NULL REFERENCES job(id) ON DELETE CASCADE,
	idx         INTEGER NOT NULL,
	state       TEXT    NOT NULL,
	error       TEXT    NOT NULL DEFAULT '',
	finished_at BIGINT  NOT NULL,
	PRIMARY KEY (job_id, idx)
);

CREATE TABLE job_event (
	job_id TEXT   NOT NULL REFERENCES job(id) ON DELETE CASCADE,
	at     BIGINT NOT NULL,
	actor  TEXT   NOT NULL,
	what   TEXT   NOT NULL
);
CREATE INDEX job_event_job_idx ON job_event (job_id);

-- Login-as-user tokens minted for users during a repair, until they are logged out. The row
-- is written before Synapse is asked (token NULL) by the process minted_by (proc.ID: "boot
-- pid") and completed with the token before it is used. A crash leaves the row, and the next
-- start logs the token out once its process is gone.
CREATE TABLE minted_token (
	id        TEXT   NOT NULL PRIMARY KEY,
	token     TEXT   UNIQUE,
	user_id   TEXT   NOT NULL,
	job_id    TEXT   NOT NULL,
	minted_by TEXT   NOT NULL,
	minted_at BIGINT NOT NULL
);

-- History of health check results
CREATE TABLE health_report (
	-- Unix milliseconds; also the report's key.
	at      BIGINT  NOT NULL PRIMARY KEY,
	-- "command" (!health), "schedule" (the scheduled report, posted or not)
	trigger TEXT    NOT NULL,
	posted  BOOLEAN NOT NULL
);

CREATE TABLE health_result (
	report_at BIGINT  NOT NULL REFERENCES health_report(at) ON DELETE CASCADE,
	check_id  TEXT    NOT NULL,
	status    INTEGER NOT NULL,
	summary   TEXT    NOT NULL,
	-- JSON list of the findings' keys (room IDs, server names, …), to tell new ones apart.
	items     TEXT    NOT NULL,
	-- JSON object of numbers worth charting (e.g. database bytes).
	metrics   TEXT    NOT NULL,
	PRIMARY KEY (report_at, check_id)
);
