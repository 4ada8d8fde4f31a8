-- When a document's readability-relevant facts last changed (unix seconds): its
-- creation, or its hand-over flag flipping. The incremental listing
-- (`GET /api/v1/documents?since=`) returns what changed at or after a cursor.
ALTER TABLE documents ADD COLUMN access_changed_at BIGINT NOT NULL DEFAULT 0;
UPDATE documents SET access_changed_at = created_at;
-- A listing asks per readable partition (wijk grants) and for handed-over plans (a
-- consulent), each a range of access_changed_at: these indexes serve exactly that.
-- The new partition index starts with (wijk_id, kind), so it replaces the old one.
CREATE INDEX documents_listing ON documents (wijk_id, kind, access_changed_at);
CREATE INDEX documents_handed_over_listing ON documents (handed_over, kind, access_changed_at);
DROP INDEX documents_partition;
