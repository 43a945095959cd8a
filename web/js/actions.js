// The actions, as the API offers them: create, apply (saving first if asked), revert,
// delete, rename, each confirmed in a dialog that says what it will do.

import { $, plural, quoted, showError, state } from "./page.js";
import { PAYLOAD } from "./queries.js";
import { gql } from "./api.js";
import { refreshVmSoon, showProgress } from "./live.js";
import { loadVm, offer } from "./vms.js";
import { selectedSnapshot } from "./details.js";


export async function act(mutation, variables) {
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
  const hours = Number($("snap-expires").value);
  const expires = hours ? new Date(Date.now() + hours * 36e5).toISOString() : null;
  const ok = await act(`mutation($v: ID!, $n: String!, $d: String, $e: DateTime) { createSnapshot(vmId: $v, name: $n, description: $d, expiresAt: $e) ${PAYLOAD} }`,
    { v: state.vmId, n: $("snap-name").value, d: $("snap-description").value || null, e: expires });
  if (ok) { $("create-form").reset(); $("create-form").hidden = true; }
});

/** Apply (or revert to) snapshot `s`, offering to save the current state first. */
export async function applyFlow(s, revert) {
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

export async function deleteFlow(s, subtree) {
  let forecast;
  try {
    const data = await gql(`query($s: ID!, $t: Boolean!) { snapshot(id: $s) {
      deleteForecast(removeSubtree: $t) { removed movesUp movesActive activeAfter { id name } } } }`, { s: s.id, t: subtree });
    forecast = data.snapshot.deleteForecast;
  } catch (e) { showError(e.message); return; }
  const kids = forecast.movesUp;
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

$("protect").addEventListener("click", async () => {
  const s = selectedSnapshot();
  if (!s) return;
  try {
    await gql("mutation($s: ID!, $p: Boolean) { updateSnapshot(id: $s, protected: $p) { id protected } }",
      { s: s.id, p: !s.protected });
    showError("");
    loadVm(state.vmId);
  } catch (e) { showError(e.message); }
});

/** A modal question; resolves to null (cancelled) or what was entered. */
export function ask({ title, text, now = "", save = null, fields = null, verb, safe = false }) {
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
