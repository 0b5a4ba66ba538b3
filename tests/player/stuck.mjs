// hls.js stuck on a segment it believes buffered, with and without the
// node's player helper (/assets/rungs-latency.js), for tests/player.rs.
//
// usage: node tests/player/stuck.mjs <multivariant URL> <seconds> <helper: on|off> [stuck|held]
//
// Three seconds after the first frame the page makes hls.js's fragment
// tracker report the segment two after the playlist's last complete one as
// fully buffered: the state hls.js 1.7 reaches by itself when a part
// finishes buffering after the playlist update that completed its segment.
// hls.js then never loads that segment and playback stops where it starts.
// With `stuck` (the default) the tracker keeps saying so whatever is done to it (only a
// seek gets past the segment); with `held` it does until the segment is
// taken off the tracker, as with the real fault. Prints one JSON line: the
// victim segment, when it was marked and when it was loaded, every
// waiting/playing/seeking event with the playhead, and hls.js's target
// latency every 250 ms.
import { runPlayer } from './harness.mjs';

const [src, secondsArg, helper, mode] = process.argv.slice(2);
const seconds = Number(secondsArg || 15);

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${origin}/hls.min.js"></script>
<script src="${new URL(src).origin}/assets/rungs-latency.js"></script>
<script>
const t0 = performance.now();
const now = () => +((performance.now() - t0) / 1000).toFixed(3);
window.report = { started: null, victim: null, markedAt: null, loadedAt: null, events: [], end: null, targets: [] };
const v = document.getElementById('v');
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
window.hls = hls;
for (const e of ['waiting', 'playing', 'seeking']) {
  v.addEventListener(e, () => window.report.events.push([e, now(), +v.currentTime.toFixed(3)]));
}
v.addEventListener('playing', () => {
  if (window.report.started !== null) return;
  window.report.started = now();
  setTimeout(() => {
    const tracker = hls.streamController.fragmentTracker;
    const victim = hls.latestLevelDetails.endSN + 2;
    const getState = tracker.getState.bind(tracker);
    const removeFragment = tracker.removeFragment.bind(tracker);
    let released = false;
    const isVictim = (frag) => frag.type === 'main' && frag.sn === victim;
    tracker.removeFragment = (frag) => {
      if (isVictim(frag)) released = ${JSON.stringify(mode === 'held')};
      removeFragment(frag);
    };
    tracker.getState = (frag) => (isVictim(frag) && !released ? 'OK' : getState(frag));
    hls.on(Hls.Events.FRAG_LOADED, (e, d) => {
      if (isVictim(d.frag) && window.report.loadedAt === null) window.report.loadedAt = now();
    });
    window.report.victim = victim;
    window.report.markedAt = now();
  }, 3000);
});
setInterval(() => {
  window.report.end = [now(), +v.currentTime.toFixed(3)];
  if (Number.isFinite(hls.targetLatency)) window.report.targets.push([now(), +hls.targetLatency.toFixed(3)]);
}, 250);
hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
if (${JSON.stringify(helper)} === 'on') rungsHoldLatency(hls, v);
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
</script></body></html>`;

const out = { ok: true };
await runPlayer(pageHtml, out, async ({ page }) => {
  await page.waitForTimeout(seconds * 1000);
});
