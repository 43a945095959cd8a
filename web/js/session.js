// Signing in and out, and starting the page once a token is accepted.

import { $, HEALTH_EVERY_MS, TOKEN_KEY, state } from "./page.js";
import { connectEvents, gql, setOffline } from "./api.js";
import { loadHosts } from "./vms.js";
import { loadPolicies } from "./policies.js";

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

export async function loadMe() {
  const data = await gql("{ me { name role project { name } } }");
  state.me = data.me;
}

$("sign-out").addEventListener("click", () => signOut(""));

export function signOut(message) {
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

export async function start() {
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
  loadPolicies();
  clearInterval(state.healthTimer);
  // Health and policies change without an event: read them again now and then.
  state.healthTimer = setInterval(() => {
    if (!document.hidden) { loadHosts(); loadPolicies(); }
  }, HEALTH_EVERY_MS);
  connectEvents();
}
