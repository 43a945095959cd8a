// snaptree dashboard: the same GraphQL API scripts use, over HTTP for queries and
// actions, and over a WebSocket (graphql-transport-ws) for live task events.
//
// The page encodes no rule: which actions are offered (and why not) comes from
// `actions`, what a delete does to "Now" from `deleteForecast`, whether a task has
// ended from `finished`, the tree's shape from each snapshot's parent. Everything
// user-typed goes into the page as text (textContent), never as HTML.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "snaptree-token";
const NOW = "now"; // the tree item of the VM's current state

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,          // { name, role, project }
  hosts: [],         // the host list, as last loaded
  vmId: null,        // the VM shown
  vm: null,          // its last loaded data
  tasks: [],         // its recent tasks, newest first
  selected: null,    // the selected tree item: a snapshot id, or NOW
  collapsed: new Set(), // snapshot ids whose subtrees are folded
  taskStates: new Map(), // task id -> the last state its events gave, to tell changes from progress
  ended: new Set(),      // tasks whose last event has come
  lastEvent: null,   // the newest event id seen, to resume after a reconnect
  socket: null,
  retries: 0,        // reconnects since the last success
  offline: false,
  reads: 0,          // reads of the VM or the hosts started, to number them
  shownVm: 0,        // the VM read on screen: an older one answering late is dropped
  shownHosts: 0,     // the same for the host list
  healthTimer: null, // reloads the hosts now and then: health changes send no event
};

/** How often the host list (and with it each host's health) is read again. */
const HEALTH_EVERY_MS = 20_000;

// ---- Words ------------------------------------------------------------------------------

const SNAPSHOT_STATE = {
  REQUESTED: "waiting to be created", BUILDING: "being created", UNRESOURCED: "failed",
  RUNNING: "ready", SCRUB: "waiting to be deleted", RUNNING_UPDATE: "waiting to be applied",
  RUNNING_UPDATING: "being applied", SCRUBBING: "being deleted", CLOSED: "deleted",
};
const TASK_STATE = {
  QUEUED: "waiting", RUNNING: "running", SUCCEEDED: "done", FAILED: "failed", CANCELLED: "cancelled",
};
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const quoted = (name) => `“${name}”`;
// One formatter each: toLocaleString makes a new one per call, most of a 200-node redraw.
const STAMP = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
const CLOCK = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const time = (at) => STAMP.format(new Date(at));
const clock = (at) => CLOCK.format(new Date(at));
/** A host's health in words: "" while it answers, or before a robot has called it. */
const healthWords = (health) => (health && !health.reachable ? `unreachable since ${time(health.since)}` : "");

/** What a task does, in an operator's words. */
function taskWords(task) {
  const name = task.snapshot ? quoted(task.snapshot.name) : "";
  switch (task.kind) {
    case "BUILD": return `Create ${name}`;
    case "UPDATE": return task.savedAs
      ? `Save the current state as ${quoted(task.savedAs.name)}, then apply ${name}`
      : `Apply ${name}`;
    case "SCRUB": return `Delete ${name}`;
    default: return `${task.kind} ${name}`;
  }
}

// ---- GraphQL over HTTP ----------------------------------------------------------------

class ApiError extends Error {
  constructor(message, code) { super(message); this.code = code; }
}

async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": `Bearer ${state.token}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    setOffline(true);
    throw new ApiError("snaptree cannot be reached; the page reconnects by itself.", "NETWORK");
  }
  const body = await response.json().catch(() => ({ errors: [{ message: `snaptree answered ${response.status}.` }] }));
  if (body.errors && body.errors.length) {
    const e = body.errors[0];
    const code = e.extensions && e.extensions.code;
    if (code === "UNAUTHENTICATED") signOut("Your token was not accepted; sign in again.");
    throw new ApiError(e.message, code);
  }
  return body.data;
}

// ---- Live events over WebSocket (graphql-transport-ws) ----------------------------------

const SNAP_FIELDS = "id name description state active createdAt stale staleSince parent { id }";
const EVENTS = `subscription($after: ID) { events(after: $after) {
  id state finished progress phase at
  task { id kind state finished error progress phase requestedBy vm { id }
    snapshot { ${SNAP_FIELDS} } savedAs { ${SNAP_FIELDS} } } } }`;

function connectEvents() {
  if (!state.token) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  const socket = new WebSocket(url, "graphql-transport-ws");
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({
    type: "connection_init", payload: { authorization: `Bearer ${state.token}` },
  }));
  socket.onmessage = (message) => {
    const msg = JSON.parse(message.data);
    if (msg.type === "connection_ack") {
      state.retries = 0;
      socket.send(JSON.stringify({
        id: "events", type: "subscribe", payload: { query: EVENTS, variables: { after: state.lastEvent } },
      }));
      if (state.offline) { setOffline(false); refreshAll(); }
    } else if (msg.type === "next" && msg.payload.data) {
      onEvent(msg.payload.data.events);
    } else if (msg.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    }
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (event.code === 4403) { signOut("Your token was not accepted; sign in again."); return; }
    if (!state.token) return;
    // Reconnect, more slowly each time, and pick up after the last event seen.
    setOffline(true);
    const delay = Math.min(1000 * 2 ** state.retries, 10_000);
    state.retries += 1;
    setTimeout(connectEvents, delay);
  };
}

