ALTER TABLE vms DROP COLUMN unsupported;
