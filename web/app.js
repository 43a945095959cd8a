// snaptree dashboard: the same GraphQL API scripts use, over HTTP for queries and
// actions, and over a WebSocket (graphql-transport-ws) for live task events.
// Everything user-typed is put into the page as text (textContent), never as HTML.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "snaptree-token";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  vmId: null,      // the VM shown
  vm: null,        // its last loaded data
  lastEvent: null, // the newest event id seen, to resume after a reconnect
  socket: null,
};

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
    throw new ApiError("snaptree cannot be reached; check that the server is running.", "NETWORK");
  }
  const body = await response.json();
  if (body.errors && body.errors.length) {
    const e = body.errors[0];
    const code = e.extensions && e.extensions.code;
    if (code === "UNAUTHENTICATED") signOut("Your token was not accepted; sign in again.");
    throw new ApiError(e.message, code);
  }
  return body.data;
}

// ---- Live events over WebSocket (graphql-transport-ws) ----------------------------------

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
      const after = state.lastEvent;
      socket.send(JSON.stringify({
        id: "events", type: "subscribe",
        payload: {
          query: `subscription($after: ID) { events(after: $after) {
            id state progress phase message task { id kind state error vm { id } snapshot { name } } } }`,
          variables: { after },
        },
      }));
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
    // Reconnect and pick up from the last event seen: nothing is missed.
    if (state.token) setTimeout(connectEvents, 1000);
  };
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { loadHosts(); if (state.vmId) loadVm(state.vmId); }, 60);
}

function onEvent(event) {
  state.lastEvent = event.id;
  if (state.vmId && event.task.vm.id === state.vmId) showProgress(event);
  refreshSoon();
}

// ---- Progress ---------------------------------------------------------------------------

const KIND = { BUILD: "Creating", UPDATE: "Applying", SCRUB: "Deleting" };

function showProgress(event) {
  const box = $("progress");
  const done = ["SUCCEEDED", "FAILED", "CANCELLED"].includes(event.state);
  const name = event.task.snapshot ? `“${event.task.snapshot.name}”` : "";
  let text = `${KIND[event.task.kind] || event.task.kind} ${name}`;
  if (event.state === "SUCCEEDED") text += ": done.";
  else if (event.state === "FAILED") text += `: failed. ${event.task.error || event.message || ""}`;
  else if (event.state === "CANCELLED") text += ": cancelled.";
  else if (event.phase) text += `: ${event.phase}…`;
  const percent = event.state === "SUCCEEDED" ? 100 : (event.progress ?? 0);
  box.hidden = false;
  box.className = `progress ${done ? event.state.toLowerCase() : ""}`;
  $("progress-label").textContent = text;
  $("progress-bar").setAttribute("aria-valuenow", String(percent));
  $("progress-bar").setAttribute("aria-valuetext", `${percent}%`);
  $("progress-fill").style.width = `${percent}%`;
}

// ---- Hosts and VMs ----------------------------------------------------------------------

async function loadHosts() {
  let data;
  try {
    data = await gql(`{ hosts { id name hypervisor maxSnapshotsPerVm
      vms { id name stateName snapshotCount snapshotLimit busy } } }`);
  } catch (e) { $("action-error").textContent = e.message; return; }
  const root = $("hosts");
  root.replaceChildren();
  if (!data.hosts.length) {
    root.append(el("p", { className: "empty" }, "No VMs in your project yet."));
  }
  for (const host of data.hosts) {
    root.append(el("p", { className: "host-name" }, host.name, " ",
      el("span", { className: "host-kind" }, host.hypervisor.toLowerCase())));
    const list = el("ul");
    for (const vm of host.vms) {
      const limit = vm.snapshotLimit == null ? "" : ` / ${vm.snapshotLimit}`;
      const button = el("button", { type: "button", className: "vm-link" },
        el("span", { className: vm.busy ? "busy-dot" : "" }, vm.name),
        el("span", { className: "count" }, `${vm.stateName.toLowerCase()} · ${vm.snapshotCount}${limit}`));
      button.dataset.vm = vm.id;
      button.setAttribute("aria-label",
        `${vm.name}, ${vm.stateName.toLowerCase()}, ${vm.snapshotCount} snapshots${vm.snapshotLimit == null ? "" : ` of ${vm.snapshotLimit}`}${vm.busy ? ", busy" : ""}`);
      if (vm.id === state.vmId) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => selectVm(vm.id));
      list.append(el("li", {}, button));
    }
    root.append(list);
  }
}