function setOffline(offline) {
  if (state.offline === offline) return;
  state.offline = offline;
  const banner = $("offline");
  banner.hidden = !offline;
  banner.textContent = offline ? "Connection to snaptree lost. Reconnecting…" : "";
  // A message about the lost connection is stale once it is back.
  if (!offline) $("action-error").textContent = "";
}

let vmTimer = null;
let hostsTimer = null;
function refreshVmSoon(delay = 80) {
  clearTimeout(vmTimer);
  vmTimer = setTimeout(() => { if (state.vmId) loadVm(state.vmId); }, delay);
}
function refreshHostsSoon() {
  clearTimeout(hostsTimer);
  hostsTimer = setTimeout(loadHosts, 300);
}
function refreshAll() { loadHosts(); if (state.vmId) loadVm(state.vmId); }

function onEvent(event) {
  state.lastEvent = event.id;
  const task = event.task;
  const changed = state.taskStates.get(task.id) !== event.state;
  state.taskStates.set(task.id, event.state);
  if (event.finished) state.ended.add(task.id);
  if (state.vm && task.vm.id === state.vmId) {
    const start = performance.now();
    // The event brings its snapshots as they are now: the tree shows them at once, and
    // a read afterwards brings what the event cannot (offers, moved children).
    const patched = patch(task);
    if (patched) {
      // A new snapshot changes the shape; a moved "Now" and new states, rows.
      if (patched.shape || (patched.moved && !moveNow())) drawTree(); else redrawRows(patched.ids);
      // Laid out here, so that the measure holds what the next paint needs.
      $("tree").getBoundingClientRect();
      performance.measure("snaptree:event-to-tree",
        { start, end: performance.now(), detail: { snapshots: state.vm.snapshots.length } });
      drawDetails();
    }
    showProgress(task, event);
    if (changed) refreshVmSoon();
  }
  if (changed) refreshHostsSoon();
}

/** Puts an event's snapshots into the VM shown: null when nothing changed, else the
 * rows changed, whether the tree's shape did (a new snapshot), and whether "Now" moved. */
function patch(task) {
  const ids = [];
  let shape = false;
  let moved = false;
  for (const s of [task.snapshot, task.savedAs]) {
    if (!s || s.state === "CLOSED") continue; // children move: the next read shows where
    const known = state.vm.snapshots.find((x) => x.id === s.id);
    if (known) {
      if (known.state === s.state && known.active === s.active && known.name === s.name) continue;
      Object.assign(known, s, { actions: known.actions });
    } else {
      state.vm.snapshots.push({ ...s, actions: null });
      shape = true;
    }
    if (s.active && (!state.vm.activeSnapshot || state.vm.activeSnapshot.id !== s.id)) {
      for (const other of state.vm.snapshots) {
        if (other.id !== s.id && other.active) { other.active = false; ids.push(other.id); }
      }
      state.vm.activeSnapshot = { id: s.id, name: s.name };
      moved = true;
    } else if (!s.active && state.vm.activeSnapshot && state.vm.activeSnapshot.id === s.id) {
      // Current no more, and no other took its place: a create that failed. The VM runs
      // from where it did before, the snapshot's parent (the next read confirms).
      const parent = s.parent && state.vm.snapshots.find((x) => x.id === s.parent.id);
      if (parent) { parent.active = true; ids.push(parent.id); }
      state.vm.activeSnapshot = parent ? { id: parent.id, name: parent.name } : null;
      moved = true;
    }
    ids.push(s.id);
  }
  return ids.length ? { ids, shape, moved } : null;
}

/** Moves "Now" under the active snapshot, in place; false when the tree must be drawn
 * again instead (the active snapshot is folded away, or "Now" is not shown). */
function moveNow() {
  const now = item(NOW);
  const active = state.vm.activeSnapshot && item(state.vm.activeSnapshot.id);
  if (!now || !active || active.getAttribute("aria-expanded") === "false") return false;
  const nowLi = now.parentElement;
  const from = nowLi.parentElement;
  const focused = document.activeElement === now;
  nowLi.remove();
  if (from !== $("tree") && !from.children.length) {
    const owner = from.parentElement;
    from.remove();
    owner.querySelector(":scope > .row").removeAttribute("aria-expanded");
    owner.classList.add("leaf");
  } else {
    renumber(from);
  }
  const li = active.parentElement;
  let group = li.querySelector(":scope > ul");
  if (!group) {
    group = el("ul", { role: "none" });
    li.append(group);
    li.classList.remove("leaf");
    active.setAttribute("aria-expanded", "true");
  }
  group.append(nowLi);
  now.setAttribute("aria-level", String(Number(active.getAttribute("aria-level")) + 1));
  renumber(group);
  if (focused) now.focus({ preventScroll: true });
  return true;
}

/** Sets the place and size of the items of one list. */
function renumber(list) {
  const rows = [...list.children].map((li) => li.querySelector(":scope > .row"));
  rows.forEach((row, i) => {
    row.setAttribute("aria-posinset", String(i + 1));
    row.setAttribute("aria-setsize", String(rows.length));
  });
}

// ---- Progress ---------------------------------------------------------------------------

