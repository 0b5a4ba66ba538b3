// Publishes headless Chromium's fake camera and microphone to a WHIP
// endpoint (tests/whip/publish.html), for tests/whip.rs.
//
// usage: node tests/whip/publish.mjs <WHIP URL> <stream key> <max seconds>
//
// The page is served by tests/player/harness.mjs from its own 127.0.0.1
// port (a secure context, so getUserMedia works; another origin than the
// node, so the POST goes through CORS). Output, one JSON object a line:
//   {"event":"published", status, location, posted_ms, answered_ms,
//    connected_ms, ...}   once the POST is answered and the connection is
//                         up (or failed, or 15 s passed);
//   {"ok":..., "published":..., "stats":[...], "delete":{status,...}, ...}
//                         at the end, after the DELETE.
// It publishes until it reads `stop` on stdin or <max seconds> pass
// (stdin EOF is ignored), sampling the sender's stats every second.
import { readFileSync } from 'node:fs';
import { fail, runPage } from '../player/harness.mjs';

const [url, key, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 30);
if (!url || key === undefined) fail('usage: node tests/whip/publish.mjs <WHIP URL> <stream key> <max seconds>');
const html = readFileSync(new URL('./publish.html', import.meta.url), 'utf8');

// Resolves at a `stop` line on stdin or after `ms`.
function stopped(ms) {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('timeout'), ms);
    let buf = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (d) => {
      buf += d;
      if (buf.split('\n').some((l) => l.trim() === 'stop')) { clearTimeout(t); resolve('stop'); }
    });
    process.stdin.on('error', () => {});
  });
}

// report: null keeps the harness from adding window.report (the SDPs) to the output.
const out = { ok: true, stats: [], report: null };
await runPage(() => html, out, async ({ page }) => {
  const deadline = Date.now() + seconds * 1000;
  const pub = await page.evaluate(([u, k]) => window.whipPublish(u, k), [url, key]);
  const ev = {
    event: 'published',
    status: pub.status,
    location: pub.location,
    content_type: pub.content_type,
    posted_ms: pub.posted_ms,
    answered_ms: pub.answered_ms,
    gathered: pub.gathered,
    offer_candidates: pub.offer_candidates,
  };
  if (pub.status !== 201) {
    ev.body = pub.error_body;
    console.log(JSON.stringify(ev));
    throw new Error(`POST answered ${pub.status}: ${pub.error_body}`);
  }
  await page.waitForFunction(() => window.report.connected_ms !== null || window.report.failed, null,
    { timeout: 15000, polling: 10 }).catch(() => {});
  const r = await page.evaluate(() => window.report);
  Object.assign(ev, { connected_ms: r.connected_ms, states: r.states, ice_states: r.iceStates, answer: r.answer });
  console.log(JSON.stringify(ev));
  out.published = ev;
  if (r.connected_ms === null) throw new Error(`not connected 15 s after the answer: ${JSON.stringify(r.states)}`);
  const stop = stopped(Math.max(0, deadline - Date.now()));
  const sampler = setInterval(() => {
    page.evaluate(() => window.whipStats()).then((s) => out.stats.push(s), () => {});
  }, 1000);
  out.stopped_by = await stop;
  clearInterval(sampler);
  out.stats.push(await page.evaluate(() => window.whipStats()));
  out.delete = await page.evaluate(() => window.whipStop());
  if (out.delete.status !== 200) throw new Error(`DELETE answered ${out.delete.status}: ${out.delete.body || out.delete.error}`);
}, {
  args: [
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
  ],
});
// stdin stays open: exit rather than wait for it.
process.exit(out.ok ? 0 : 1);
