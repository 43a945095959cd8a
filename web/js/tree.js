// The snapshot tree, drawn and navigated as a WAI-ARIA tree.

import { $, NOW, SNAPSHOT_STATE, el, plural, state, time } from "./page.js";
import { drawDetails } from "./details.js";

export function childrenOf() {
  const children = new Map();
  for (const s of state.vm.snapshots) {
    const parent = s.parent ? s.parent.id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  return children;
}

/** Unfolds every ancestor of the active snapshot, so that "You are here" shows. */
export function revealNow() {
  const byId = new Map(state.vm.snapshots.map((s) => [s.id, s]));
  let at = state.vm.activeSnapshot && byId.get(state.vm.activeSnapshot.id);
  while (at) { state.collapsed.delete(at.id); at = at.parent && byId.get(at.parent.id); }
}

export function drawTree() {
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
export function staleWords(s) {
  const hours = Math.round((Date.parse(s.staleSince) - Date.parse(s.createdAt)) / 36e5);
  return `Kept for more than ${plural(hours, "hour")}: an old snapshot slows its VM and keeps growing. Delete it, or keep it on purpose.`;
}

/** When a snapshot expires, in words: "in 3 hours", or why an expired one is kept. */
export function expiryWords(s) {
  if (!s.expiresAt) return "";
  const left = Date.parse(s.expiresAt) - Date.now();
  if (left > 0) {
    const hours = Math.round(left / 36e5);
    return hours >= 48 ? `in ${plural(Math.round(hours / 24), "day")}`
      : hours >= 1 ? `in ${plural(hours, "hour")}` : `in ${plural(Math.max(1, Math.round(left / 6e4)), "minute")}`;
  }
  return s.protected ? "expired; kept while protected"
    : s.active ? "expired; kept while it is the active snapshot" : "expired; the robot deletes it shortly";
}

/** A snapshot's row: its name, marks, state in words, failure and date. */
export function rowOf(s, failures, hidden) {
  const words = SNAPSHOT_STATE[s.state] || s.state.toLowerCase();
  const failure = s.state === "UNRESOURCED" ? failures.get(s.id) : null;
  const row = el("div", { className: "row", role: "treeitem", "aria-selected": String(state.selected === s.id) },
    el("span", { className: "twisty", "aria-hidden": "true" }),
    el("span", { className: "name", title: s.name }, s.name),
    s.active ? el("span", { className: "badge active-mark" }, "active") : null,
    s.protected ? el("span", { className: "badge protected", title: "Kept from deletes until unprotected" }, "protected") : null,
    s.state === "RUNNING" ? null
      : el("span", { className: `badge ${s.state === "UNRESOURCED" ? "failed" : "working"}` }, words),
    s.stale ? el("span", { className: "badge stale", title: staleWords(s) }, "stale") : null,
    s.expiresAt ? el("span", { className: "badge expiry", title: `Expires ${time(s.expiresAt)}: ${expiryWords(s)}` },
      Date.parse(s.expiresAt) > Date.now() ? `expires ${expiryWords(s)}` : "expired") : null,
    failure ? el("span", { className: "reason", title: failure }, failure) : null,
    hidden ? el("span", { className: "hidden-count" }, `+${plural(hidden, "hidden snapshot")}`) : null,
    el("time", { dateTime: s.createdAt }, time(s.createdAt)));
  row.dataset.id = s.id;
  return row;
}

/** Redraws the rows of `ids` in place (a change of state, not of shape), keeping focus. */
export function redrawRows(ids) {
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

export function countBelow(id, children) {
  let n = 0;
  const stack = [...(children.get(id) || [])];
  while (stack.length) { const s = stack.pop(); n += 1; stack.push(...(children.get(s.id) || [])); }
  return n;
}

/** The latest failure of each snapshot, from the VM's recent tasks. */
export function failedTasks() {
  const found = new Map();
  for (const t of state.tasks) { // newest first
    if (t.state !== "FAILED" || !t.error) continue;
    for (const s of [t.snapshot, t.savedAs]) if (s && !found.has(s.id)) found.set(s.id, t.error);
  }
  return found;
}

export function item(id) { return $("tree").querySelector(`[data-id="${CSS.escape(String(id))}"]`); }

export function scrollToItem(id) {
  const target = item(id);
  if (!target) return;
  const box = $("tree-box");
  const row = target;
  const top = row.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
  box.scrollTop = Math.max(0, top - box.clientHeight / 2);
}

export function focusItem(target, select = true) {
  if (!target) return;
  for (const i of $("tree").querySelectorAll('[tabindex="0"]')) i.tabIndex = -1;
  target.tabIndex = 0;
  target.focus();
  if (select) choose(target.dataset.id);
}

/** Selects a tree item: the details and the toolbar follow. */
export function choose(id) {
  if (state.selected === id) return;
  state.selected = id;
  for (const i of $("tree").querySelectorAll('[role="treeitem"]')) {
    i.setAttribute("aria-selected", String(i.dataset.id === id));
  }
  drawDetails();
}

export function toggle(id, open) {
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
