-- The audit log (in the spirit of NEN 7513), PostgreSQL flavour of
-- migrations/sqlite/0002: append-only and hash-chained (server/src/audit.rs). Times in
-- this table are unix milliseconds (UTC). `seq` is assigned by the appender under an
-- advisory lock, so the chain is one line across all nodes.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    user_id     TEXT NOT NULL,
    device      TEXT NOT NULL,
    document    TEXT,
    partition   TEXT,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);
-- "Who looked at my file": one document's entries in order.
CREATE INDEX audit_log_document ON audit_log (document, seq);

-- The highest seq ever handed out (SQLite keeps this in sqlite_sequence): the first
-- append after the newest rows were removed leaves a gap that verification sees.
CREATE TABLE audit_issued (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    issued      BIGINT NOT NULL
);
INSERT INTO audit_issued (id, issued) VALUES (1, 0);

-- Append-only. These guard against mistakes and careless tools, not against someone
-- who owns the database (they can drop a trigger): the hash chain makes that visible.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
