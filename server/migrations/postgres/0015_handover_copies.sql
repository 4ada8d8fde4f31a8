-- Hand-over without history (issue 16, item 5): a consulent never reads a plan itself,
-- only its hand-over copy, a separate document built from the plan's current state
-- when it was handed over and kept equal to it while the hand-over lasts. A copy's
-- row names the plan it copies; NULL for every other document.
ALTER TABLE documents ADD COLUMN handover_of TEXT;
-- Finding a plan's copy (on each commit of a handed-over plan, and on erasure) and
-- listing copies for a consulent.
CREATE INDEX documents_handover_of ON documents (handover_of, access_changed_at)
    WHERE handover_of IS NOT NULL;
-- An erased copy's tombstone says so too: the central office's feed counts plans,
-- and a copy is none (neither while it lives nor when it goes).
ALTER TABLE tombstones ADD COLUMN handover_of TEXT;
-- "Who looked at my file" includes the reads of a plan's copies, erased ones too.
CREATE INDEX tombstones_handover_of ON tombstones (handover_of) WHERE handover_of IS NOT NULL;
