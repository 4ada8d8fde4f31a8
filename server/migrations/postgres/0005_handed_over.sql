-- The committed hand-over flag of a plan, kept in the catalog so listings can apply
-- the access policy without loading documents.
ALTER TABLE documents ADD COLUMN handed_over BOOLEAN NOT NULL DEFAULT FALSE;
