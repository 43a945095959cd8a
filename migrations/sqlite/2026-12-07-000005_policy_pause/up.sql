-- A policy whose runs keep being missed pauses, saying why, until it is resumed (issue 27):
-- `misses` counts its runs missed in a row (a run that makes its snapshot sets it to 0).
ALTER TABLE snapshot_policies ADD COLUMN misses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshot_policies ADD COLUMN paused_because TEXT;
