// Plays a recording (an HLS VOD) with hls.js in headless Chromium from its
// start to its end, and reports which timed-metadata cues became active while
// it played: the ID3 cue hls.js makes from the emsg box in the media and the
// EXT-X-DATERANGE cue from the playlist. tests/player/metadata.mjs inserts
// metadata into a live stream; here it was inserted while the stream was
// live, and the recording must carry it.
//
// A cue counts as fired when the metadata track's `cuechange` lists it among
// its active cues: what a page's own metadata handler would see, not merely a
// cue parsed ahead of the playhead.
//
// The date range is reported as hls.js parsed it (`LevelDetails.dateRanges`,
// with the media time hls.js maps its START-DATE to), not as a fired cue:
// hls.js 1.7.4 adds a date range's cue right after creating its metadata
// <track src="data:,WEBVTT">, and Chromium's loading of that track then clears
// it. A live playlist gets its date ranges after the track has loaded, a VOD
// one only before, so in Chromium a VOD's date range cues never fire, however
// right the playlist is.
//
// It plays at twice the normal rate (muted): a VOD has no live edge to wait
// for, and the run costs half the wall time; hls.js and Chromium play the
// same bytes either way.
//
// usage: node tests/player/vod_metadata.mjs <multivariant URL> <ID3 text> <date range ID>
import { runPlayer } from './harness.mjs';

const [src, text, daterangeId] = process.argv.slice(2);

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${origin}/hls.min.js"></script>
<script>
window.report = { started: null, ended: false, fired: [], errors: [], fatal: [], samples: [], duration: null, levels: 0 };
const v = document.getElementById('v');
const hls = new Hls();
window.hls = hls;
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => { window.report.levels = d.levels.length; });
hls.on(Hls.Events.ERROR, (e, d) => {
  window.report.errors.push({ details: d.details, fatal: d.fatal, at: v.currentTime });
  if (d.fatal) window.report.fatal.push(d.details);
});
const watch = (t) => {
  if (t.kind !== 'metadata' || t.watched) return;
  t.watched = true;
  // 'hidden': cues become active (and cuechange fires) without being shown.
  t.mode = 'hidden';
  t.addEventListener('cuechange', () => {
    for (const c of t.activeCues || []) {
      window.report.fired.push({ id: c.id, start: c.startTime, at: v.currentTime,
        key: c.value && c.value.key,
        data: c.value && typeof c.value.data === 'string' ? c.value.data : null });
    }
  });
};
v.textTracks.addEventListener('addtrack', (e) => watch(e.track));
v.addEventListener('playing', () => {
  if (window.report.started === null) {
    window.report.started = v.currentTime;
    v.playbackRate = 2;
  }
});
v.addEventListener('ended', () => { window.report.ended = true; });
setInterval(() => window.report.samples.push(+v.currentTime.toFixed(3)), 500);
v.addEventListener('durationchange', () => { window.report.duration = v.duration; });
// Media first, then the source, the order hls.js's documentation uses.
hls.on(Hls.Events.MEDIA_ATTACHED, () => hls.loadSource(${JSON.stringify(src)}));
hls.attachMedia(v);
</script></body></html>`;

const out = { ok: false };
await runPlayer(pageHtml, out, async ({ page }) => {
  // A recording of well under a minute, at twice the rate: a minute is
  // generous on a loaded machine and still ends the run.
  out.ended = await page.waitForFunction(() => window.report.ended, null, { timeout: 60000 })
    .then(() => true, () => false);
  out.report = await page.evaluate(() => window.report);
  // Every metadata cue the tracks hold, fired or not: what a failure needs.
  out.cues = await page.evaluate(() => [...document.getElementById('v').textTracks]
    .filter((t) => t.kind === 'metadata')
    .flatMap((t) => [...(t.cues || [])].map((c) => ({ id: c.id, start: c.startTime, end: c.endTime,
      key: c.value && c.value.key }))));
  out.dateRanges = await page.evaluate(() => {
    const ranges = (d) => Object.values((d && d.dateRanges) || {}).map((r) => ({
      id: r.id, class: r.class, startTime: r.startTime, text: r.attr['X-RUNGS-TEXT'] }));
    const audio = hls.audioTracks[hls.audioTrack];
    return { video: ranges(hls.levels[hls.currentLevel] && hls.levels[hls.currentLevel].details),
      audio: ranges(audio && audio.details) };
  });
  out.emsgFired = out.report.fired.some((c) => c.key === 'TXXX' && c.data === text);
  out.daterangeFired = out.report.fired.some((c) => c.id === daterangeId);
  out.ok = out.ended && out.emsgFired && out.report.fatal.length === 0;
});
