// A person's path through JupyterLab, in Debian's chromium driven by playwright-core:
// open a new "Rust (parallel)" notebook from the launcher, run a plain Rust cell and %px cells,
// check what the page shows, then interrupt a long %%px from the toolbar.
//
// Run by tests/test_browser.py, which starts JupyterLab and passes LAB_URL (with its token),
// CHROMIUM and ARTIFACTS. Screenshots are written to ARTIFACTS.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const LAB_URL = process.env.LAB_URL;
const ARTIFACTS = process.env.ARTIFACTS ?? "artifacts";
const CELL_TIMEOUT = 180_000;

async function shot(page, name) {
  // JupyterLab asks about news once it has loaded; answer so it does not cover the notebook.
  const noNews = page.getByRole("button", { name: "No", exact: true });
  if (await noNews.isVisible().catch(() => false)) await noNews.click();
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: false });
}

/** Types `lines` into the active cell (one line at a time, so no auto-indent piles up) and runs it. */
async function runCell(page, lines) {
  const editor = page.locator(".jp-Notebook .jp-Cell.jp-mod-active .cm-content");
  await editor.click();
  for (let i = 0; i < lines.length; i++) {
    if (i > 0) await page.keyboard.press("Enter");
    await page.keyboard.press("Home");
    await page.keyboard.type(lines[i]);
  }
  await page.keyboard.press("Shift+Enter");
}

/** The text of the outputs of the cell at `index`, once `expected` shows in it. */
async function outputOf(page, index, expected) {
  const area = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea");
  await area.getByText(expected, { exact: false }).first().waitFor({ timeout: CELL_TIMEOUT });
  return area.innerText();
}

test("a notebook with the Rust (parallel) kernel, in the browser", { timeout: 600_000 }, async () => {
  assert.ok(LAB_URL, "LAB_URL is not set");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(LAB_URL);
    const card = page.locator('.jp-LauncherCard[data-category="Notebook"][title="Rust (parallel)"]');
    await card.waitFor({ timeout: 120_000 });
    await shot(page, "01-launcher");
    await card.click();
    await page.locator(".jp-Notebook .jp-Cell .cm-content").first().waitFor({ timeout: 60_000 });
    // The kernel picked is ours, and it becomes idle.
    await page.getByText("Rust (parallel)", { exact: false }).first().waitFor({ timeout: 60_000 });

    await runCell(page, ['let answer = 6 * 7;', 'answer']);
    const plain = await outputOf(page, 0, "42");
    assert.match(plain, /42/);

    await runCell(page, ["%%px", 'println!("hello from engine {}", std::env::var("RUSTPX_ENGINE_ID").unwrap());']);
    let px = await outputOf(page, 1, "[stdout:1]");
    px = await outputOf(page, 1, "[stdout:0]");
    assert.match(px, /\[stdout:0\] hello from engine 0/);
    assert.match(px, /\[stdout:1\] hello from engine 1/);

    await runCell(page, ["%px answer_on_engines()"]);
    await outputOf(page, 2, "cannot find function");

    await runCell(page, ["%px 6 * 7"]);
    const value = await outputOf(page, 3, "Out[1:");
    assert.match(value, /Out\[0:\d+\]: 42/);
    assert.match(value, /Out\[1:\d+\]: 42/);
    await shot(page, "02-px-outputs");

    await runCell(page, ["%%px", "loop { std::thread::sleep(std::time::Duration::from_millis(100)); }"]);
    await page.waitForTimeout(4000);
    await page.locator('jp-button[data-command="notebook:interrupt-kernel"], button[data-command="notebook:interrupt-kernel"]').first().click();
    await outputOf(page, 4, "Received Keyboard Interrupt");
    const interrupted = await outputOf(page, 4, "was restarted");
    assert.match(interrupted, /Sending signal SIGINT to engines/);
    assert.doesNotMatch(interrupted, /Restart it with/);
    await shot(page, "03-interrupt");

    await runCell(page, ['%px println!("after the interrupt");']);
    await outputOf(page, 5, "after the interrupt");
    await shot(page, "04-after-interrupt");
  } finally {
    await browser.close();
  }
});
