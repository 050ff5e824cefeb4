// End-to-end test of an API-key connection in a real browser: the link opens callback-gate's hosted form, a wrong
// key is refused by the provider's API (a small HTTP double on loopback) with a page offering to try again, the
// right key connects, and /v1/proxy sends the stored key to the API. The key never reaches the gate's log.
//
// Run from the repository root, after `cargo build`:
//   node --test tests/e2e/credentials.test.mjs

import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';

import {
  api,
  freePort,
  launchBrowser,
  leakedSecrets,
  newLoopbackContext,
  startGate,
  startIdp,
  usedSecrets,
} from './harness.mjs';

const SCENARIO_TIMEOUT_MS = 60_000;
const RIGHT_KEY = 'zk_live_right_0123456789abcdef';
const WRONG_KEY = 'zk_live_wrong_fedcba9876543210';

/** The provider's API: `Authorization: Bearer RIGHT_KEY` is accepted everywhere; every request is recorded. */
async function startApi() {
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method, url: req.url, authorization: req.headers.authorization });
    const ok = req.headers.authorization === `Bearer ${RIGHT_KEY}`;
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(JSON.stringify(ok ? { path: req.url, ok: true } : { error: 'invalid_api_key' }));
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}`, requests, close: () => new Promise((resolve) => server.close(resolve)) };
}

describe('API-key connections (hosted form, headless Chromium)', () => {
  test('a wrong key is refused, the right key connects, the proxy sends it', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    usedSecrets.add(RIGHT_KEY);
    usedSecrets.add(WRONG_KEY);
    const gatePort = await freePort();
    const apiDouble = await startApi();
    // The OpenID provider is the harness's default connection; this test does not use it.
    const idp = await startIdp({ redirectUri: `http://127.0.0.1:${gatePort}/connect/callback/idp` });
    let gate;
    let browser;
    try {
      gate = await startGate({
        port: gatePort,
        issuer: idp.issuer,
        extraConnections: `
[[connections]]
name = "zoominfo"
display_name = "ZoomInfo"
provider = "api_key"
api_base_url = "${apiDouble.url}/api"
verify_path = "/me"
user_verification = false
`,
      });
      const minted = await api(gate, 'POST', '/v1/authorization-links', { connection: 'zoominfo', identifier: 'user_keys' });
      assert.equal(minted.status, 201, minted.text);
      browser = await launchBrowser();
      const context = await newLoopbackContext(browser);
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);

      // The link opens the hosted form: a password-type field, no script.
      const opened = await page.goto(minted.json.link);
      assert.equal(opened.status(), 200);
      const headers = await opened.allHeaders();
      assert.match(headers['content-security-policy'], /form-action 'self'/);
      assert.equal(await page.locator('h1').innerText(), 'Connect ZoomInfo');
      assert.equal(await page.locator('#api_key').getAttribute('type'), 'password');
      assert.equal(await page.locator('script').count(), 0, 'no script on the form');

      // A wrong key: the provider refuses it, the page says so and offers to try again; nothing is stored.
      await page.locator('#api_key').fill(WRONG_KEY);
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.waitForURL(/\/connect\/result\//);
      assert.equal(await page.locator('main').getAttribute('data-code'), 'credential_rejected');
      assert.match(await page.locator('h1').innerText(), /That key was not accepted/);
      assert.ok(!(await page.content()).includes(WRONG_KEY), 'the key is not on the page');
      let account = await api(gate, 'GET', '/v1/connected-accounts/zoominfo/user_keys');
      assert.equal(account.json.status, 'PENDING_AUTH', account.text);

      // Try again from the same page, with the right key.
      await page.locator('[data-action="restart"]').click();
      await page.locator('#api_key').waitFor();
      await page.locator('#api_key').fill(RIGHT_KEY);
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.waitForURL(/\/connect\/result\//);
      assert.equal(await page.locator('main').getAttribute('data-outcome'), 'connected', await page.content());
      account = await api(gate, 'GET', '/v1/connected-accounts/zoominfo/user_keys');
      assert.equal(account.json.status, 'ACTIVE', account.text);
      await context.close();

      // The proxy sends the stored key to the API.
      const proxied = await api(gate, 'GET', '/v1/proxy/zoominfo/user_keys/companies?q=acme');
      assert.equal(proxied.status, 200, proxied.text);
      const call = apiDouble.requests.find((r) => r.url === '/api/companies?q=acme');
      assert.ok(call, `the API saw the call: ${JSON.stringify(apiDouble.requests)}`);
      assert.equal(call.authorization, `Bearer ${RIGHT_KEY}`);
      assert.deepEqual(
        apiDouble.requests.filter((r) => r.url === '/api/me').map((r) => r.authorization),
        [`Bearer ${WRONG_KEY}`, `Bearer ${RIGHT_KEY}`],
        'each key was checked once before anything was stored',
      );
    } catch (err) {
      if (gate && err && typeof err.message === 'string') err.message += `\n--- callback-gate output ---\n${gate.output()}`;
      throw err;
    } finally {
      await browser?.close().catch(() => {});
      if (gate) {
        await gate.stop();
        const leaks = leakedSecrets(gate.output());
        assert.deepEqual(leaks.map((s) => `${s.slice(0, 6)}…`), [], 'no key in the gate log');
      }
      await apiDouble.close();
      await idp.close().catch(() => {});
    }
  });
});
