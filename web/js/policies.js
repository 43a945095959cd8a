// The project's snapshot policies: each one's schedule and what it covers, its next run,
// and why it makes nothing any more (its token ended, or its runs kept being missed),
// with Resume where the API offers it.

import { $, el, plural, quoted, showError, state, time } from "./page.js";
import { POLICIES } from "./queries.js";
import { gql } from "./api.js";

export async function loadPolicies() {
  let data;
  try { data = await gql(POLICIES); } catch (e) { if (e.code !== "NETWORK") showError(e.message); return; }
  state.policies = data.policies;
  drawPolicies();
}

/** A schedule in words: "every 6 hours", or the cron expression and its zone. */
function schedule(p) {
  if (p.cron) return `cron ${p.cron} (${p.timeZone})`;
  const s = p.everySeconds;
  if (s % 86400 === 0) return `every ${plural(s / 86400, "day")}`;
  if (s % 3600 === 0) return `every ${plural(s / 3600, "hour")}`;
  if (s % 60 === 0) return `every ${plural(s / 60, "minute")}`;
  return `every ${plural(s, "second")}`;
}

/** Which VMs a policy covers, as the API names them. */
function covers(p) {
  if (p.vm) return `VM ${quoted(p.vm.name)}`;
  if (p.vmFilter) return `VMs named like ${quoted(p.vmFilter)}`;
  return "every VM of the project";
}

export function drawPolicies() {
  const policies = state.policies || [];
  $("policies").replaceChildren(...policies.map((p) => {
    const resume = p.actions.resume;
    const item = el("li", { className: p.stoppedBecause ? "stopped" : "", "data-policy": p.id },
      el("p", { className: "policy-name" }, p.name),
      el("p", { className: "meta" }, `${schedule(p)} · ${covers(p)}`),
      p.stoppedBecause
        ? el("p", { className: "warning" }, `Stopped: ${p.stoppedBecause}`)
        : el("p", { className: "meta" }, `Next run ${time(p.nextDueAt)}`));
    if (resume.allowed) {
      const button = el("button", { type: "button" }, `Resume ${quoted(p.name)}`);
      button.addEventListener("click", () => resumePolicy(p.id, button));
      item.append(button);
    } else if (p.stoppedBecause && resume.refusal !== "ROLE") {
      item.append(el("p", { className: "help" }, resume.reason));
    }
    return item;
  }));
  $("policies-section").hidden = policies.length === 0;
}

async function resumePolicy(id, button) {
  button.disabled = true;
  try {
    await gql("mutation($p: ID!) { resumePolicy(id: $p) { id } }", { p: id });
    showError("");
  } catch (e) {
    showError(e.message);
  }
  loadPolicies();
}
