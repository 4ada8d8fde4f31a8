-- The audit log (in the spirit of NEN 7513): who did what to which document, when,
-- from which device. Append-only and hash-chained: each entry carries the hash of the
-- one before it (see server/src/audit.rs for the exact encoding). Times in this table
-- are unix milliseconds (UTC), unlike the seconds elsewhere.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    device      TEXT NOT NULL,
    document    TEXT,
    partition   TEXT,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
-- "Who looked at my file": one document's entries in order.
CREATE INDEX audit_log_document ON audit_log (document, seq);

-- Append-only. These guard against mistakes and careless tools, not against someone
-- who can write the file (they can drop a trigger): the hash chain is what makes such
-- tampering visible.
CREATE TRIGGER audit_log_no_update
BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete
BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- `INSERT OR REPLACE` deletes the row it replaces without firing delete triggers
-- (unless recursive_triggers is on), so an insert may not reuse an existing seq.
CREATE TRIGGER audit_log_no_replace
BEFORE INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
