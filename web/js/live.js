// Live task events on the page: each event patches the VM shown and the progress bar
// at once, and a read afterwards brings what an event cannot.

import { $, NOW, TASK_STATE, el, showError, state, taskWords } from "./page.js";
import { gql } from "./api.js";
import { loadHosts, loadVm } from "./vms.js";
import { drawTree, item, redrawRows } from "./tree.js";
import { drawDetails } from "./details.js";

let vmTimer = null;
let hostsTimer = null;
export function refreshVmSoon(delay = 80) {
  clearTimeout(vmTimer);
  vmTimer = setTimeout(() => { if (state.vmId) loadVm(state.vmId); }, delay);
}
export function refreshHostsSoon() {
  clearTimeout(hostsTimer);
  hostsTimer = setTimeout(loadHosts, 300);
}
export function refreshAll() { loadHosts(); if (state.vmId) loadVm(state.vmId); }

export function onEvent(event) {
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

/** Puts an event's snapshots, and the VM's active snapshot it names, into the VM
 * shown: null when nothing changed, else the rows changed, whether the tree's shape did
 * (a new snapshot), and whether "Now" moved. */
export function patch(task) {
  const ids = [];
  let shape = false;
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
    ids.push(s.id);
  }
  const active = task.vm.activeSnapshot;
  const was = state.vm.activeSnapshot;
  const moved = (active ? active.id : null) !== (was ? was.id : null);
  if (moved) {
    for (const other of state.vm.snapshots) {
      const now = active !== null && other.id === active.id;
      if (other.active !== now) { other.active = now; ids.push(other.id); }
    }
    state.vm.activeSnapshot = active;
  }
  return ids.length || moved ? { ids: [...new Set(ids)], shape, moved } : null;
}

/** Moves "Now" under the active snapshot, in place; false when the tree must be drawn
 * again instead (the active snapshot is folded away, or "Now" is not shown). */
export function moveNow() {
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
export function renumber(list) {
  const rows = [...list.children].map((li) => li.querySelector(":scope > .row"));
  rows.forEach((row, i) => {
    row.setAttribute("aria-posinset", String(i + 1));
    row.setAttribute("aria-setsize", String(rows.length));
  });
}

export function showProgress(task, event = task) {
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
  const offered = task.actions && task.actions.cancel;
  cancel.hidden = ended || !offered || !offered.allowed;
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
