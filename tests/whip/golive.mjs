// Drives the node's own go-live page (/publish/<id>) in headless Chromium
// with a fake camera and microphone, as a broadcaster would: a wrong key
// first (the page must show the refusal), then the right one, Go live,
// publish for a while, Stop.
//
// usage: node tests/whip/golive.mjs <page URL> <stream key> <seconds live>
// Output: one JSON line {ok, refused_status, refused_error, live_ms,
// sending, state_after_stop} (or {ok: false, error}).
import { runPage } from '../player/harness.mjs';

const [pageUrl, key, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
const out = { ok: true, report: null };
const state = (page) => page.evaluate(() => window.rungsPublish);

await runPage(() => '<!doctype html><title>blank</title>', out, async ({ page }) => {
  await page.goto(pageUrl);
  out.secure_context = await page.evaluate(() => window.isSecureContext);

  await page.fill('#key', 'sk_wrong');
  await page.click('#live');
  await page.waitForFunction(() => window.rungsPublish.state === 'failed', null, { timeout: 15000 });
  const refused = await state(page);
  out.refused_status = refused.status;
  out.refused_error = await page.textContent('#error');

  await page.reload();
  await page.fill('#key', key);
  const t0 = Date.now();
  await page.click('#live');
  await page.waitForFunction(() => ['live', 'failed'].includes(window.rungsPublish.state), null, { timeout: 20000 });
  const live = await state(page);
  if (live.state !== 'live') throw new Error(`page did not go live: ${JSON.stringify(live)}`);
  out.live_ms = Date.now() - t0;
  await page.waitForTimeout(seconds * 1000);
  out.sending = await page.textContent('#sending');
  await page.click('#stop');
  await page.waitForFunction(() => window.rungsPublish.state === 'stopped', null, { timeout: 10000 });
  out.state_after_stop = (await state(page)).state;
}, {
  args: [
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
  ],
});
process.exit(out.ok ? 0 : 1);
