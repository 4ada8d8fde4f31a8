-- Identity (issue 17): device sessions, their rotating refresh tokens, enrolment codes
-- and the mapping of an identity provider's subject to a buurtsync user.

-- One signed-in device: created by an OIDC sign-in or an enrolment code, ended by the
-- coordinator (/beheer), a refresh-token reuse, or an admin. Its access tokens are rows
-- of `tokens` with `session_id` set, so every place that accepts a token accepts them.
CREATE TABLE device_sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    device_name   TEXT NOT NULL,
    via           TEXT NOT NULL CHECK (via IN ('oidc', 'enrolment')),
    wijk_id       TEXT,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoked_why   TEXT
);
CREATE INDEX device_sessions_user ON device_sessions (user_id);

-- Every refresh token a session was given, as SHA-256. `used_at` set: rotated away;
-- presenting it again is reuse and ends the session.
CREATE TABLE refresh_tokens (
    secret_hash  BYTEA PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES device_sessions(id),
    created_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

ALTER TABLE tokens ADD COLUMN session_id TEXT REFERENCES device_sessions(id);
CREATE INDEX tokens_session ON tokens (session_id);

-- Single-use codes a coordinator gives a volunteer, as SHA-256 of the code.
CREATE TABLE enrolment_codes (
    id          TEXT PRIMARY KEY,
    code_hash   BYTEA NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users(id),
    wijk_id     TEXT NOT NULL REFERENCES wijken(id),
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    session_id  TEXT
);

-- The identity provider's subject (the configured claim's value) of a user.
CREATE TABLE oidc_subjects (
    subject     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL
);
CREATE INDEX oidc_subjects_user ON oidc_subjects (user_id);
