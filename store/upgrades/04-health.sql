-- v3 -> v4: History of health check results
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
