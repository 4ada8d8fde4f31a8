-- The client library ships (issue 15).
-- unacked: hashes (hex, comma-separated) of local changes the server has not
-- acknowledged: the exact pending count. NULL for rows written before this column
-- existed: computed once at load from the acknowledged heads.
ALTER TABLE documents ADD COLUMN unacked TEXT;
-- settings gains: last_synced_at (unix ms, text), user (the user this store belongs to).
