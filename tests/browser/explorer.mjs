// The query explorer (/graphiql) in Debian's Chromium, offline: every request the page
// makes must go to the snaptree server (anything else is refused and fails the test).
// It signs in with a token, runs a query, then a subscription, and receives an event
// caused by a mutation made meanwhile. Started by tests/browser.rs.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const url = process.env.SNAPTREE_URL;
const token = process.env.SNAPTREE_TOKEN;
const vm = process.env.SNAPTREE_VM;
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });
const origin = new URL(url).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const outside = [];
await context.route("**/*", (route) => {
  const target = route.request().url();
  if (target.startsWith(origin) || target.startsWith("data:")) return route.continue();
  outside.push(target);
  return route.abort();
});
const page = await context.newPage();
const problems = [];
page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
page.on("pageerror", (e) => problems.push(String(e)));

async function step(name, body) {
  try {
    await body();
    console.log(`ok - ${name}`);
  } catch (err) {
    await page.screenshot({ path: `${shots}/explorer-failed.png` }).catch(() => {});
    console.error(`not ok - ${name}`);
    throw err;
  }
}

/** Replaces the query editor's text (CodeMirror 5 holds it). */
async function setQuery(text) {
  await page.evaluate((t) => document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue(t), text);
}

async function run() {
  await page.click(".graphiql-execute-button");
}

/** The response pane's text. */
const result = () => page.evaluate(() => {
  const cm = document.querySelector(".result-window .CodeMirror");
  return cm ? cm.CodeMirror.getValue() : "";
});

/** Runs the editor's operation until the response pane holds what `predicate` wants
 * (GraphiQL ignores a run while it still loads the schema, so an empty pane is run again). */
async function resultWhere(predicate, what, rerun = true) {
  for (let i = 0; i < 600; i++) { // a hang guard, not a time limit
    const text = await result();
    if (text && predicate(text)) return JSON.parse(text);
    if (rerun && !text && i % 20 === 0) await run();
    await page.waitForTimeout(50);
  }
  throw new Error(`no result ${what}; last: ${await result()}`);
}

async function api(query, variables = {}) {
  const response = await fetch(`${url}graphql`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.ok(!body.errors, JSON.stringify(body.errors));
  return body.data;
}

try {
  await step("the page loads and asks for a token", async () => {
    await page.goto(`${url}graphiql`);
    await page.waitForSelector("#token");
    assert.equal(await page.isVisible("#sign-in"), true);
  });

  await step("a bad token is refused", async () => {
    await page.fill("#token", "snaptree_not-a-token");
    await page.click("#sign-in button");
    await page.waitForFunction(() => !document.querySelector("#token").validity.valid);
    assert.equal(await page.isVisible(".graphiql-container"), false);
    // Chromium logs the refused request (401) as a console error: that one was meant.
    problems.length = 0;
  });

  await step("signing in shows GraphiQL and who is signed in", async () => {
    await page.fill("#token", token);
    await page.click("#sign-in button");
    await page.waitForSelector(".graphiql-query-editor .CodeMirror");
    assert.match(await page.textContent("#who"), /OPERATOR/);
    assert.equal(await page.isVisible("#sign-in"), false);
  });

  await step("a query runs", async () => {
    await setQuery(`{ vm(id: "${vm}") { id name snapshots { name } } }`);
    const body = await resultWhere((t) => t.includes('"vm"'), "for the query");
    assert.equal(body.data.vm.id, vm);
    await page.screenshot({ path: `${shots}/explorer-query.png` });
  });

  await step("a subscription receives an event", async () => {
    // From event 0: what happened before the socket opened is replayed, then it goes on
    // live, so the mutation below may come before or after the subscription starts.
    await setQuery(`subscription { vmEvents(vmId: "${vm}", after: "0") { state task { kind snapshot { name } } } }`);
    await run();
    await api("mutation($v: ID!) { createSnapshot(vmId: $v, name: \"from-the-explorer-test\") { task { id } } }", { v: vm });
    // Once the query has run, the schema is in: this run is not ignored (and a second
    // click would stop the subscription).
    const body = await resultWhere((t) => t.includes("SUCCEEDED"), "from the subscription", false);
    assert.equal(body.data.vmEvents.task.kind, "BUILD");
    assert.equal(body.data.vmEvents.task.snapshot.name, "from-the-explorer-test");
    await page.screenshot({ path: `${shots}/explorer-subscription.png` });
  });

  await step("nothing was loaded from outside, and nothing failed", async () => {
    assert.deepEqual(outside, []);
    assert.deepEqual(problems.filter((p) => !p.includes("favicon")), []);
  });
} finally {
  await browser.close();
}