function showProgress(task, event = task) {
  const box = $("progress");
  let text = taskWords(task);
  if (event.state === "SUCCEEDED") text += ": done.";
  else if (event.state === "FAILED") text += `: failed. ${task.error || ""}`;
  else if (event.state === "CANCELLED") text += ": cancelled.";
  else if (event.state === "QUEUED") text += ": waiting for the robot…";
  else if (event.phase) text += `: ${event.phase}…`;
  const percent = event.state === "SUCCEEDED" ? 100 : (event.progress ?? 0);
  const ended = event.finished;
  const wasHidden = box.hidden;
  box.hidden = false;
  box.className = `progress ${ended ? event.state.toLowerCase() : ""}`;
  box.dataset.task = task.id;
  $("progress-label").textContent = `${text} (by ${task.requestedBy})`;
  $("progress-bar").setAttribute("aria-valuenow", String(percent));
  $("progress-bar").setAttribute("aria-valuetext", ended ? TASK_STATE[event.state] : `${percent}%`);
  $("progress-fill").style.width = `${percent}%`;
  const cancel = $("cancel-task");
  cancel.hidden = ended || !mayAct();
  if (wasHidden || event.state === "FAILED") box.scrollIntoView({ block: "nearest" });
}

$("cancel-task").addEventListener("click", async () => {
  const id = $("progress").dataset.task;
  if (!id) return;
  try {
    await gql("mutation($t: ID!) { cancelTask(id: $t) { id } }", { t: id });
    $("progress-label").textContent += " Cancelling…";
  } catch (e) { showError(e.message); }
});

function showError(message) {
  const box = $("action-error");
  box.textContent = message;
  if (message) box.scrollIntoView({ block: "nearest" });
}

// ---- Hosts and VMs ----------------------------------------------------------------------

async function loadHosts() {
  const read = ++state.reads;
  let data;
  try {
    // One page of VMs with their hosts: cheaper than every host's VM list.
    data = await gql(`{ vms(first: 100) { nodes { id name stateName snapshotCount snapshotLimit busy
      host { id name hypervisor health { reachable since } } } } }`);
  } catch (e) { if (e.code !== "NETWORK") showError(e.message); return; }
  if (read < state.shownHosts) return;
  state.shownHosts = read;
  const hosts = new Map();
  for (const vm of data.vms.nodes) {
    if (!hosts.has(vm.host.id)) hosts.set(vm.host.id, { ...vm.host, vms: [] });
    hosts.get(vm.host.id).vms.push(vm);
  }
  state.hosts = [...hosts.values()];
  drawHosts();
  drawVmMeta();
}

/** The line under the VM's name; its host's health from the freshest read. */
function drawVmMeta() {
  const vm = state.vm;
  if (!vm) return;
  const listed = state.hosts.find((h) => h.id === vm.host.id);
  const down = healthWords(listed ? listed.health : vm.host.health);
  const limit = vm.snapshotLimit == null ? "" : ` of ${vm.snapshotLimit}`;
  $("vm-meta").textContent =
    `${vm.identifier} on ${vm.host.name} (${vm.host.hypervisor.toLowerCase()})${down ? `, ${down}` : ""} · ${vm.stateName.toLowerCase()} · ${plural(vm.snapshotCount, "snapshot")}${limit}`;
}

function vmLabel(vm) {
  const limit = vm.snapshotLimit == null ? "" : ` of ${vm.snapshotLimit}`;
  return `${vm.name}, ${vm.stateName.toLowerCase()}, ${plural(vm.snapshotCount, "snapshot")}${limit}${vm.busy ? ", busy" : ""}`;
}

function drawHosts() {
  const root = $("hosts");
  const focused = document.activeElement && document.activeElement.dataset.vm;
  root.replaceChildren();
  const picker = $("vm-picker");
  picker.replaceChildren(el("option", { value: "" }, "Choose a VM…"));
  if (!state.hosts.length) {
    root.append(el("p", { className: "empty" }, "No VMs in your project yet. An ADMIN registers them (snaptree vm import)."));
  }
  for (const host of state.hosts) {
    const down = healthWords(host.health);
    root.append(el("p", { className: "host-name" }, host.name, " ",
      el("span", { className: "host-kind" }, host.hypervisor.toLowerCase()),
      down ? el("span", { className: "host-down" }, down) : null));
    const list = el("ul");
    const group = el("optgroup", { label: down ? `${host.name} (unreachable)` : host.name });
    for (const vm of host.vms) {
      const limit = vm.snapshotLimit == null ? "" : ` of ${vm.snapshotLimit}`;
      const button = el("button", { type: "button", className: "vm-link" },
        el("span", { className: vm.busy ? "busy-dot" : "" }, vm.name,
          vm.busy ? el("span", { className: "sr-only" }, " (busy)") : null),
        el("span", { className: "count" }, `${vm.stateName.toLowerCase()} · ${plural(vm.snapshotCount, "snapshot")}${limit}`));
      button.dataset.vm = vm.id;
      if (vm.id === state.vmId) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => selectVm(vm.id));
      list.append(el("li", {}, button));
      group.append(el("option", { value: vm.id }, vmLabel(vm)));
    }
    root.append(list);
    picker.append(group);
  }
  picker.value = state.vmId || "";
  if (focused) root.querySelector(`[data-vm="${CSS.escape(focused)}"]`)?.focus();
}

$("vm-picker").addEventListener("change", (e) => { if (e.target.value) selectVm(e.target.value); });

