// snaptree dashboard: the same GraphQL API scripts use, over HTTP for queries and
// actions, and over a WebSocket (graphql-transport-ws) for live task events.
//
// The page encodes no rule: which actions are offered (and why not) comes from
// `actions`, what a delete does to "Now" from `deleteForecast`, whether a task has
// ended from `finished`, the tree's shape from each snapshot's parent. Everything
// user-typed goes into the page as text (textContent), never as HTML.
//
// The page is a set of ES modules in web/js/, loaded by the browser as they are (no
// build step); this one starts it.

import { $, state } from "./js/page.js";
import { start } from "./js/session.js";
import "./js/actions.js";
import "./js/tree.js";
import "./js/vms.js";
import "./js/live.js";

if (state.token) start(); else $("token").focus();