function selectVm(id) {
  state.vmId = id;
  $("progress").hidden = true;
  $("history").replaceChildren();
  $("history-help").hidden = false;
  $("action-error").textContent = "";
  for (const b of document.querySelectorAll(".vm-link")) {
    if (b.dataset.vm === id) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
  }
  loadVm(id);
}

const VM_QUERY = `query($v: ID!) {
  vm(id: $v) { id name identifier stateName snapshotCount snapshotLimit busy
    host { name hypervisor }
    activeSnapshot { id name }
    snapshots { id name description state active createdAt parent { id } }
    currentTask { id kind state progress phase snapshot { name } } }
  tasks(vmId: $v, first: 8) { edges { node { id kind state error createdAt snapshot { name }
    events { id state progress phase message at } } } } }`;

async function loadVm(id) {
  let data;
  try { data = await gql(VM_QUERY, { v: id }); } catch (e) { $("action-error").textContent = e.message; return; }
  if (state.vmId !== id) return;
  const vm = data.vm;
  if (!vm) { $("vm").hidden = true; $("no-vm").hidden = false; return; }
  state.vm = vm;
  $("no-vm").hidden = true;
  $("vm").hidden = false;
  $("vm-name").textContent = vm.name;
  const limit = vm.snapshotLimit == null ? "no limit" : `limit ${vm.snapshotLimit}`;
  $("vm-meta").textContent =
    `${vm.identifier} on ${vm.host.name} (${vm.host.hypervisor.toLowerCase()}) · ${vm.stateName.toLowerCase()} · ${vm.snapshotCount} snapshots, ${limit}`;
  $("revert").disabled = !vm.activeSnapshot || vm.busy;
  $("create").disabled = vm.busy;
  if (vm.currentTask) {
    showProgress({ state: vm.currentTask.state, progress: vm.currentTask.progress,
      phase: vm.currentTask.phase, task: vm.currentTask });
  }
  drawTree(vm);
  drawTasks(data.tasks.edges.map((e) => e.node));
}

// ---- The tree ---------------------------------------------------------------------------

function drawTree(vm) {
  const children = new Map();
  const ids = new Set(vm.snapshots.map((s) => s.id));
  for (const s of vm.snapshots) {
    const parent = s.parent && ids.has(s.parent.id) ? s.parent.id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const subtreeSize = (id) => 1 + (children.get(id) || []).reduce((n, c) => n + subtreeSize(c.id), 0);
  const nowItem = () => el("li", {},
    el("span", { className: "now", title: "The VM's current state: a child of the active snapshot" }, "Now"));

  const branch = (parent) => {
    const list = el("ul");
    for (const s of children.get(parent) || []) list.append(node(s));
    if (parent === null && !vm.activeSnapshot) list.append(nowItem());
    return list;
  };
  const node = (s) => {
    const stable = ["RUNNING", "UNRESOURCED"].includes(s.state);
    const box = el("div", { className: `node${s.active ? " active" : ""}` },
      el("span", { className: "name" }, s.name),
      el("span", { className: `badge ${s.state}` }, s.state.replace("_", " ")),
      s.active ? el("span", { className: "badge active-mark" }, "active") : null,
      el("time", { dateTime: s.createdAt }, new Date(s.createdAt).toLocaleString()),
      s.description ? el("span", { className: "desc" }, s.description) : null,
      action("Apply", `Apply snapshot ${s.name}`, () => applySnapshot(s), vm.busy || s.state !== "RUNNING"),
      action("Delete", `Delete snapshot ${s.name}`, () => deleteSnapshot(s, false, (children.get(s.id) || []).length), vm.busy || !stable),
      (children.get(s.id) || []).length
        ? action("Delete subtree", `Delete snapshot ${s.name} and all below it`, () => deleteSnapshot(s, true, subtreeSize(s.id)), vm.busy || !stable)
        : null,
      action("History", `History of snapshot ${s.name}`, () => showHistory(s), false));
    // Nested lists: screen readers announce each level; every action is a button.
    const item = el("li", { "aria-label": `${s.name}, ${s.state.toLowerCase()}${s.active ? ", active" : ""}` }, box);
    item.dataset.snapshot = s.name;
    const sub = branch(s.id);
    if (s.active) sub.append(nowItem());
    if (sub.children.length) item.append(sub);
    return item;
  };
  const tree = $("tree");
  tree.replaceChildren(...branch(null).children);
}

function action(label, ariaLabel, onClick, disabled) {
  const b = el("button", { type: "button", "aria-label": ariaLabel }, label);
  b.disabled = disabled;
  b.addEventListener("click", onClick);
  return b;
}

// ---- Actions ----------------------------------------------------------------------------

async function act(mutation, variables) {
  $("action-error").textContent = "";
  try {
    const data = await gql(mutation, variables);
    const payload = Object.values(data)[0];
    showProgress({ state: payload.task.state, progress: 0, phase: "queued", task: { ...payload.task, snapshot: payload.snapshot } });
    refreshSoon();
  } catch (e) {
    $("action-error").textContent = e.message;
  }
}

const PAYLOAD = "{ snapshot { id name } task { id kind state } }";

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("snap-name").value;
  const description = $("snap-description").value || null;
  await act(`mutation($v: ID!, $n: String!, $d: String) { createSnapshot(vmId: $v, name: $n, description: $d) ${PAYLOAD} }`,
    { v: state.vmId, n: name, d: description });
  if (!$("action-error").textContent) { $("snap-name").value = ""; $("snap-description").value = ""; }
});