function selectVm(id) {
  if (id !== state.vmId) {
    state.selected = null;
    state.collapsed = new Set();
    state.vm = null;
    $("create-form").reset();
    $("create-form").hidden = true;
    $("progress").hidden = true;
  }
  state.vmId = id;
  state.selectStart = performance.now();
  showError("");
  for (const b of document.querySelectorAll(".vm-link")) {
    if (b.dataset.vm === id) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
  }
  $("vm-picker").value = id;
  loadVm(id);
}

const TASK_FIELDS = "id kind state finished error progress phase requestedBy createdAt finishedAt snapshot { id name } savedAs { id name }";
const OFFER = "{ allowed reason refusal }";
const VM_QUERY = `query($v: ID!) {
  vm(id: $v) { id name identifier stateName snapshotCount snapshotLimit
    host { id name hypervisor health { reachable since } }
    activeSnapshot { id name }
    actions { create ${OFFER} revert ${OFFER} }
    snapshots { ${SNAP_FIELDS}
      actions { apply ${OFFER} delete ${OFFER} deleteSubtree ${OFFER} rename ${OFFER} } }
    currentTask { ${TASK_FIELDS} } }
  tasks(vmId: $v, first: 10) { edges { node { ${TASK_FIELDS}
    events(first: 20) { id state progress phase message at } } } } }`;

async function loadVm(id) {
  const read = ++state.reads;
  let data;
  try { data = await gql(VM_QUERY, { v: id }); } catch (e) { if (e.code !== "NETWORK") showError(e.message); return; }
  // Reads travel on connections of their own: one started before the last event can
  // answer after a later one, and would put back what that event changed.
  if (state.vmId !== id || read < state.shownVm) return;
  state.shownVm = read;
  const vm = data.vm;
  if (!vm) { $("vm").hidden = true; $("no-vm").hidden = false; return; }
  const first = !state.vm;
  state.vm = vm;
  state.tasks = data.tasks.edges.map((e) => e.node);
  for (const t of state.tasks) if (!state.taskStates.has(t.id)) state.taskStates.set(t.id, t.state);
  $("no-vm").hidden = true;
  $("vm").hidden = false;
  $("vm-name").textContent = vm.name;
  drawVmMeta();
  drawToolbar();
  // A read can be older than the events already shown.
  if (vm.currentTask && !state.ended.has(vm.currentTask.id)) showProgress(vm.currentTask);
  if (first) {
    state.selected = vm.activeSnapshot ? vm.activeSnapshot.id : NOW;
    revealNow();
  }
  const drawn = performance.now();
  drawTree();
  drawDetails();
  drawTasks();
  if (!first) {
    performance.measure("snaptree:redraw",
      { start: drawn, end: performance.now(), detail: { snapshots: vm.snapshots.length } });
  }
  if (first) {
    scrollToItem(NOW);
    // Layout forced here, so the measure includes it; the paint follows this frame.
    $("tree").getBoundingClientRect();
    performance.measure("snaptree:select-to-tree",
      { start: state.selectStart, end: performance.now(), detail: { snapshots: vm.snapshots.length } });
    if (matchMedia("(max-width: 50rem)").matches) $("vm").scrollIntoView({ block: "start" });
  }
}

function mayAct() { return state.me && state.me.role !== "VIEWER"; }

/** An offer on a control: hidden when the role may not act, disabled with its reason. */
function offer(button, why, allowance) {
  button.hidden = allowance.refusal === "ROLE";
  button.disabled = !allowance.allowed;
  if (why) why.textContent = allowance.allowed || allowance.refusal === "ROLE" ? "" : allowance.reason;
}

function drawToolbar() {
  const vm = state.vm;
  offer($("create"), $("create-why"), vm.actions.create);
  if ($("create-why").textContent) $("create-why").textContent = `Create: ${$("create-why").textContent}`;
  if (!vm.actions.create.allowed) $("create-form").hidden = true;
  $("revert").textContent = vm.activeSnapshot ? `Revert to ${quoted(vm.activeSnapshot.name)}…` : "Revert";
  offer($("revert"), $("revert-why"), vm.actions.revert);
  // One reason said once (a busy VM refuses both for the same one).
  if (vm.actions.revert.reason === vm.actions.create.reason) $("revert-why").textContent = "";
  else if ($("revert-why").textContent) $("revert-why").textContent = `Revert: ${$("revert-why").textContent}`;
  const note = $("role-note");
  note.hidden = mayAct();
  note.textContent = "Your token is a VIEWER's: you can look at snapshots and tasks, not act on them.";
}

// ---- The tree (WAI-ARIA tree pattern) ---------------------------------------------------

