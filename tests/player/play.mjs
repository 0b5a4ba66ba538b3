// Plays a rungs channel in headless Chromium with hls.js (low-latency mode)
// and reports stalls and latency as one JSON line on stdout.
//
// usage: node tests/player/play.mjs <multivariant URL> <seconds> [player page URL]
//
// The test page is served by a small HTTP server of this script on another
// 127.0.0.1 port, so hls.js fetches the node cross-origin (what a real site
// embedding the stream does; it needs the node's CORS headers). Serving it
// from loopback also keeps Chromium's Local Network Access checks out of the
// way (a public-looking origin may not fetch from loopback). The node's own /play page is opened as well to check that it
// loads hls.js and starts playing.
import { runPlayer } from './harness.mjs';

const [src, secondsArg, playPage] = process.argv.slice(2);
const seconds = Number(secondsArg || 20);

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${origin}/hls.min.js"></script>
<script>
window.report = { events: [], waiting: 0, stalls: 0, errors: [], samples: [], started: null, firstFrameMs: null };
const t0 = performance.now();
const v = document.getElementById('v');
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
window.hls = hls;
hls.on(Hls.Events.ERROR, (e, d) => {
  if (d.details === 'bufferStalledError') window.report.stalls++;
  window.report.errors.push({ type: d.type, details: d.details, fatal: d.fatal, t: (performance.now() - t0) / 1000 });
});
v.addEventListener('playing', () => {
  if (window.report.started === null) { window.report.started = performance.now(); window.report.firstFrameMs = performance.now() - t0; }
  window.report.events.push(['playing', (performance.now() - t0) / 1000]);
});
v.addEventListener('waiting', () => {
  if (window.report.started !== null) window.report.waiting++;
  window.report.events.push(['waiting', (performance.now() - t0) / 1000]);
});
hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => window.report.events.push(['level', d.level, (performance.now() - t0) / 1000]));
hls.on(Hls.Events.FRAG_BUFFERED, (e, d) => window.report.events.push(['frag', d.frag.type, d.frag.level, d.frag.sn, d.part ? d.part.index : -1, +d.frag.start.toFixed(3), (performance.now() - t0) / 1000]));
v.addEventListener('seeking', () => window.report.events.push(['seeking', v.currentTime, (performance.now() - t0) / 1000]));
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
hls.on(Hls.Events.MANIFEST_PARSED, () => { v.play().catch(e => window.report.errors.push({ details: 'play(): ' + e })); });
setInterval(() => {
  window.report.samples.push({
    t: (performance.now() - t0) / 1000,
    currentTime: v.currentTime,
    latency: hls.latency,
    targetLatency: hls.targetLatency,
    buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0,
    ranges: Array.from({ length: v.buffered.length }, (_, i) => [+v.buffered.start(i).toFixed(3), +v.buffered.end(i).toFixed(3)]),
    rate: v.playbackRate,
    level: hls.currentLevel,
    dropped: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().droppedVideoFrames : 0,
  });
}, 500);
</script></body></html>`;

const out = { ok: true };
await runPlayer(pageHtml, out, async ({ page, ctx }) => {
  await page.waitForTimeout(seconds * 1000);
  // The report covers the test page's own playing time, not the node page's after it.
  out.report = await page.evaluate(() => window.report);
  if (playPage) {
    // The node's own player page: it loads, plays, and shows a latency.
    const p2 = await ctx.newPage();
    const p2console = [];
    p2.on('console', (m) => p2console.push(`${m.type()}: ${m.text()}`));
    p2.on('pageerror', (e) => p2console.push(`pageerror: ${e}`));
    await p2.goto(playPage);
    const played = await p2.waitForFunction(() => {
      const v = document.querySelector('video');
      return v && v.currentTime > 1.0;
    }, null, { timeout: 20000 }).then(() => true, () => false);
    // Give the page's own latency display a few updates.
    await p2.waitForFunction(() => /latency\s*[0-9]/i.test(document.body.innerText), null, { timeout: 5000 }).catch(() => {});
    out.play_page = {
      played,
      currentTime: await p2.evaluate(() => document.querySelector('video')?.currentTime ?? null),
      text: (await p2.evaluate(() => document.body.innerText)).slice(0, 400),
      console: p2console.slice(-20),
    };
  }
});
