// Allowed origins in a real browser: a page on another origin cannot play a
// channel whose allowed origins list only the node's own (hls.js meets a
// 403 without CORS permission and gives up), and the node's own
// /play/<id> page plays it.
//
// usage: node tests/player/origins.mjs <multivariant URL> <the node's /play/<id> URL>
import { runPage } from './harness.mjs';

const [src, playPage] = process.argv.slice(2);

const pageHtml = (origin) => `<!doctype html><html><body>
<video id="v" muted playsinline autoplay style="width:320px"></video>
<script src="${origin}/hls.min.js"></script>
<script>
window.report = { playing: false, errors: [] };
const v = document.getElementById('v');
v.addEventListener('playing', () => { window.report.playing = true; });
const hls = new Hls({ lowLatencyMode: true });
hls.on(Hls.Events.ERROR, (e, d) => window.report.errors.push({
  details: d.details, fatal: d.fatal, code: d.response ? d.response.code : null }));
hls.loadSource(${JSON.stringify(src)});
hls.attachMedia(v);
</script></body></html>`;

const out = { ok: true };
await runPage(pageHtml, out, async ({ page, ctx, origin }) => {
  out.other_origin = origin;
  // hls.js retries a failed multivariant playlist once, then gives up.
  await page.waitForFunction(() => window.report.playing || window.report.errors.some((e) => e.fatal),
    null, { timeout: 20000 }).catch(() => {});
  out.other = await page.evaluate(() => window.report);
  out.report = out.other;
  const own = await ctx.newPage();
  await own.goto(playPage);
  out.own_played = await own.waitForFunction(() => {
    const v = document.querySelector('video');
    return v && v.currentTime > 1.0;
  }, null, { timeout: 25000 }).then(() => true, () => false);
});
