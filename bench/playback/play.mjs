// One player on one level of a rungs channel, for bench/playback.rs: hls.js
// with the settings the README recommends (`hlsjs`) or with
// `lowLatencyMode` alone (`hlsjs-plain`), or Shaka Player with its
// low-latency settings (`shaka`), held on the named rendition (`source` or a rung such
// as `160p`). Prints one JSON line: first frame, stalls and a sample of the
// program-date-time latency (node's ingest clock to the picture) every 500 ms.
//
// usage: node bench/playback/play.mjs <hlsjs|hlsjs-plain|shaka> <multivariant URL> <seconds> <rendition>
import { fail, runPlayer } from '../../tests/player/harness.mjs';

const [player, src, secondsArg, rendition] = process.argv.slice(2);
const seconds = Number(secondsArg || 30);
if (!['hlsjs', 'hlsjs-plain', 'shaka'].includes(player) || !src || !rendition) {
  fail('usage: node bench/playback/play.mjs <hlsjs|hlsjs-plain|shaka> <multivariant URL> <seconds> <rendition>');
}

const common = `
const t0 = performance.now();
const now = () => (performance.now() - t0) / 1000;
window.report = { started: null, firstFrameS: null, stalls: 0, samples: [], errors: [], level: null };
const v = document.getElementById('v');
v.addEventListener('playing', () => { if (window.report.started === null) { window.report.started = now(); window.report.firstFrameS = now(); } });
// The rendition's height, or the highest for the source.
const wanted = (heights) => ${JSON.stringify(rendition)} === 'source' ? Math.max(...heights) : Number(${JSON.stringify(rendition)}.replace(/p$/, ''));
`;

const hlsjs = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay></video>
<script src="${origin}/hls.min.js"></script>
<script src="${new URL(src).origin}/assets/rungs-latency.js"></script>
<script>${common}
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
hls.on(Hls.Events.ERROR, (e, d) => {
  if (d.details === 'bufferStalledError' && window.report.started !== null) window.report.stalls++;
  window.report.errors.push({ details: d.details, fatal: d.fatal, t: now() });
});
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
  const h = wanted(d.levels.map((l) => l.height));
  const i = d.levels.findIndex((l) => l.height === h);
  window.report.level = d.levels[i] ? d.levels[i].height : null;
  hls.currentLevel = i;
  // Started by the muted autoplay attribute, as the README recommends.
});
// The node's playback rate control, as /play/<id> and the README use it.
if (${JSON.stringify(player)} === 'hlsjs') rungsHoldLatency(hls, v);
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
setInterval(() => {
  const d = hls.playingDate;
  window.report.samples.push({ t: now(), pdt: d && window.report.started !== null ? (Date.now() - d.getTime()) / 1000 : null });
}, 500);
</script></body></html>`;

const shaka = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay></video>
<script src="${origin}/shaka-player.js"></script>
<script>${common}
(async () => {
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  await player.attach(v);
  // The README's settings: low-latency mode, and sequence mode while Shaka
  // 5.2 drops parts otherwise (see the README).
  player.configure({ streaming: { lowLatencyMode: true }, manifest: { hls: { sequenceMode: true } }, abr: { enabled: false } });
  player.addEventListener('buffering', (e) => { if (e.buffering && window.report.started !== null) window.report.stalls++; });
  // The code and what Shaka attached to it (for a network error: the URI and the HTTP status).
  player.addEventListener('error', (e) => window.report.errors.push({ details: String(e.detail && e.detail.code) + ' ' + JSON.stringify((e.detail && e.detail.data) || []).slice(0, 300), fatal: true, t: now() }));
  v.addEventListener('playing', () => {
    if (window.report.startAt) return;
    const r = player.seekRange();
    window.report.startAt = { t: now(), currentTime: v.currentTime, seekStart: r.start, seekEnd: r.end };
  });
  await player.load(${JSON.stringify(src)});
  const tracks = player.getVariantTracks();
  const h = wanted(tracks.map((t) => t.height));
  const track = tracks.find((t) => t.height === h);
  window.report.level = track ? track.height : null;
  if (track) player.selectVariantTrack(track, true);
  v.play().catch(() => {});
  setInterval(() => {
    const d = player.getPlayheadTimeAsDate();
    window.report.samples.push({ t: now(), pdt: d && window.report.started !== null ? (Date.now() - d.getTime()) / 1000 : null });
  }, 500);
})().catch((e) => window.report.errors.push({ details: 'setup: ' + e, fatal: true, t: now() }));
</script></body></html>`;

const out = { ok: true };
await runPlayer(player === 'shaka' ? shaka : hlsjs, out, async ({ page }) => {
  await page.waitForTimeout(seconds * 1000);
});
