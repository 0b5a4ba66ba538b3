// Plays a rungs channel in headless Chromium with hls.js and reports stalls,
// level switches and latency as one JSON line on stdout.
//
// usage: node tests/player/play.mjs <multivariant URL> <seconds> [player page URL] [switch every N s]
//        [video codec prefix]
//
// With a video codec prefix (e.g. `avc1`), the level played is the top one of
// those whose video codec starts with it, not the top one of all (a ladder
// whose source is AV1 or HEVC and whose rungs are H.264). Each level of the
// report carries the video codec hls.js parsed from its CODECS.
//
// hls.js runs with the settings the README recommends to sites
// (lowLatencyMode and the node's playback rate control) on the top level;
// with a switch interval, every level is then forced in turn with `hls.loadLevel` (hls.js loads the
// new level from its next independent part, over what it had buffered: the
// switch only plays through if the rungs line up).
//
// The test page is served by a small HTTP server of this script on another
// 127.0.0.1 port, so hls.js fetches the node cross-origin (what a real site
// embedding the stream does; it needs the node's CORS headers). Serving it
// from loopback also keeps Chromium's Local Network Access checks out of the
// way (a public-looking origin may not fetch from loopback). The node's own /play page is opened as well to check that it
// loads hls.js and starts playing.
import { writeFileSync } from 'node:fs';
import { runPlayer } from './harness.mjs';

const [src, secondsArg, playPageArg, switchArg, codecArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 20);
const playPage = playPageArg && playPageArg !== '-' ? playPageArg : null;
const switchEvery = Number(switchArg || 0);
const codecPrefix = codecArg && codecArg !== '-' ? codecArg : '';

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:640px"></video>
<script src="${origin}/hls.min.js"></script>
<script src="${new URL(src).origin}/assets/rungs-latency.js"></script>
<script>
performance.setResourceTimingBufferSize(100000);
window.report = { events: [], waiting: 0, stalls: 0, holes: 0, placements: 0, startStalls: 0, placed: false, errors: [], samples: [], switched: [], trace: [], started: null, firstFrameMs: null, levels: [] };
const t0 = performance.now();
window.report.t0Ms = t0;
const now = () => (performance.now() - t0) / 1000;
const v = document.getElementById('v');
// RUNGS_HLSJS_LOG=<file>: hls.js's debug log, kept in the page (a console
// logger would slow the player enough to change what it does).
window.hlsLog = [];
const keep = (...a) => window.hlsLog.push(now().toFixed(3) + ' ' + a.join(' '));
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30,
  debug: ${process.env.RUNGS_HLSJS_LOG ? 'true' : 'false'} && { log: keep, debug: keep, info: keep, warn: keep, error: keep } });
