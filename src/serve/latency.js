// Holds an hls.js player at its target latency (served at
// /assets/rungs-latency.js; /play/<id> uses it, and so can any page).
//
// hls.js starts where live was when it read the playlist, then spends its
// start-up time loading from the segment's keyframe, and its own catch-up
// (maxLiveSyncPlaybackRate) only acts with over 1 s buffered: a low-latency
// stream would stay at hls.js's start-up delay, or after a stall further
// behind, for good. This plays up to 1.5x towards hls.js's target latency
// while over 0.3 s stays buffered, and at 0.95x when under 0.25 s is left (a
// publisher whose clock runs a little slow) rather than stall.
//
// It also heads off one hls.js 1.7 stall: when a part finishes buffering
// after the playlist update that completed its segment (its start-up burst
// on a busy machine), hls.js takes the whole segment for buffered, never
// loads the rest, and waits several seconds for its own live-sync seek.
// Where hls.js's fragment tracker is reachable (1.7 exposes it on the main
// stream controller), a segment that it counts as buffered while its media
// stops inside that segment and none of its parts is loading is taken off
// the tracker: hls.js then loads what is missing before the playhead gets
// there. Failing that (another hls.js), stalled for over half a second with
// nothing buffered ahead while the playlist lists a segment after the
// buffer's end, the player seeks to that segment's start, which hls.js
// loads afresh (what is left of the stuck one is skipped).
//
// hls.js adds a second to its target latency for every stall, for good (up
// to a target duration). After 20 s without another stall the helper sets
// the target back to the playlist's PART-HOLD-BACK (hls.targetLatency's
// setter also clears hls.js's stall count), so one stall does not leave the
// viewer a second further behind for the rest of the session.
window.rungsHoldLatency = function (hls, video) {
  // The first listed segment, or else the one in progress, that passes `test`.
  const findSegment = (d, test) =>
    d.fragments.find(test) || (d.fragmentHint && test(d.fragmentHint) ? d.fragmentHint : null);
  const nextSegment = (d, after) => d && findSegment(d, (s) => s.start > after);
  const main = hls.streamController;
  const tracker = main && main.fragmentTracker;
  // The listed segment (or the one in progress) that the main buffer stops
  // inside of while the tracker counts it as buffered and no part of it is
  // on its way: what hls.js will never load by itself. Taken off the
  // tracker, hls.js loads it again from where the buffer stops.
  const release = () => {
    const d = hls.latestLevelDetails;
    if (!tracker || !d) return;
    const loading = main.state !== 'IDLE' && main.fragCurrent;
    let end = null;
    try {
      // The video SourceBuffer where audio is a rendition of its own.
      const ranges = (main.mediaBuffer || video).buffered;
      for (let i = 0; i < ranges.length; i++) {
        if (ranges.start(i) <= video.currentTime + 0.1 && ranges.end(i) > video.currentTime) end = ranges.end(i);
      }
    } catch (e) {
      return; // a SourceBuffer removed from its MediaSource
    }
    if (end === null) return;
    const f = findSegment(d, (s) => s.start <= end + 0.05 && s.end > end + 0.1);
    if (f && tracker.getState(f) === 'OK' && !(loading && loading.sn === f.sn)) tracker.removeFragment(f);
  };
  // Checked where the fault arises (a part buffered, a playlist update) and
  // on every tick. (The page may have hls.js from a bundle, without the
  // global `Hls`.)
  const events = hls.constructor.Events;
  if (tracker && events) {
    hls.on(events.FRAG_BUFFERED, release);
    hls.on(events.LEVEL_UPDATED, release);
  }
  let played = false;
  let stuckSince = null;
  let target = null;
  let raisedAt = null;
  video.addEventListener('playing', () => { played = true; });
  return setInterval(() => {
    release();
    const ahead = video.buffered.length ? video.buffered.end(video.buffered.length - 1) - video.currentTime : 0;
    const stalled = played && !video.paused && !video.seeking && video.readyState < 3 && ahead < 0.1;
    // The first segment past what is buffered: the stuck one ends there or later.
    const next = stalled ? nextSegment(hls.latestLevelDetails, video.currentTime + ahead + 0.05) : null;
    if (!next) {
      stuckSince = null;
    } else if (stuckSince === null) {
      stuckSince = performance.now();
    } else if (performance.now() - stuckSince > 600) {
      stuckSince = null;
      video.currentTime = next.start;
    }
    const d = hls.latestLevelDetails;
    const floor = d ? d.partHoldBack || d.holdBack : 0;
    if (floor > 0 && hls.targetLatency > floor + 0.01) {
      if (target === null || hls.targetLatency > target + 0.01) raisedAt = performance.now();
      if (performance.now() - raisedAt > 20000) hls.targetLatency = floor;
    }
    target = hls.targetLatency;
    const behind = hls.latency - hls.targetLatency;
    if (video.paused || !video.buffered.length || !Number.isFinite(behind)) return;
    let rate = 1;
    if (ahead < 0.25) rate = 0.95;
    else if (behind > 0.1 && ahead > 0.3) rate = Math.min(1.5, Math.round(40 / (1 + Math.exp(-0.75 * behind))) / 20);
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }, 250);
};
