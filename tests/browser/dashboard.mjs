// The dashboard in real Chromium (Debian's, driven by playwright-core). Run by
// tests/browser.rs, which starts the server and prepares: an OPERATOR token, a VM "web"
// on a slow simulated host, and a VM "full" at its host's limit of 50 (as on Hyper-V).
// Environment: SNAPTREE_URL, SNAPTREE_TOKEN, SCREENSHOTS (a directory).

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.SNAPTREE_URL;
const token = process.env.SNAPTREE_TOKEN;
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.setDefaultTimeout(30_000);

  // Sign in.
  await page.goto(url);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: /^web, running, 0 snapshots/ }).click();
  await page.getByRole("heading", { name: "web" }).waitFor();
  // Anything below must happen without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  let navigations = 0;
  page.on("framenavigated", () => { navigations += 1; });

  const tree = page.locator("#tree");
  const node = (name) => tree.locator(`li[data-snapshot="${name}"]`);
  const bar = page.getByRole("progressbar");
  const progressSeen = new Set();
  const watchProgress = async (until) => {
    // The bar moves through the task's phases to the end.
    await page.waitForFunction(() => !document.getElementById("progress").hidden);
    for (;;) {
      progressSeen.add(Number(await bar.getAttribute("aria-valuenow")));
      if (await until()) return;
      await page.waitForTimeout(25);
    }
  };

  // Create: the progress bar reaches the end and the tree gains the node.
  await page.getByLabel("New snapshot").fill("first");
  await page.getByRole("button", { name: "Create snapshot" }).click();
  await watchProgress(async () => (await bar.getAttribute("aria-valuenow")) === "100"
    && (await page.locator("#progress").getAttribute("class")).includes("succeeded"));
  assert.ok([...progressSeen].some((p) => p > 0 && p < 100), `intermediate progress: ${[...progressSeen]}`);
  await node("first").waitFor();
  await page.waitForFunction(() => document.querySelector('#tree li[data-snapshot="first"]')
    ?.getAttribute("aria-label").includes("running, active"));
  await page.screenshot({ path: join(shots, "1-created.png"), fullPage: true });

  await page.getByLabel("New snapshot").fill("second");
  await page.getByRole("button", { name: "Create snapshot" }).click();
  await page.waitForFunction(() => document.querySelector('#tree li[data-snapshot="second"]')
    ?.getAttribute("aria-label").includes("running, active"));
  // "Now" hangs under the active snapshot.
  assert.equal(await node("second").locator(".now").count(), 1);

  // Apply "first", after a confirmation that says what is lost.
  await page.getByRole("button", { name: "Apply snapshot first" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  assert.match(await dialog.textContent(), /Every change since the active snapshot “second” is lost/);
  await dialog.getByRole("button", { name: "Apply" }).click();
  await page.waitForFunction(() => {
    const first = document.querySelector('#tree li[data-snapshot="first"]');
    return first && first.getAttribute("aria-label") === "first, running, active";
  });
  await page.screenshot({ path: join(shots, "2-applied.png"), fullPage: true });

  // Delete the subtree of "first" (two snapshots), after confirming.
  await page.getByRole("button", { name: "Delete snapshot first and all below it" }).click();
  await dialog.waitFor();
  assert.match(await dialog.textContent(), /2 snapshots in all/);
  await dialog.getByRole("button", { name: "Delete" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#tree li[data-snapshot]").length === 0);
  assert.equal(await tree.locator(".now").count(), 1, "only Now is left");
  await page.screenshot({ path: join(shots, "3-subtree-deleted.png"), fullPage: true });

  // A full VM: the API's LIMIT_REACHED, in plain words, where the action was taken.
  await page.getByRole("button", { name: /^full, running, 50 snapshots of 50/ }).click();
  await page.getByRole("heading", { name: "full" }).waitFor();
  await page.getByLabel("New snapshot").fill("one too many");
  await page.getByRole("button", { name: "Create snapshot" }).click();
  const error = page.locator("#action-error");
  await page.waitForFunction(() => document.getElementById("action-error").textContent.includes("limit"));
  assert.match(await error.textContent(), /already has 50 snapshots, the limit of its host/);
  await page.screenshot({ path: join(shots, "4-limit-reached.png"), fullPage: true });

  assert.equal(navigations, 0, "no reload");
  assert.equal(await page.evaluate(() => window.notReloaded), true, "no reload");
  assert.deepEqual(problems, []);
  console.log(`ok: dashboard scenario passed; screenshots in ${shots}`);
} finally {
  await browser.close();
}
