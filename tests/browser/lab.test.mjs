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

/**
 * Waits until the notebook's kernel is connected and idle, as its toolbar shows it. Until the
 * session's kernel exists, JupyterLab drops a cell run with Shift+Enter without a word (its
 * `CodeCell.execute` returns when `session.kernel` is null), so typing earlier tests JupyterLab's
 * start-up race, not the kernel.
 */
async function kernelIdle(page) {
  const indicator = page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]');
  await indicator.first().waitFor({ timeout: 120_000 });
}

/** Types `lines` into the active cell (one line at a time, so no auto-indent piles up) and runs it. */
async function runCell(page, lines) {
  const cell = page.locator(".jp-Notebook .jp-Cell.jp-mod-active");
  const index = await cell.evaluate((node) => [...document.querySelectorAll(".jp-Notebook .jp-Cell")].indexOf(node));
  const editor = cell.locator(".cm-content");
  await editor.click();
  for (let i = 0; i < lines.length; i++) {
    if (i > 0) await page.keyboard.press("Enter");
    await page.keyboard.press("Home");
    await page.keyboard.type(lines[i]);
  }
  await page.keyboard.press("Shift+Enter");
  // The cell was sent: its prompt leaves "[ ]:" for "[*]:" or its count.
  const prompt = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt");
  try {
    await prompt.filter({ hasText: /\[(\*|\d+)\]/ }).waitFor({ timeout: 30_000 });
  } catch (error) {
    throw new Error(`cell ${index} was not sent to the kernel: ${await pageState(page)}`, { cause: error });
  }
}

/** What the notebook shows: each cell's prompt, source and outputs, and the kernel's status. */
async function pageState(page) {
  return page.evaluate(() => {
    const status = document.querySelector(".jp-Notebook-ExecutionIndicator")?.getAttribute("data-status");
    const cells = [...document.querySelectorAll(".jp-Notebook .jp-Cell")].map((cell, i) => {
      const prompt = cell.querySelector(".jp-InputPrompt")?.textContent ?? "";
      const source = cell.querySelector(".cm-content")?.innerText ?? "";
      const outputs = cell.querySelector(".jp-OutputArea")?.innerText ?? "";
      return `cell ${i} ${prompt} ${JSON.stringify(source)} -> ${JSON.stringify(outputs.slice(0, 2000))}`;
    });
    const dialogs = [...document.querySelectorAll(".jp-Dialog")].map((d) => d.innerText);
    return `kernel status ${status}; dialogs ${JSON.stringify(dialogs)}\n${cells.join("\n")}`;
  });
}

/** The text of the outputs of the cell at `index`, once `expected` shows in it. */
async function outputOf(page, index, expected) {
  const area = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea");
  try {
    await area.getByText(expected, { exact: false }).first().waitFor({ timeout: CELL_TIMEOUT });
  } catch (error) {
    throw new Error(`cell ${index} did not show ${JSON.stringify(expected)}: ${await pageState(page)}`, { cause: error });
  }
  return area.innerText();
}

/**
 * For every picture in `cell`'s outputs, in page order: its engine, the nearest engine label shown
 * above it (`[output:N]` or `Out[N:C]:`), and where both are. A picture is an SVG with a
 * `data-engine` attribute: inline (in a value's HTML) or as JupyterLab's SVG renderer shows an
 * image/svg+xml output, an `img` whose data URI holds the SVG.
 */
