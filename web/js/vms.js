// The hosts and their VMs, the VM chosen, and its toolbar of offered actions.

import { $, NOW, el, healthWords, plural, quoted, showError, state } from "./page.js";
import { VM_QUERY } from "./queries.js";
import { gql } from "./api.js";
import { showProgress } from "./live.js";
import { drawTree, revealNow, scrollToItem } from "./tree.js";
import { drawDetails, drawTasks } from "./details.js";

export async function loadHosts() {
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
export function drawVmMeta() {
  const vm = state.vm;
  if (!vm) return;
  const listed = state.hosts.find((h) => h.id === vm.host.id);
  const down = healthWords(listed ? listed.health : vm.host.health);
  const limit = vm.snapshotLimit == null ? "" : ` of ${vm.snapshotLimit}`;
  $("vm-meta").textContent =
    `${vm.identifier} on ${vm.host.name} (${vm.host.hypervisor.toLowerCase()})${down ? `, ${down}` : ""} · ${vm.stateName.toLowerCase()} · ${plural(vm.snapshotCount, "snapshot")}${limit}`;
}

export function vmLabel(vm) {
  const limit = vm.snapshotLimit == null ? "" : ` of ${vm.snapshotLimit}`;
  return `${vm.name}, ${vm.stateName.toLowerCase()}, ${plural(vm.snapshotCount, "snapshot")}${limit}${vm.busy ? ", busy" : ""}`;
}

export function drawHosts() {
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

export function selectVm(id) {
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

export async function loadVm(id) {
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

/** An offer on a control: hidden when the role may not act, disabled with its reason. */
export function offer(button, why, allowance) {
  button.hidden = allowance.refusal === "ROLE";
  button.disabled = !allowance.allowed;
  if (why) why.textContent = allowance.allowed || allowance.refusal === "ROLE" ? "" : allowance.reason;
}

export function drawToolbar() {
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
  // The API's own sentence for a role that may look, not act.
  const looking = vm.actions.create.refusal === "ROLE";
  note.hidden = !looking;
  note.textContent = looking ? vm.actions.create.reason : "";
}