window.hls = hls;
// The main stream controller's decisions (hls.js internals, wrapped and
// recorded, not changed): what it looked for and what it found, per tick.
window.report.calls = [];
{
  const sc = hls.streamController;
  const sn = (f) => (f ? (f.fragment ? f.fragment.sn + '.' + f.index : f.sn) : null);
  const wrap = (name, summary) => {
    const orig = sc[name];
    if (typeof orig !== 'function') return;
    sc[name] = function (...a) {
      const r = orig.apply(this, a);
      if (window.report.calls.length < 20000) window.report.calls.push([+now().toFixed(3), name, ...summary(a, r)]);
      return r;
    };
  };
  wrap('getNextFragment', (a, r) => [+a[0].toFixed(3), sn(r)]);
  wrap('getFragmentAtPosition', (a, r) => [+a[0].toFixed(3), +a[1].toFixed(3), sn(r)]);
  wrap('getNextPart', (a, r) => [sn(a[1]), +a[2].toFixed(3), r > -1 ? sn(a[0][r]) : r]);
  wrap('isLoopLoading', (a, r) => [sn(a[0]), +a[1].toFixed(3), r]);
  wrap('loadFragment', (a, r) => [sn(a[0]), a[2] && +a[2].toFixed(3)]);
  wrap('backtrack', (a, r) => [sn(a[0])]);
}
hls.on(Hls.Events.ERROR, (e, d) => {
  // Before the first frame a stall only delays it (time to first frame
  // measures that); after it, the viewer sees the picture stop.
  if (d.details === 'bufferStalledError') {
    if (window.report.started === null) window.report.startStalls++;
    else window.report.stalls++;
  }
  // hls.js places the playhead at the live start itself: its stream
  // controller once the main buffer has media, or, when its gap controller's
  // poll sees the buffer first, by a "seek over hole" from 0 before anything
  // played. That first placement is no hole in the stream; any later one is.
  if (d.details === 'bufferSeekOverHole') {
    if (!window.report.placed && window.report.started === null) window.report.placements++;
    else window.report.holes++;
  }
  window.report.errors.push({ type: d.type, details: d.details, fatal: d.fatal, t: now(), reason: d.reason || (d.error && String(d.error.message)) || '' });
});
v.addEventListener('playing', () => {
  if (window.report.started === null) { window.report.started = performance.now(); window.report.firstFrameMs = performance.now() - t0; }
  window.report.events.push(['playing', now()]);
});
v.addEventListener('waiting', () => {
  if (window.report.started !== null) window.report.waiting++;
  window.report.events.push(['waiting', v.currentTime, now()]);
});
v.addEventListener('seeking', () => {
  window.report.placed = true;
  window.report.events.push(['seeking', v.currentTime, now()]);
});
hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => window.report.switched.push({ level: d.level, t: now() }));
hls.on(Hls.Events.FRAG_LOADING, (e, d) => window.report.events.push(['loading', d.frag.type, d.frag.level, d.frag.sn, d.part ? d.part.index : -1, now()]));
hls.on(Hls.Events.AUDIO_TRACK_LOADED, (e, d) => window.report.events.push(['atrack', d.details.endSN, d.details.lastPartSn, d.details.lastPartIndex, +d.details.edge.toFixed(3), now()]));
hls.on(Hls.Events.LEVEL_UPDATED, (e, d) => window.report.events.push(['level', d.level, d.details.endSN, d.details.lastPartSn, d.details.lastPartIndex, +d.details.edge.toFixed(3), now()]));
// The main stream controller's own state every 100 ms (hls.js internals,
// read only): what it was doing while nothing was requested.
// The last segments of a playlist as hls.js places them: [sn, start, duration, date ms mod 1e5].
const tail = (d) => d ? d.fragments.slice(-2).concat(d.fragmentHint ? [d.fragmentHint] : [])
  .map((f) => [f.sn, +f.start.toFixed(4), +f.duration.toFixed(4), f.programDateTime ? f.programDateTime % 100000 : null]) : null;