$("revert").addEventListener("click", async () => {
  const active = state.vm && state.vm.activeSnapshot;
  if (!active) return;
  const ok = await confirmAction(`Revert to “${active.name}”?`,
    `Every change made to the VM since “${active.name}” was taken is lost.`, "Revert");
  if (ok) await act(`mutation($v: ID!) { revertSnapshot(vmId: $v) ${PAYLOAD} }`, { v: state.vmId });
});

async function applySnapshot(s) {
  const active = state.vm.activeSnapshot;
  const since = active ? `since the active snapshot “${active.name}”` : "it has now";
  const ok = await confirmAction(`Apply “${s.name}”?`,
    `The VM returns to this snapshot. Every change ${since} is lost.`, "Apply");
  if (ok) await act(`mutation($s: ID!) { applySnapshot(id: $s) ${PAYLOAD} }`, { s: s.id });
}

async function deleteSnapshot(s, subtree, count) {
  const text = subtree
    ? `“${s.name}” and everything below it, ${count} snapshots in all, will be deleted. The VM's current state is not affected.`
    : `“${s.name}” will be deleted${count ? `; its ${count === 1 ? "child moves" : `${count} children move`} up to its parent` : ""}. The VM's current state is not affected.`;
  const ok = await confirmAction(subtree ? `Delete ${count} snapshots?` : `Delete “${s.name}”?`, text, "Delete");
  if (ok) await act(`mutation($s: ID!, $t: Boolean) { deleteSnapshot(id: $s, removeSubtree: $t) ${PAYLOAD} }`, { s: s.id, t: subtree });
}

function confirmAction(title, text, verb) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = verb;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// ---- History and task log ---------------------------------------------------------------

async function showHistory(s) {
  let data;
  try {
    data = await gql(`query($s: ID!) { snapshot(id: $s) { name history { state actor at } } }`, { s: s.id });
  } catch (e) { $("action-error").textContent = e.message; return; }
  $("history-help").textContent = `“${data.snapshot.name}”`;
  $("history").replaceChildren(...data.snapshot.history.map((h) =>
    el("li", {}, `${new Date(h.at).toLocaleString()}: ${h.state.toLowerCase()} (${h.actor})`)));
}

function drawTasks(tasks) {
  $("tasks").replaceChildren(...tasks.map((t) => {
    const name = t.snapshot ? ` “${t.snapshot.name}”` : "";
    const item = el("li", { className: t.state === "FAILED" ? "failed" : "" },
      `${KIND[t.kind] || t.kind}${name}: ${t.state.toLowerCase()}${t.error ? `: ${t.error}` : ""}`);
    const steps = el("ol");
    for (const e of t.events) {
      const words = [e.phase, e.message].filter(Boolean).join(": ");
      steps.append(el("li", {}, `${new Date(e.at).toLocaleTimeString()} ${e.state.toLowerCase()}${e.progress != null ? ` ${e.progress}%` : ""}${words ? ` ${words}` : ""}`));
    }
    item.append(steps);
    return item;
  }));
}

// ---- Sign in and out --------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  try {
    await gql("{ hosts { id } }");
  } catch (e) {
    state.token = null;
    $("sign-in-error").textContent = e.code === "UNAUTHENTICATED" ? "That token is not valid." : e.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
});

$("sign-out").addEventListener("click", () => signOut(""));

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.vmId = null;
  if (state.socket) { const s = state.socket; state.socket = null; s.close(); }
  $("app").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("token").focus();
}

function start() {
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").hidden = false;
  $("who").textContent = "Signed in";
  loadHosts();
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
