-- v4 -> v5: Which medic process minted each token, recorded before the mint
-- A row is written before Synapse is asked for the token (token NULL) and completed with the
-- token before it is used, so a medic starting meanwhile can tell a live process's tokens
-- (left alone) from a dead one's (logged out). minted_by is proc.ID ("boot pid"); rows from
-- before this version have none and count as a dead process's.
CREATE TABLE minted_token_v5 (
	id        TEXT   NOT NULL PRIMARY KEY,
	token     TEXT   UNIQUE,
	user_id   TEXT   NOT NULL,
	job_id    TEXT   NOT NULL,
	minted_by TEXT   NOT NULL,
	minted_at BIGINT NOT NULL
);
INSERT INTO minted_token_v5 (id, token, user_id, job_id, minted_by, minted_at)
	SELECT token, token, user_id, job_id, '', minted_at FROM minted_token;
DROP TABLE minted_token;
ALTER TABLE minted_token_v5 RENAME TO minted_token;