function childrenOf() {
  const children = new Map();
  for (const s of state.vm.snapshots) {
    const parent = s.parent ? s.parent.id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  return children;
}

/** Unfolds every ancestor of the active snapshot, so that "You are here" shows. */
function revealNow() {
  const byId = new Map(state.vm.snapshots.map((s) => [s.id, s]));
  let at = state.vm.activeSnapshot && byId.get(state.vm.activeSnapshot.id);
  while (at) { state.collapsed.delete(at.id); at = at.parent && byId.get(at.parent.id); }
}

function drawTree() {
  const vm = state.vm;
  const tree = $("tree");
  const focusedId = tree.contains(document.activeElement) ? document.activeElement.dataset.id : null;
  const children = childrenOf();
  const activeId = vm.activeSnapshot ? vm.activeSnapshot.id : null;
  const failures = failedTasks();
  let level = 0;

  // The nested lists draw the connectors and are presentation; each row is a treeitem
  // (named by its own text only, not its subtree's), with its level and place.
  const nowItem = () => {
    const row = el("div", { className: "row", role: "treeitem", "aria-level": String(level),
      "aria-selected": String(state.selected === NOW) },
    el("span", { className: "twisty", "aria-hidden": "true" }), el("span", {}, "Now — you are here"));
    row.dataset.id = NOW;
    return el("li", { role: "none", className: "now leaf" }, row);
  };
  const branch = (parent, into) => {
    level += 1;
    const kids = children.get(parent) || [];
    const withNow = parent === activeId || (parent === null && activeId === null);
    const size = kids.length + (withNow ? 1 : 0);
    kids.forEach((s, i) => into.append(node(s, i + 1, size)));
    if (withNow) {
      const now = nowItem();
      now.firstChild.setAttribute("aria-posinset", String(size));
      now.firstChild.setAttribute("aria-setsize", String(size));
      into.append(now);
    }
    level -= 1;
  };
  const node = (s, place, size) => {
    const kids = (children.get(s.id) || []).length + (s.id === activeId ? 1 : 0);
    const open = !state.collapsed.has(s.id);
    const hidden = !open && kids ? countBelow(s.id, children) : 0;
    const row = rowOf(s, failures, hidden);
    for (const [key, value] of [["aria-level", level], ["aria-posinset", place], ["aria-setsize", size]]) {
      row.setAttribute(key, String(value));
    }
    row.dataset.id = s.id;
    const item = el("li", { role: "none" }, row);
    item.dataset.snapshot = s.name;
    if (kids) {
      row.setAttribute("aria-expanded", String(open));
      if (open) {
        const group = el("ul", { role: "none" });
        branch(s.id, group);
        item.append(group);
      }
    } else {
      item.classList.add("leaf");
    }
    return item;
  };
  const roots = document.createDocumentFragment();
  level = 0;
  branch(null, roots);
  tree.replaceChildren(roots);
  $("tree-empty").hidden = vm.snapshots.length > 0;
  $("tree-box").hidden = vm.snapshots.length === 0;
  document.querySelector(".tree-tools").hidden = vm.snapshots.length === 0;
  $("tree-title").textContent = `Snapshot tree (${plural(vm.snapshots.length, "snapshot")})`;
  // Roving tabindex: one item is in the tab order, the focused one or the selected one.
  const items = [...tree.querySelectorAll('[role="treeitem"]')];
  const current = items.find((i) => i.dataset.id === (focusedId || state.selected)) || items[0];
  for (const i of items) i.tabIndex = i === current ? 0 : -1;
  if (focusedId && current) current.focus({ preventScroll: true });
}

/** Why a stale snapshot is flagged, in words. */
function staleWords(s) {
  const hours = Math.round((Date.parse(s.staleSince) - Date.parse(s.createdAt)) / 36e5);
  return `Kept for more than ${plural(hours, "hour")}: an old snapshot slows its VM and keeps growing. Delete it, or keep it on purpose.`;
}

/** A snapshot's row: its name, marks, state in words, failure and date. */
function rowOf(s, failures, hidden) {
  const words = SNAPSHOT_STATE[s.state] || s.state.toLowerCase();
  const failure = s.state === "UNRESOURCED" ? failures.get(s.id) : null;
  const row = el("div", { className: "row", role: "treeitem", "aria-selected": String(state.selected === s.id) },
    el("span", { className: "twisty", "aria-hidden": "true" }),
    el("span", { className: "name", title: s.name }, s.name),
    s.active ? el("span", { className: "badge active-mark" }, "active") : null,
    s.state === "RUNNING" ? null
      : el("span", { className: `badge ${s.state === "UNRESOURCED" ? "failed" : "working"}` }, words),
    s.stale ? el("span", { className: "badge stale", title: staleWords(s) }, "stale") : null,
    failure ? el("span", { className: "reason", title: failure }, failure) : null,
    hidden ? el("span", { className: "hidden-count" }, `+${plural(hidden, "hidden snapshot")}`) : null,
    el("time", { dateTime: s.createdAt }, time(s.createdAt)));
  row.dataset.id = s.id;
  return row;
}

/** Redraws the rows of `ids` in place (a change of state, not of shape), keeping focus. */
function redrawRows(ids) {
  const failures = failedTasks();
  for (const id of ids) {
    const old = item(id);
    const s = state.vm.snapshots.find((x) => x.id === id);
    if (!old || !s) continue;
    const hidden = old.querySelector(".hidden-count");
    const fresh = rowOf(s, failures, hidden ? Number(hidden.textContent.match(/\d+/)[0]) : 0);
    for (const key of ["aria-level", "aria-posinset", "aria-setsize", "aria-expanded", "tabindex"]) {
      if (old.hasAttribute(key)) fresh.setAttribute(key, old.getAttribute(key));
    }
    const focused = document.activeElement === old;
    old.replaceWith(fresh);
    if (focused) fresh.focus({ preventScroll: true });
  }
}

function countBelow(id, children) {
  let n = 0;
  const stack = [...(children.get(id) || [])];
  while (stack.length) { const s = stack.pop(); n += 1; stack.push(...(children.get(s.id) || [])); }
  return n;
}

/** The latest failure of each snapshot, from the VM's recent tasks. */
function failedTasks() {
  const found = new Map();
  for (const t of state.tasks) { // newest first
    if (t.state !== "FAILED" || !t.error) continue;
    for (const s of [t.snapshot, t.savedAs]) if (s && !found.has(s.id)) found.set(s.id, t.error);
  }
  return found;
}

function item(id) { return $("tree").querySelector(`[data-id="${CSS.escape(String(id))}"]`); }

function scrollToItem(id) {
  const target = item(id);
  if (!target) return;
  const box = $("tree-box");
  const row = target;
  const top = row.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
  box.scrollTop = Math.max(0, top - box.clientHeight / 2);
}

function focusItem(target, select = true) {
  if (!target) return;
  for (const i of $("tree").querySelectorAll('[tabindex="0"]')) i.tabIndex = -1;
  target.tabIndex = 0;
  target.focus();
  if (select) choose(target.dataset.id);
}

/** Selects a tree item: the details and the toolbar follow. */
function choose(id) {
  if (state.selected === id) return;
  state.selected = id;
  for (const i of $("tree").querySelectorAll('[role="treeitem"]')) {
    i.setAttribute("aria-selected", String(i.dataset.id === id));
  }
  drawDetails();
}

function toggle(id, open) {
  if (open) state.collapsed.delete(id); else state.collapsed.add(id);
  drawTree();
  focusItem(item(id), false);
}

$("tree").addEventListener("click", (e) => {
  const target = e.target.closest('[role="treeitem"]');
  if (!target) return;
  const id = target.dataset.id;
  if (e.target.closest(".twisty") && target.hasAttribute("aria-expanded")) {
    toggle(id, target.getAttribute("aria-expanded") === "false");
    return;
  }
  focusItem(target);
});

$("tree").addEventListener("keydown", (e) => {
  const current = e.target.closest('[role="treeitem"]');
  if (!current) return;
  const items = [...$("tree").querySelectorAll('[role="treeitem"]')];
  const at = items.indexOf(current);
  const expanded = current.getAttribute("aria-expanded");
  const parent = current.parentElement.parentElement.closest("li")?.querySelector(':scope > [role="treeitem"]');
  switch (e.key) {
    case "ArrowDown": focusItem(items[at + 1]); break;
    case "ArrowUp": focusItem(items[at - 1]); break;
    case "Home": focusItem(items[0]); break;
    case "End": focusItem(items[items.length - 1]); break;
    case "ArrowRight":
      if (expanded === "false") toggle(current.dataset.id, true);
      else if (expanded === "true") focusItem(current.parentElement.querySelector(':scope > ul [role="treeitem"]'));
      break;
    case "ArrowLeft":
      if (expanded === "true") toggle(current.dataset.id, false);
      else focusItem(parent);
      break;
    case "Enter": case " ": choose(current.dataset.id); break;
    default: return;
  }
  e.preventDefault();
});

$("jump").addEventListener("click", () => {
  revealNow();
  drawTree();
  scrollToItem(NOW);
  focusItem(item(NOW));
});
$("expand-all").addEventListener("click", () => { state.collapsed.clear(); drawTree(); });
$("collapse-all").addEventListener("click", () => {
  const children = childrenOf();
  for (const s of state.vm.snapshots) if (children.has(s.id)) state.collapsed.add(s.id);
  drawTree();
});

// ---- Details of the selected snapshot ---------------------------------------------------

function selectedSnapshot() {
  return state.vm && state.vm.snapshots.find((s) => s.id === state.selected);
}

let detailsTimer = null;
function drawDetails() {
  const s = selectedSnapshot();
  const body = $("details-body");
  if (!s) {
    body.hidden = true;
    $("details-help").hidden = false;
    const active = state.vm && state.vm.activeSnapshot;
    $("details-help").textContent = state.selected !== NOW ? "Choose a snapshot in the tree."
      : active ? `Now: the VM's current state, changed since ${quoted(active.name)}. Create a snapshot to keep it, or revert to ${quoted(active.name)} to throw the changes away.`
        : "Now: the VM's current state. Create a snapshot to keep it.";
    return;
  }
  $("details-help").hidden = true;
  body.hidden = false;
  if (body.dataset.snapshot !== s.id) {
    // Another snapshot's history must not show while this one's loads.
    body.dataset.snapshot = s.id;
    $("history").replaceChildren();
    $("d-by").textContent = "";
  }
  $("d-name").textContent = s.name;
  $("d-description").textContent = s.description || "";
  $("d-state").textContent = `${SNAPSHOT_STATE[s.state] || s.state.toLowerCase()}${s.active ? " · active: the VM runs from here" : ""}`;
  $("d-created").textContent = time(s.createdAt);
  $("d-stale").hidden = !s.stale;
  $("d-stale").textContent = s.stale ? staleWords(s) : "";
  const failure = s.state === "UNRESOURCED" ? failedTasks().get(s.id) : null;
  $("d-failure").hidden = !failure;
  $("d-failure").textContent = failure ? `Failed: ${failure}` : "";
  const whys = $("snapshot-whys");
  whys.replaceChildren();
  const actions = s.actions;
  for (const [id, key, label] of [["apply", "apply", "Apply"], ["rename", "rename", "Rename"],
    ["delete", "delete", "Delete"], ["delete-subtree", "deleteSubtree", "Delete with all below"]]) {
    const button = $(id);
    if (!actions) { button.disabled = true; continue; } // just arrived by an event: offers follow
    offer(button, null, actions[key]);
    if (key === "deleteSubtree" && !(childrenOf().get(s.id) || []).length) button.hidden = true;
    if (!actions[key].allowed && actions[key].refusal !== "ROLE" && !button.hidden) {
      whys.append(el("li", {}, `${label}: ${actions[key].reason}`));
    }
  }
  $("snapshot-toolbar").hidden = !mayAct();
  clearTimeout(detailsTimer);
  detailsTimer = setTimeout(() => loadHistory(s.id), 120);
}

async function loadHistory(id) {
  let data;
  try {
    data = await gql(`query($s: ID!) { snapshot(id: $s) { history { state actor at } } }`, { s: id });
  } catch { return; }
  if (state.selected !== id || !data.snapshot) return;
  const history = data.snapshot.history;
  $("d-by").textContent = history.length ? history[0].actor : "";
  $("history").replaceChildren(...history.map((h) =>
    el("li", {}, `${time(h.at)}: ${SNAPSHOT_STATE[h.state] || h.state.toLowerCase()} (${h.actor})`)));
}

// ---- Actions ----------------------------------------------------------------------------

const PAYLOAD = `{ snapshot { id name } task { ${TASK_FIELDS} } }`;

async function act(mutation, variables) {
  showError("");
  try {
    const data = await gql(mutation, variables);
    const payload = Object.values(data)[0];
    // Its events may have come before this answer; they are newer.
    if (!state.taskStates.has(payload.task.id)) showProgress(payload.task);
    refreshVmSoon(0);
    return true;
  } catch (e) {
    showError(e.message);
    return false;
  }
}

$("create").addEventListener("click", () => {
  $("create-form").hidden = false;
  $("snap-name").focus();
});
$("create-cancel").addEventListener("click", () => { $("create-form").reset(); $("create-form").hidden = true; $("create").focus(); });
$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const ok = await act(`mutation($v: ID!, $n: String!, $d: String) { createSnapshot(vmId: $v, name: $n, description: $d) ${PAYLOAD} }`,
    { v: state.vmId, n: $("snap-name").value, d: $("snap-description").value || null });
  if (ok) { $("create-form").reset(); $("create-form").hidden = true; }
});

