// The node's own player page over HTTPS: hls.js must fetch the page, its
// playlists and its media over HTTP/2, and play. Chromium trusts the test
// node's leaf by the SHA-256 of its public key alone
// (`--ignore-certificate-errors-spki-list`), never by a blanket ignore; the
// page and its resources share the node's origin, so each resource timing
// entry shows the protocol it came over (`nextHopProtocol`).
//
// usage: node tests/player/tls.mjs <https://.../play/<id>> <base64 SHA-256 of the leaf's SPKI> <seconds>
//
// Prints one JSON line: ok, error, and report { advanced (seconds of
// currentTime gained while playing), decodedFrames, protocols { document,
// playlists, media: { protocol: count } }, fatal (hls.js fatal errors) }.
import { runPage } from './harness.mjs';

const [playPage, spki, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 12);
if (!playPage || !spki) {
  console.log(JSON.stringify({ ok: false, error: 'usage: tls.mjs <play page URL> <SPKI hash> [seconds]' }));
  process.exit(2);
}

const out = { ok: true };
await runPage(() => '<!doctype html><title>rungs tls</title>', out, async ({ page }) => {
  // LL-HLS makes several requests a second: keep every timing entry (the
  // default buffer holds 250).
  await page.addInitScript(() => performance.setResourceTimingBufferSize(100000));
  const resp = await page.goto(playPage);
  if (!resp || resp.status() !== 200) throw new Error(`GET ${playPage}: ${resp && resp.status()}`);
  await page.waitForFunction(() => {
    const v = document.querySelector('video');
    return v && v.currentTime > 0 && !v.paused;
  }, null, { timeout: 20000 }).catch(() => { throw new Error('playback did not start within 20 s'); });
  const t0 = await page.evaluate(() => document.querySelector('video').currentTime);
  await page.waitForTimeout(Math.max(2, seconds - 2) * 1000);
  out.report = await page.evaluate((t0) => {
    const v = document.querySelector('video');
    const entries = performance.getEntriesByType('resource');
    const byPath = (re) => entries.filter((e) => re.test(new URL(e.name).pathname));
    const count = (list) => list.reduce((m, e) => {
      const p = e.nextHopProtocol || '(none)';
      m[p] = (m[p] || 0) + 1;
      return m;
    }, {});
    const errors = (window.rungsPlayer && window.rungsPlayer.errors) || [];
    return {
      advanced: v.currentTime - t0,
      decodedFrames: v.getVideoPlaybackQuality().totalVideoFrames,
      protocols: {
        document: count(performance.getEntriesByType('navigation')),
        playlists: count(byPath(/\.m3u8$/)),
        media: count(byPath(/\.(m4s|mp4)$/)),
      },
      fatal: errors.filter((e) => e.includes('(fatal)')),
      errors: errors.slice(-20),
    };
  }, t0);
}, { args: [`--ignore-certificate-errors-spki-list=${spki}`] });
