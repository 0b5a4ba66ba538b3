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
import { fail, runPlayer } from './harness.mjs';

const [src, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 25);
if (!src) fail('usage: node tests/player/ladder.mjs <multivariant URL> <seconds>');

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${origin}/hls.min.js"></script>
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

const out = { ok: true, switches: [] };
await runPlayer(pageHtml, out, async ({ page }) => {
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
});
