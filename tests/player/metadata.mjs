// Plays a rungs channel with hls.js in headless Chromium, inserts timed
// metadata through the node's admin API once it plays, and reports the
// metadata cues hls.js raised: the ID3 one from the emsg box in the media
// and the EXT-X-DATERANGE one from the playlist, with their start times.
//
// usage: node tests/player/metadata.mjs <multivariant URL> <metadata API URL> <admin token> <text>
import { runPlayer } from './harness.mjs';

const [src, api, token, text] = process.argv.slice(2);

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${origin}/hls.min.js"></script>
<script>
window.report = { started: null, samples: [], errors: [] };
const v = document.getElementById('v');
const hls = new Hls({ lowLatencyMode: true });
hls.on(Hls.Events.FRAG_PARSING_METADATA, (e, d) => {
  for (const s of d.samples) {
    window.report.samples.push({ pts: s.pts, type: s.type, text: new TextDecoder().decode(s.data) });
  }
});
hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.report.errors.push(d.details); });
v.addEventListener('playing', () => { if (window.report.started === null) window.report.started = v.currentTime; });
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
window.cues = () => {
  const out = [];
  for (const t of v.textTracks) {
    if (t.kind !== 'metadata' || !t.cues) continue;
    for (const c of t.cues) {
      out.push({ id: c.id, type: c.type, start: c.startTime, key: c.value && c.value.key,
        data: c.value && typeof c.value.data === 'string' ? c.value.data : null });
    }
  }
  return out;
};
</script></body></html>`;

const out = { ok: false };
await runPlayer(pageHtml, out, async ({ page }) => {
  await page.waitForTimeout(1500);
  const r = await fetch(api, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
    body: text,
  });
  out.status = r.status;
  out.placed = await r.json();
  out.postedAt = await page.evaluate(() => document.getElementById('v').currentTime);
  const seen = await page.waitForFunction(
    (t) => window.cues().some((c) => c.key === 'TXXX' && c.data === t),
    text, { timeout: 15000 }).then(() => true, () => false);
  out.seen = seen;
  // The date range cue comes with the playlist; give it a moment.
  await page.waitForTimeout(1000);
  out.cues = await page.evaluate(() => window.cues());
  out.report = await page.evaluate(() => window.report);
  out.ok = seen;
});
