// The query explorer: GraphiQL (vendored, see web/vendor/README.md) signed in with an
// API token. Queries and mutations go over HTTP; subscriptions over a WebSocket
// speaking graphql-transport-ws, as the dashboard's do. The token is kept for this tab
// only (sessionStorage, the dashboard's key).
"use strict";

const TOKEN_KEY = "snaptree-token";
const $ = (id) => document.getElementById(id);
let root = null;

/** Whether the operation GraphiQL runs is a subscription. */
function isSubscription(params) {
  const text = params.query.replace(/#[^\n]*/g, "");
  const name = params.operationName;
  const op = name
    ? new RegExp(`\\b(query|mutation|subscription)\\s+${name}\\b`).exec(text)
    : /^\s*(query|mutation|subscription)?\s*[{(A-Za-z_]/m.exec(text.trim());
  return Boolean(op && op[1] === "subscription");
}

/** A subscription's results as an async iterable, over one WebSocket. */
function subscribe(params, token) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  const ws = new WebSocket(url, "graphql-transport-ws");
  const queue = [];
  let wake = null;
  const push = (item) => { queue.push(item); if (wake) { wake(); wake = null; } };
  const send = (message) => ws.send(JSON.stringify(message));
  ws.onopen = () => send({ type: "connection_init", payload: { authorization: `Bearer ${token}` } });
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "connection_ack") send({ id: "1", type: "subscribe", payload: params });
    else if (msg.type === "next") push({ value: msg.payload });
    else if (msg.type === "error") { push({ value: { errors: msg.payload } }); push({ done: true }); }
    else if (msg.type === "complete") push({ done: true });
    else if (msg.type === "ping") send({ type: "pong" });
  };
  ws.onclose = (e) => {
    if (e.code !== 1000) push({ value: { errors: [{ message: `The connection closed (${e.code}${e.reason ? ": " + e.reason : ""}).` }] } });
    push({ done: true });
  };
  const stop = () => { if (ws.readyState <= 1) ws.close(1000); };
  return {
    [Symbol.asyncIterator]() {
      return {
        async next() {
          while (!queue.length) await new Promise((resolve) => { wake = resolve; });
          const item = queue.shift();
          if (item.done) { stop(); return { done: true, value: undefined }; }
          return { done: false, value: item.value };
        },
        async return() { stop(); return { done: true, value: undefined }; },
      };
    },
  };
}

/** `params` with an operation name its document holds. GraphiQL updates the name a
 * moment after the text changes, and a run in that moment would send the old one, which
 * the server refuses ("Unknown operation named ..."); without it, a document of one
 * operation runs that one, and one of several is told to name it. */
function withKnownName(params) {
  const name = params.operationName;
  if (!name) return params;
  const text = params.query.replace(/#[^\n]*/g, "");
  const named = new RegExp(`\\b(query|mutation|subscription)\\s+${name}\\b`).test(text);
  return named ? params : { ...params, operationName: null };
}

function fetcher(token) {
  return (asked) => {
    const params = withKnownName(asked);
    if (isSubscription(params)) return subscribe(params, token);
    return fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(params),
    }).then((r) => r.json());
  };
}

const EXAMPLE = `# Your VMs and their snapshot trees. Run with ▶ or Ctrl-Enter.
query MyVms {
  me { name role project { name } }
  vms(first: 20) { nodes { id name stateName snapshots { id name state active } } }
}

# Every event of your project's tasks, live (run it, then act in the dashboard).
subscription Events {
  events { id state progress phase message task { id kind } }
}
`;

async function signIn(token) {
  const who = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: "{ me { name role project { name } } }" }),
  }).then((r) => r.json()).catch(() => null);
  const me = who && who.data && who.data.me;
  if (!me) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").setCustomValidity("This token is not accepted.");
    $("token").reportValidity();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = `${me.name} · ${me.role} of ${me.project.name}`;
  $("sign-in").hidden = true;
  $("signed-in").hidden = false;
  root = root || ReactDOM.createRoot($("graphiql"));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher(token),
    defaultQuery: EXAMPLE,
    // The token is the sign-in's: no headers editor to paste it into again.
    isHeadersEditorEnabled: false,
  }));
}

$("token").addEventListener("input", () => $("token").setCustomValidity(""));
$("sign-in").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