/** Apply (or revert to) snapshot `s`, offering to save the current state first. */
async function applyFlow(s, revert) {
  const vm = state.vm;
  const active = vm.activeSnapshot;
  const lost = active && active.id !== s.id
    ? `Changes made since ${quoted(active.name)} are lost`
    : `Changes made since ${quoted(s.name)} was taken are lost`;
  const stamp = new Date().toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const answer = await ask({
    title: revert ? `Revert to ${quoted(s.name)}?` : `Apply ${quoted(s.name)}?`,
    text: `The VM returns to ${quoted(s.name)}. ${lost}, unless you save them first.`,
    save: { offer: vm.actions.create, name: `before ${revert ? "reverting" : "applying"} ${s.name}, ${stamp}`.slice(0, 128) },
    verb: revert ? "Revert" : "Apply",
  });
  if (!answer) return;
  if (answer.saveAs) {
    await act(`mutation($s: ID!, $n: String) { applySnapshot(id: $s, saveCurrentAs: $n) ${PAYLOAD} }`, { s: s.id, n: answer.saveAs });
  } else if (revert) {
    await act(`mutation($v: ID!) { revertSnapshot(vmId: $v) ${PAYLOAD} }`, { v: state.vmId });
  } else {
    await act(`mutation($s: ID!) { applySnapshot(id: $s) ${PAYLOAD} }`, { s: s.id });
  }
}

