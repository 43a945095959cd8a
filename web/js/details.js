// The selected snapshot's details and history, and the VM's task log.

import { $, NOW, SNAPSHOT_STATE, TASK_STATE, clock, el, quoted, state, taskWords, time } from "./page.js";
import { gql } from "./api.js";
import { offer } from "./vms.js";
import { childrenOf, expiryWords, failedTasks, staleWords } from "./tree.js";

export function selectedSnapshot() {
  return state.vm && state.vm.snapshots.find((s) => s.id === state.selected);
}

let detailsTimer = null;
export function drawDetails() {
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
  $("d-protected").textContent = s.protected ? "yes: kept from deletes until unprotected" : "no";
  $("d-expires").textContent = s.expiresAt ? `${time(s.expiresAt)} (${expiryWords(s)})` : "never";
  $("protect").textContent = s.protected ? "Unprotect" : "Protect";
  $("d-stale").hidden = !s.stale;
  $("d-stale").textContent = s.stale ? staleWords(s) : "";
  const failure = s.state === "UNRESOURCED" ? failedTasks().get(s.id) : null;
  $("d-failure").hidden = !failure;
  $("d-failure").textContent = failure ? `Failed: ${failure}` : "";
  const whys = $("snapshot-whys");
  whys.replaceChildren();
  const actions = s.actions;
  for (const [id, key, label] of [["apply", "apply", "Apply"], ["rename", "rename", "Rename"],
    ["protect", "protect", "Protect"], ["delete", "delete", "Delete"],
    ["delete-subtree", "deleteSubtree", "Delete with all below"]]) {
    const button = $(id);
    if (!actions) { button.disabled = true; continue; } // just arrived by an event: offers follow
    offer(button, null, actions[key]);
    if (key === "deleteSubtree" && !(childrenOf().get(s.id) || []).length) button.hidden = true;
    if (!actions[key].allowed && actions[key].refusal !== "ROLE" && !button.hidden) {
      whys.append(el("li", {}, `${label}: ${actions[key].reason}`));
    }
  }
  $("snapshot-toolbar").hidden = !!actions && Object.values(actions).every((a) => a.refusal === "ROLE");
  clearTimeout(detailsTimer);
  detailsTimer = setTimeout(() => loadHistory(s.id), 120);
}

/** Why a state changed, where the actor alone does not say it. */
const HISTORY_REASON = { expired: ", expired" };

export async function loadHistory(id) {
  let data;
  try {
    data = await gql(`query($s: ID!) { snapshot(id: $s) { history { state actor reason at } } }`, { s: id });
  } catch { return; }
  if (state.selected !== id || !data.snapshot) return;
  const history = data.snapshot.history;
  $("d-by").textContent = history.length ? history[0].actor : "";
  $("history").replaceChildren(...history.map((h) =>
    el("li", {}, `${time(h.at)}: ${SNAPSHOT_STATE[h.state] || h.state.toLowerCase()} (${h.actor}${HISTORY_REASON[h.reason] || ""})`)));
}

export function drawTasks() {
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
