// The transport: GraphQL over HTTP for reads and actions, and a WebSocket
// (graphql-transport-ws) for live task events, resumed after the last one seen.

import { $, state } from "./page.js";
import { EVENTS } from "./queries.js";
import { onEvent, refreshAll } from "./live.js";
import { signOut } from "./session.js";

export class ApiError extends Error {
  constructor(message, code) { super(message); this.code = code; }
}

export async function gql(query, variables = {}) {
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

export function connectEvents() {
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
      subscribe(socket);
      if (state.offline) { setOffline(false); refreshAll(); }
    } else if (msg.type === "error" && errorCode(msg.payload) === "CURSOR_EXPIRED") {
      // Away so long that the events missed were retired: read afresh, then follow.
      state.lastEvent = null;
      refreshAll();
      subscribe(socket);
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

/** Follows every event the page may see, after the last one it saw. */
function subscribe(socket) {
  socket.send(JSON.stringify({
    id: "events", type: "subscribe", payload: { query: EVENTS, variables: { after: state.lastEvent } },
  }));
}

/** The code of the first of a subscription's errors. */
function errorCode(errors) {
  const first = Array.isArray(errors) ? errors[0] : null;
  return first && first.extensions ? first.extensions.code : null;
}

export function setOffline(offline) {
  if (state.offline === offline) return;
  state.offline = offline;
  const banner = $("offline");
  banner.hidden = !offline;
  banner.textContent = offline ? "Connection to snaptree lost. Reconnecting…" : "";
  // A message about the lost connection is stale once it is back.
  if (!offline) $("action-error").textContent = "";
}