$("apply").addEventListener("click", () => { const s = selectedSnapshot(); if (s) applyFlow(s, false); });
$("revert").addEventListener("click", () => {
  const active = state.vm && state.vm.activeSnapshot;
  const s = active && state.vm.snapshots.find((x) => x.id === active.id);
  if (s) applyFlow(s, true);
});

async function deleteFlow(s, subtree) {
  let forecast;
  try {
    const data = await gql(`query($s: ID!, $t: Boolean!) { snapshot(id: $s) {
      deleteForecast(removeSubtree: $t) { removed movesActive activeAfter { id name } } } }`, { s: s.id, t: subtree });
    forecast = data.snapshot.deleteForecast;
  } catch (e) { showError(e.message); return; }
  const kids = (childrenOf().get(s.id) || []).length;
  let text = subtree
    ? `${quoted(s.name)} and everything below it, ${plural(forecast.removed, "snapshot")} in all, will be deleted.`
    : `${quoted(s.name)} will be deleted${kids ? `; ${kids === 1 ? "its child moves" : `its ${kids} children move`} up to its parent` : ""}.`;
  let now = "";
  if (forecast.movesActive) {
    now = forecast.activeAfter
      ? `“Now” hangs below what you delete. Afterwards the active snapshot is ${quoted(forecast.activeAfter.name)}: “Revert” will go back to ${quoted(forecast.activeAfter.name)}, an older state. The VM itself keeps running as it is.`
      : "“Now” hangs below what you delete. Afterwards no snapshot is left to revert to. The VM itself keeps running as it is.";
  } else {
    text += " The VM's current state and its active snapshot are not affected.";
  }
  const answer = await ask({
    title: subtree ? `Delete ${plural(forecast.removed, "snapshot")}?` : `Delete ${quoted(s.name)}?`,
    text, now, verb: "Delete",
  });
  if (answer) {
    await act(`mutation($s: ID!, $t: Boolean) { deleteSnapshot(id: $s, removeSubtree: $t) ${PAYLOAD} }`, { s: s.id, t: subtree });
  }
}

