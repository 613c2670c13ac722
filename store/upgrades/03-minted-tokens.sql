-- v2 -> v3: Access tokens minted for users during a repair, until they are logged out
CREATE TABLE minted_token (
	token     TEXT   NOT NULL PRIMARY KEY,
	user_id   TEXT   NOT NULL,
	job_id    TEXT   NOT NULL,
	minted_at BIGINT NOT NULL
);
