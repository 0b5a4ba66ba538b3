// Plays a laddered rungs channel in headless Chromium with hls.js (low-latency
// mode) and forces a switch to every level in turn, reporting what hls.js did
// as one JSON line on stdout.
//
// usage: node tests/player/ladder.mjs <multivariant URL> <seconds>
//
// Once playback has started, every level other than the current one is
// forced with `hls.nextLevel = i` (a smooth switch at the next fragment
// boundary, which only works if the rungs' segments line up), then the first
// level again; each is held for an equal share of <seconds>. The report has
// the levels as hls.js parsed them, the forced switches with whether
// LEVEL_SWITCHED and FRAG_CHANGED followed for that level, the hls.js
// errors, and a sample of the video element every 100 ms. The page is served
// from another loopback port so that hls.js fetches the node cross-origin (as
// tests/player/play.mjs does).
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(path.join(root, 'package.json'));

const [src, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 25);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function fail(msg) {
  console.log(JSON.stringify({ ok: false, error: msg }));
  process.exit(2);
}

if (!src) fail('usage: node tests/player/ladder.mjs <multivariant URL> <seconds>');
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

const server = http.createServer((req, res) => {
  if (req.url === '/hls.min.js') {
    res.writeHead(200, { 'content-type': 'application/javascript' });
    res.end(hlsSource);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(pageHtml());
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const PAGE_ORIGIN = `http://127.0.0.1:${server.address().port}`;
const pageHtml = () => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${PAGE_ORIGIN}/hls.min.js"></script>
<script>
const t0 = performance.now();
const now = () => (performance.now() - t0) / 1000;
window.report = {
  events: [], waiting: 0, errors: [], samples: [], started: null, firstFrameS: null,
  levels: [], switched: [], fragChanged: [], fragLoaded: [], forced: [],
};
const v = document.getElementById('v');
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
window.hls = hls;
hls.on(Hls.Events.ERROR, (e, d) => {
  window.report.errors.push({ type: d.type, details: d.details, fatal: d.fatal, t: now() });
});
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
  window.report.levels = d.levels.map((l) => ({
    width: l.width, height: l.height, bitrate: l.bitrate, url: String(l.url), codecs: l.codecSet || '',
  }));
  v.play().catch((err) => window.report.errors.push({ details: 'play(): ' + err, t: now() }));
});
hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => window.report.switched.push({ level: d.level, t: now() }));
hls.on(Hls.Events.FRAG_CHANGED, (e, d) => window.report.fragChanged.push({ level: d.frag.level, sn: d.frag.sn, t: now() }));
hls.on(Hls.Events.FRAG_LOADED, (e, d) => {
  if (d.frag.type === 'main') window.report.fragLoaded.push({ level: d.frag.level, sn: d.frag.sn, part: d.part ? d.part.index : null, t: now() });
});
v.addEventListener('playing', () => {
  if (window.report.started === null) { window.report.started = now(); window.report.firstFrameS = now(); }
  window.report.events.push(['playing', now()]);
});
v.addEventListener('waiting', () => {
  if (window.report.started !== null) window.report.waiting++;
  window.report.events.push(['waiting', now()]);
});
window.force = (level) => { window.report.forced.push({ level, t: now() }); hls.nextLevel = level; return now(); };
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
setInterval(() => {
  window.report.samples.push({
    t: now(),
    currentTime: v.currentTime,
    paused: v.paused,
    readyState: v.readyState,
    level: hls.currentLevel,
    loadLevel: hls.loadLevel,
    latency: hls.latency,
  });
}, 100);
</script></body></html>`;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const out = { ok: true, switches: [] };
const consoleLines = [];
let page;
try {
  const ctx = await browser.newContext();
  page = await ctx.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e}`));
  await page.goto(`${PAGE_ORIGIN}/test.html`);
  out.mse_h264 = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'));
  if (!out.mse_h264) throw new Error('this Chromium has no H.264/AAC in MSE: it cannot play the stream');
  await page.waitForFunction(() => window.report.started !== null, null, { timeout: 20000 })
    .catch(() => { throw new Error('playback did not start within 20 s'); });
  const start = Date.now();
  const n = await page.evaluate(() => hls.levels.length);
  const first = await page.evaluate(() => hls.currentLevel);
  const order = [...Array(n).keys()].filter((i) => i !== first);
  order.push(first);
  const hold = (seconds * 1000) / order.length;
  for (const [k, level] of order.entries()) {
    const at = await page.evaluate((l) => window.force(l), level);
    const until = start + hold * (k + 1);
    const switched = await page.waitForFunction(
      ([l, t]) => window.report.switched.some((s) => s.level === l && s.t >= t),
      [level, at], { timeout: Math.max(500, until - Date.now()), polling: 50 },
    ).then(() => true, () => false);
    const played = await page.waitForFunction(
      ([l, t]) => window.report.fragChanged.some((s) => s.level === l && s.t >= t),
      [level, at], { timeout: Math.max(500, until - Date.now()), polling: 50 },
    ).then(() => true, () => false);
    const rest = until - Date.now();
    if (rest > 0) await page.waitForTimeout(rest);
    out.switches.push({ level, forcedAt: at, switched, played });
  }
  out.report = await page.evaluate(() => window.report);
  out.console = consoleLines.slice(-30);
} catch (e) {
  out.ok = false;
  out.error = String(e && e.message || e);
  out.console = consoleLines.slice(-30);
  try { out.report = await page.evaluate(() => window.report); } catch (_) {}
}
await browser.close();
server.close();
console.log(JSON.stringify(out));