$("delete").addEventListener("click", () => { const s = selectedSnapshot(); if (s) deleteFlow(s, false); });
$("delete-subtree").addEventListener("click", () => { const s = selectedSnapshot(); if (s) deleteFlow(s, true); });

$("rename").addEventListener("click", async () => {
  const s = selectedSnapshot();
  if (!s) return;
  const answer = await ask({ title: `Rename ${quoted(s.name)}`, text: "Renaming needs no task: the host knows snapshots by ids.",
    fields: { name: s.name, description: s.description || "" }, verb: "Save", safe: true });
  if (!answer) return;
  try {
    await gql("mutation($s: ID!, $n: String, $d: String) { updateSnapshot(id: $s, name: $n, description: $d) { id } }",
      { s: s.id, n: answer.name, d: answer.description || null });
    showError("");
    loadVm(state.vmId);
  } catch (e) { showError(e.message); }
});

/** A modal question; resolves to null (cancelled) or what was entered. */
function ask({ title, text, now = "", save = null, fields = null, verb, safe = false }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-now").hidden = !now;
  $("confirm-now").textContent = now;
  $("confirm-save").hidden = !save;
  if (save) {
    const allowed = save.offer.allowed;
    $("save-first").checked = allowed;
    $("save-first").disabled = !allowed;
    $("save-name").value = save.name;
    $("save-name").disabled = !allowed;
    $("save-why").textContent = allowed ? "Recommended: you can come back to it." : `Not possible now: ${save.offer.reason}`;
  }
  $("confirm-fields").hidden = !fields;
  if (fields) { $("edit-name").value = fields.name; $("edit-description").value = fields.description; }
  $("confirm-ok").textContent = verb;
  $("confirm-ok").className = safe ? "primary" : "danger";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") { resolve(null); return; }
      resolve({
        saveAs: save && $("save-first").checked ? $("save-name").value : null,
        name: $("edit-name").value,
        description: $("edit-description").value,
      });
    }, { once: true });
    dialog.showModal();
    (fields ? $("edit-name") : $("confirm-cancel")).focus();
  });
}
$("save-first").addEventListener("change", (e) => { $("save-name").disabled = !e.target.checked; });

// ---- Task log ---------------------------------------------------------------------------

function drawTasks() {
  $("tasks").replaceChildren(...state.tasks.map((t) => {
    const how = t.finished
      ? `${TASK_STATE[t.state]}${t.finishedAt ? ` at ${clock(t.finishedAt)}` : ""}${t.error ? `: ${t.error}` : ""}`
      : `${TASK_STATE[t.state]}${t.progress != null ? ` (${t.progress}%)` : ""}`;
    const steps = el("ol", {}, ...t.events.map((e) => el("li", {},
      `${clock(e.at)} ${TASK_STATE[e.state]}${e.progress != null ? ` ${e.progress}%` : ""}${e.phase ? ` · ${e.phase}` : ""}${e.message ? ` · ${e.message}` : ""}`)));
    return el("li", { className: t.state === "FAILED" ? "failed" : "" },
      el("details", {}, el("summary", {}, `${taskWords(t)} · by ${t.requestedBy} · ${how}`), steps));
  }));
  $("tasks-empty").hidden = state.tasks.length > 0;
}

// ---- Sign in and out --------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  try {
    await loadMe();
  } catch (e) {
    state.token = null;
    $("sign-in-error").textContent = e.code === "UNAUTHENTICATED" ? "That token is not valid." : e.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
});

async function loadMe() {
  const data = await gql("{ me { name role project { name } } }");
  state.me = data.me;
}

$("sign-out").addEventListener("click", () => signOut(""));

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.vmId = null;
  state.vm = null;
  state.me = null;
  if (state.socket) { const s = state.socket; state.socket = null; s.close(); }
  clearInterval(state.healthTimer);
  setOffline(false);
  $("app").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("token").focus();
}

async function start() {
  if (!state.me) {
    try { await loadMe(); } catch (e) {
      if (e.code !== "UNAUTHENTICATED") { $("sign-in-error").textContent = e.message; }
      return;
    }
  }
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").hidden = false;
  const project = state.me.project ? ` · project ${state.me.project.name}` : "";
  $("who").textContent = `${state.me.name} · ${state.me.role.toLowerCase()}${project}`;
  loadHosts();
  clearInterval(state.healthTimer);
  state.healthTimer = setInterval(() => { if (!document.hidden) loadHosts(); }, HEALTH_EVERY_MS);
  connectEvents();
}

// ---- Helpers ----------------------------------------------------------------------------

/** An element with attributes and children (strings become text, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "className") node.className = value;
    else if (key === "dateTime") node.dateTime = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

if (state.token) start(); else $("token").focus();
