// What the page asks the API, in one place: every field the other modules read comes
// from these selections. Imports nothing, so that the other modules can use them at
// once.

export const SNAP_FIELDS = "id name description state active protected expiresAt createdAt stale staleSince parent { id }";
export const OFFER = "{ allowed reason refusal }";
// Each event brings its task's snapshots and the VM's active snapshot as they are when
// it is delivered, and whether the task may still be cancelled.
export const EVENTS = `subscription($after: ID) { events(after: $after) {
  id state finished progress phase at
  task { id kind state finished error progress phase requestedBy actions { cancel ${OFFER} }
    vm { id activeSnapshot { id name } }
    snapshot { ${SNAP_FIELDS} } savedAs { ${SNAP_FIELDS} } } } }`;


export const TASK_FIELDS = `id kind state finished error progress phase requestedBy createdAt finishedAt
  snapshot { id name } savedAs { id name } actions { cancel ${OFFER} }`;
export const VM_QUERY = `query($v: ID!) {
  vm(id: $v) { id name identifier stateName snapshotCount snapshotLimit
    host { id name hypervisor health { reachable since } }
    activeSnapshot { id name }
    actions { create ${OFFER} revert ${OFFER} }
    snapshots { ${SNAP_FIELDS}
      actions { apply ${OFFER} delete ${OFFER} deleteSubtree ${OFFER} rename ${OFFER} protect ${OFFER} } }
    currentTask { ${TASK_FIELDS} } }
  tasks(vmId: $v, first: 10) { edges { node { ${TASK_FIELDS}
    events(first: 20) { id state progress phase message at } } } } }`;


// The project's policies, with why each one stopped, if it did, and the offer to resume.
export const POLICIES = `{ policies(first: 50) { id name everySeconds cron timeZone nextDueAt
  stoppedBecause vm { id name } vmFilter actions { resume ${OFFER} } } }`;

export const PAYLOAD = `{ snapshot { id name } task { ${TASK_FIELDS} } }`;
