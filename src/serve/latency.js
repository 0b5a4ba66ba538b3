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
window.rungsHoldLatency = function (hls, video) {
  return setInterval(() => {
    const behind = hls.latency - hls.targetLatency;
    if (video.paused || !video.buffered.length || !Number.isFinite(behind)) return;
    const ahead = video.buffered.end(video.buffered.length - 1) - video.currentTime;
    let rate = 1;
    if (ahead < 0.25) rate = 0.95;
    else if (behind > 0.1 && ahead > 0.3) rate = Math.min(1.5, Math.round(40 / (1 + Math.exp(-0.75 * behind))) / 20);
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }, 250);
};
