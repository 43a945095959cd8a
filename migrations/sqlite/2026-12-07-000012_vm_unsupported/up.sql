-- Why a VM's host cannot snapshot it, read from the host when the VM is registered or
-- imported (issue 30): libvirt before 10.10 takes no internal snapshots of a UEFI
-- (pflash) guest. NULL: it can. Every snapshot action on such a VM is refused, and
-- offered as such, before any task.
ALTER TABLE vms ADD COLUMN unsupported TEXT;
