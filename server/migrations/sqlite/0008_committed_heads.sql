-- The committed heads of each document (sorted hex change hashes joined by ','),
-- written in the same transaction as every creation, append and compaction, so a
-- reconnecting device's summary is answered without loading documents. NULL: unknown
-- (documents stored before this column, or an append on a shared store that could not
-- prove its heads are the stored ones); a summary then treats the document as changed.
ALTER TABLE documents ADD COLUMN heads TEXT;