async function labelsAbovePictures(cell) {
  return cell.evaluate((node) => {
    const labels = /^(\[output:\d+\]|Out\[\d+:\d+\]:)/;
    const visible = (el) => {
      const box = el.getBoundingClientRect();
      return box.width > 0 && box.height > 0 && getComputedStyle(el).visibility !== "hidden";
    };
    const engineOf = (el) => {
      if (el.matches("svg[data-engine]")) return el.getAttribute("data-engine");
      if (el.matches("img") && el.src.startsWith("data:image/svg+xml")) {
        const [head, data] = el.src.split(",", 2);
        const svg = head.endsWith(";base64") ? atob(data) : decodeURIComponent(data);
        const found = svg.match(/data-engine=['"](\d+)['"]/);
        return found ? found[1] : null;
      }
      return null;
    };
    const found = [];
    let last = null;
    // Text leaves and pictures, in document order.
    const walker = document.createTreeWalker(node.querySelector(".jp-OutputArea"), NodeFilter.SHOW_ELEMENT);
    for (let el = walker.nextNode(); el; el = walker.nextNode()) {
      const engine = engineOf(el);
      if (engine !== null) {
        const box = el.getBoundingClientRect();
        found.push({
          engine,
          label: last ? last.text : "",
          labelVisible: last ? visible(last.el) : false,
          labelBottom: last ? last.el.getBoundingClientRect().bottom : Infinity,
          pictureVisible: visible(el),
          pictureTop: box.top,
        });
      } else if (el.children.length === 0 && labels.test(el.textContent.trim())) {
        last = { el, text: el.textContent.trim() };
      }
    }
    return found;
  });
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
    await page.locator(".jp-NotebookPanel-toolbar").getByText("Rust (parallel)").first().waitFor({ timeout: 60_000 });
    await kernelIdle(page);

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

    // Pictures: one chart per engine as a display, then as the cell's value. Each must show
    // under its own engine's label ([output:N] before a display, Out[N:C]: inside a value's HTML).
    await runCell(page, [
      "%%px",
      'let n: f64 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();',
      'let points: String = (0..=80).map(|i| format!("{},{:.1} ", i * 4, 45.0 - 35.0 * (i as f64 * 0.08 * (n + 1.0)).sin())).collect();',
      "let chart = format!(\"<svg xmlns='http://www.w3.org/2000/svg' width='330' height='90' data-engine='{n}'><rect width='330' height='90' fill='#f8f8ff'/><polyline points='{points}' fill='none' stroke='steelblue' stroke-width='2'/></svg>\");",
      'println!("EVCXR_BEGIN_CONTENT image/svg+xml\\n{chart}\\nEVCXR_END_CONTENT");',
    ]);
    await outputOf(page, 6, "[output:1]");
    await outputOf(page, 6, "[output:0]");
    await page.locator(".jp-Notebook .jp-Cell").nth(6).locator(".jp-RenderedSVG img").nth(1).waitFor({ timeout: CELL_TIMEOUT });
    await runCell(page, [
      "%%px",
      "struct Chart(String);",
      'impl Chart { fn evcxr_display(&self) { println!("EVCXR_BEGIN_CONTENT image/svg+xml\\n{}\\nEVCXR_END_CONTENT", self.0); } }',
      "Chart(chart.replace(\"steelblue\", \"darkorange\"))",
    ]);
    await page.locator(".jp-Notebook .jp-Cell").nth(7).locator("svg[data-engine='1']").waitFor({ timeout: CELL_TIMEOUT });
    for (const [index, label] of [[6, (n) => `[output:${n}]`], [7, (n) => `Out[${n}:`]]) {
      const cell = page.locator(".jp-Notebook .jp-Cell").nth(index);
      const pairs = await labelsAbovePictures(cell);
      // Live displays arrive in engine order or not; each must be under its own label.
      assert.deepEqual(pairs.map((p) => p.engine).sort(), ["0", "1"], JSON.stringify(pairs));
      for (const p of pairs) {
        assert.ok(p.label.startsWith(label(p.engine)), JSON.stringify(pairs));
        assert.ok(p.labelVisible && p.pictureVisible, JSON.stringify(pairs));
        assert.ok(p.labelBottom <= p.pictureTop, JSON.stringify(pairs));
      }
    }
    await page.evaluate(() => {
      const cell = document.querySelectorAll(".jp-Notebook .jp-Cell")[6];
      cell.scrollIntoView({ block: "start" });
    });
    await page.waitForTimeout(500);
    await shot(page, "05-px-charts");
  } finally {
    await browser.close();
  }
});
