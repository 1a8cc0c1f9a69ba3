-- A save's own id on its refresh-log row, with what it did: whether the account took it and
-- which HTTP-log entry it wrote. A save whose COMMIT was cut off may have landed; before it
-- writes again, its retry looks for this id (`saved_attempt`), and the unique index refuses
-- a second copy of a save whose first commit is still in flight. Rows written before
-- this migration have no save id: the index leaves them out, so it builds at once.
ALTER TABLE refresh_log ADD COLUMN save_id text;
ALTER TABLE refresh_log ADD COLUMN applied INTEGER;
ALTER TABLE refresh_log ADD COLUMN entry_id INTEGER;
CREATE UNIQUE INDEX refresh_log_save ON refresh_log (save_id) WHERE save_id IS NOT NULL;
