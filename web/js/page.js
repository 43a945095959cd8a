// The page's shared state, its words for what the API says, and the helpers that make
// elements. Imports nothing: every other module builds on it.

export const $ = (id) => document.getElementById(id);
export const TOKEN_KEY = "snaptree-token";
export const NOW = "now"; // the tree item of the VM's current state

export const state = {
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
  policies: [],      // the project's policies, as last loaded
};

/** How often the host list (and with it each host's health) is read again. */
export const HEALTH_EVERY_MS = 20_000;


export const SNAPSHOT_STATE = {
  REQUESTED: "waiting to be created", BUILDING: "being created", UNRESOURCED: "failed",
  RUNNING: "ready", SCRUB: "waiting to be deleted", RUNNING_UPDATE: "waiting to be applied",
  RUNNING_UPDATING: "being applied", SCRUBBING: "being deleted", CLOSED: "deleted",
};
export const TASK_STATE = {
  QUEUED: "waiting", RUNNING: "running", SUCCEEDED: "done", FAILED: "failed", CANCELLED: "cancelled",
};
export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
export const quoted = (name) => `“${name}”`;
// One formatter each: toLocaleString makes a new one per call, most of a 200-node redraw.
export const STAMP = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
export const CLOCK = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
export const time = (at) => STAMP.format(new Date(at));
export const clock = (at) => CLOCK.format(new Date(at));
/** A host's health in words: "" while it answers, or before a robot has called it. */
export const healthWords = (health) => (health && !health.reachable ? `unreachable since ${time(health.since)}` : "");

/** What a task does, in an operator's words. */
export function taskWords(task) {
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

export function showError(message) {
  const box = $("action-error");
  box.textContent = message;
  if (message) box.scrollIntoView({ block: "nearest" });
}

/** An element with attributes and children (strings become text, never HTML). */
export function el(tag, attrs = {}, ...children) {
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
