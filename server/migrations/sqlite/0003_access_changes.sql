-- One row per change to who may access what (grant added or removed, token revoked).
-- Running servers poll MAX(id) and re-check their live connections when it moves, so a
-- revocation made with the CLI reaches open connections without a restart.
CREATE TABLE access_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    what        TEXT NOT NULL
);
