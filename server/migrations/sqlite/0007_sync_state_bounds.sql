-- Persisted sync states are bounded (issue 8): some clients (samod, for one) announce a
-- new storageId on every run, so states are kept per user for a limited number of peer
-- stores and expire. `user_id` names whose connection saved the state (NULL for rows
-- saved before this migration; they age out through `updated_at`).
ALTER TABLE sync_states ADD COLUMN user_id TEXT;
CREATE INDEX sync_states_by_user ON sync_states (user_id, updated_at);
CREATE INDEX sync_states_by_age ON sync_states (updated_at);