setInterval(() => {
  const sc = hls.streamController;
  if (!sc) return;
  const b = v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0;
  window.report.trace.push([+now().toFixed(2), sc.state, sc.loadingParts, +(sc.nextLoadPosition || 0).toFixed(3), +b.toFixed(3), +v.currentTime.toFixed(3),
    sc.fragCurrent ? sc.fragCurrent.sn : null, sc.fragPrevious ? sc.fragPrevious.sn : null, hls.loadLevel, hls.nextLoadLevel]);
  const ac = hls.audioStreamController;
  if (!ac || !ac.mediaBuffer) return;
  const ab = ac.mediaBuffer.buffered;
  const d = ac.levels && ac.levels[ac.trackId] && ac.levels[ac.trackId].details;
  const mfl = ac.mainFragLoading && ac.mainFragLoading.frag;
  window.report.trace.push([+now().toFixed(2), 'audio', ac.state, ac.loadingParts, ab.length ? +ab.end(ab.length - 1).toFixed(3) : 0,
    ac.fragCurrent ? ac.fragCurrent.sn : null, ac.fragPrevious ? ac.fragPrevious.sn : null,
    mfl ? [mfl.sn, +mfl.start.toFixed(3), +mfl.end.toFixed(3)] : null,
    d ? [d.endSN, d.fragmentHint ? +d.fragmentHint.start.toFixed(3) : null, d.partList ? d.partList.length : 0, +d.edge.toFixed(3), d.PTSKnown] : null,
    ac.waitingData ? ac.waitingData.frag.sn : null, ac.bufferFlushed, ac.flushing, hls.liveSyncPosition && +hls.liveSyncPosition.toFixed(3),
    tail(d), tail(hls.levels[hls.loadLevel] && hls.levels[hls.loadLevel].details)]);
}, 100);
hls.on(Hls.Events.FRAG_BUFFERED, (e, d) => window.report.events.push(['frag', d.frag.type, d.frag.level, d.frag.sn, d.part ? d.part.index : -1, +d.frag.start.toFixed(3), now()]));
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
  window.report.levels = d.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate, url: String(l.url), videoCodec: l.videoCodec || null }));
  // The top level, chosen by the test, not by hls.js's ABR: its estimates
  // from 200 ms parts on a loaded machine can switch twice within one
  // segment, which no stream can make seamless.
  // With a codec prefix, the top level of that codec (none: -1 in the
  // report, and hls.js left to its ABR).
  const wanted = ${JSON.stringify(codecPrefix)};
  window.report.startLevel = wanted ? d.levels.map((l) => (l.videoCodec || '').startsWith(wanted)).lastIndexOf(true) : d.levels.length - 1;
  hls.loadLevel = window.report.startLevel;
  // No play() here: the muted autoplay attribute starts playback once hls.js
  // has placed the playhead at its start position (what the README tells
  // sites to do). A play() this early lets hls.js's gap controller place it
  // first, and hls.js seeks again just after the first frame.
});
// The node's own playback rate control, as /play/<id> and the README use it.
rungsHoldLatency(hls, v);
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
setInterval(() => {
  const date = hls.playingDate;
  window.report.samples.push({
    t: now(),
    currentTime: v.currentTime,
    latency: hls.latency,
    // From the node's ingest clock (EXT-X-PROGRAM-DATE-TIME) to the picture.
    pdtLatency: date ? (Date.now() - date.getTime()) / 1000 : null,
    targetLatency: hls.targetLatency,
    buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0,
    ranges: Array.from({ length: v.buffered.length }, (_, i) => [+v.buffered.start(i).toFixed(3), +v.buffered.end(i).toFixed(3)]),
    rate: v.playbackRate,
    level: hls.currentLevel,
    dropped: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().droppedVideoFrames : 0,
  });
}, 500);
</script></body></html>`;

const out = { ok: true, forced: [] };
await runPlayer(pageHtml, out, async ({ page, ctx }) => {
  const end = Date.now() + seconds * 1000;
  if (switchEvery > 0) {
    const n = await page.evaluate(() => hls.levels.length);
    // Each switch is held for a whole interval (several segments).
    // `hls.nextLevel` would flush the buffer and can make hls.js append a
    // non-independent part of the new level, which no stream can make
    // decodable; `loadLevel` switches where the new level is independent.
    for (let k = 1; Date.now() + 2 * switchEvery * 1000 < end; k++) {
      await page.waitForTimeout(switchEvery * 1000);
      const level = k % n;
      out.forced.push({ level, t: await page.evaluate((l) => { hls.loadLevel = l; return (performance.now()) / 1000; }, level) });
    }
  }
  const rest = end - Date.now();
  if (rest > 0) await page.waitForTimeout(rest);
  // The report covers the test page's own playing time, not the node page's after it.
  out.report = await page.evaluate(() => window.report);
  // The first requests, for reading how start-up time was spent.
  out.report.startup = await page.evaluate(() => performance.getEntriesByType('resource').slice(0, 16)
    .map((e) => [e.name.split('/').slice(-2).join('/'), Math.round(e.startTime), Math.round(e.responseEnd)]));
  // Every request with its times (ms from page start; end 0: never
  // answered), for reading what hls.js waited on when playback stalled.
  out.report.requests = await page.evaluate(() => performance.getEntriesByType('resource')
    .map((e) => [e.name.split('/').slice(-2).join('/'), Math.round(e.startTime - window.report.t0Ms), e.responseEnd && Math.round(e.responseEnd - window.report.t0Ms)]));
  if (process.env.RUNGS_HLSJS_LOG) writeFileSync(process.env.RUNGS_HLSJS_LOG, (await page.evaluate(() => window.hlsLog)).join('\n'));
  if (playPage) {
    // The node's own player page: it loads, plays, and shows a latency.
    // The test page is done: closed, it no longer competes with it for
    // the CPU (on two cores, a second player's start-up stalls).
    await page.close();
    const p2 = await ctx.newPage();
    const p2console = [];
    p2.on('console', (m) => p2console.push(`${m.type()}: ${m.text()}`));
    p2.on('pageerror', (e) => p2console.push(`pageerror: ${e}`));
    await p2.goto(playPage);
    const played = await p2.waitForFunction(() => {
      const v = document.querySelector('video');
      return v && v.currentTime > 1.0;
    }, null, { timeout: 20000 }).then(() => true, () => false);
    // Give the page's own latency display a few updates, and its playback
    // rate control time to reach the target latency: 8 s, or after a stall
    // at start-up (hls.js then adds a second to its target) the 20 s the
    // latency helper waits before setting the target back.
    await p2.waitForFunction(() => /latency\s*[0-9]/i.test(document.body.innerText), null, { timeout: 5000 }).catch(() => {});
    if (played) {
      await p2.waitForTimeout(8000);
      await p2.waitForFunction(() => (window.rungsPlayer?.hls?.latency ?? 9) < 0.9, null, { timeout: 25000 }).catch(() => {});
    }
    out.play_page = {
      played,
      currentTime: await p2.evaluate(() => document.querySelector('video')?.currentTime ?? null),
      latency: await p2.evaluate(() => window.rungsPlayer?.hls?.latency ?? null),
      text: (await p2.evaluate(() => document.body.innerText)).slice(0, 400),
      console: p2console.slice(-20),
    };
  }
});
