-- v0 -> v1: Latest revision
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
