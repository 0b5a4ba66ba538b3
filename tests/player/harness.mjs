// What the browser tests share: hls.js and playwright-core from node_modules,
// a test page served from its own 127.0.0.1 port (so hls.js fetches the node
// cross-origin, as a site embedding the stream does, and Chromium's Local
// Network Access checks stay out of the way), Debian's Chromium launched
// headless, and one JSON line on stdout with what happened.
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(path.join(root, 'package.json'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function fail(msg) {
  console.log(JSON.stringify({ ok: false, error: msg }));
  process.exit(2);
}

// Serves `pageHtml(origin)` (which loads `${origin}/hls.min.js`, or
// `${origin}/shaka-player.js`), opens it in
// Chromium, waits until its video plays (the page sets window.report.started),
// runs `body({ page, ctx })`, then prints `out` with window.report (unless
// `body` took it already) and the page's console added. Any failure is reported in `out`, never thrown.
export async function runPlayer(pageHtml, out, body) {
  await runPage(pageHtml, out, async ({ page, ctx }) => {
    out.mse_h264 = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'));
    if (!out.mse_h264) throw new Error('this Chromium has no H.264/AAC in MSE: it cannot play the stream');
    await page.waitForFunction(() => window.report.started !== null, null, { timeout: 20000 })
      .catch(() => { throw new Error('playback did not start within 20 s'); });
    await body({ page, ctx });
  });
}

// The part of runPlayer that is not about playing: serves `pageHtml(origin)`
// at every path of a 127.0.0.1 port (and hls.js at /hls.min.js), launches
// Chromium with the common flags plus `opts.args`, opens `${origin}/test.html`,
// runs `body({ page, ctx, origin })`, then prints `out` as one JSON line with
// window.report (unless `out.report` is set already) and the page's last
// console lines. Any failure is reported in `out` (ok: false, error), never thrown.
export async function runPage(pageHtml, out, body, opts = {}) {
  if (!existsSync(CHROMIUM)) fail(`${CHROMIUM} not found: install chromium (see \`make test\`)`);
  let chromium;
  let hlsPath;
  try {
    ({ chromium } = require('playwright-core'));
    hlsPath = require.resolve('hls.js/dist/hls.min.js');
  } catch (e) {
    fail(`node_modules missing (${e.message}): run \`npm install\` or \`make test\``);
  }
  const hlsSource = readFileSync(hlsPath, 'utf8');
  let origin;
  const server = http.createServer((req, res) => {
    if (req.url === '/hls.min.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      res.end(hlsSource);
    } else if (req.url === '/shaka-player.js') {
      // Only the benchmark's pages load Shaka Player (a dev dependency).
      res.writeHead(200, { 'content-type': 'application/javascript' });
      res.end(readFileSync(require.resolve('shaka-player/dist/shaka-player.compiled.js'), 'utf8'));
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(pageHtml(origin));
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${server.address().port}`;

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      '--autoplay-policy=no-user-gesture-required',
      ...(opts.args || []),
    ],
  });
  const consoleLines = [];
  let page;
  try {
    const ctx = await browser.newContext();
    page = await ctx.newPage();
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e}`));
    await page.goto(`${origin}/test.html`);
    await body({ page, ctx, origin });
  } catch (e) {
    out.ok = false;
    out.error = String(e && e.message || e);
  }
  if (out.report === undefined) {
    try { out.report = await page.evaluate(() => window.report); } catch (_) {}
  }
  out.console = consoleLines.slice(-30);
  await browser.close();
  server.close();
  console.log(JSON.stringify(out));
}
