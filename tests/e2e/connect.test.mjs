// End-to-end tests of the browser side of a connection flow:
//
//   API mints a link -> browser opens it -> gate redirects to a real OpenID
//   provider (oidc-provider, dev interactions) -> user signs in and consents
//   (or cancels) -> provider redirects to the gate's callback -> gate shows
//   its result page -> API reports the connected account.
//
// Everything is on 127.0.0.1. Each scenario starts its own provider, its own
// callback-gate process (fresh SQLite database) and its own Chromium, and
// tears all three down in `finally`, whatever happened.
//
// Run from the repository root, after `cargo build`:
//   (cd tests/e2e && npm ci) && node --test tests/e2e/
// Set E2E_GATE_BIN to test another binary than target/debug/callback-gate.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ABORT_ERROR_DESCRIPTION,
  CLIENT_ID,
  CONNECTION,
  freePort,
  launchBrowser,
  leakedSecrets,
  usedSecrets,
  newLoopbackContext,
  startGate,
  startIdp,
} from './harness.mjs';

const SCENARIO_TIMEOUT_MS = 60_000;
const REFERENCE_RE = /^CG-[0-9A-Z]{4}-[0-9A-Z]{4}$/;

/**
 * Starts provider + gate + browser, runs `fn`, and always cleans up. On
 * failure the gate's output (JSON logs) is appended to the error so the
 * test report shows what the service did.
 */
async function withStack(t, fn) {
  const gatePort = await freePort();
  const gateUrl = `http://127.0.0.1:${gatePort}`;
  let idp;
  let gate;
  let browser;
  try {
    idp = await startIdp({ redirectUri: `${gateUrl}/connect/callback/${CONNECTION}` });
    gate = await startGate({ port: gatePort, issuer: idp.issuer });
    browser = await launchBrowser();
    await fn({ idp, gate, browser });
  } catch (err) {
    if (gate) {
      const out = gate.output();
      if (err && typeof err === 'object' && typeof err.message === 'string') {
        err.message += `\n--- callback-gate output ---\n${out}--- end of callback-gate output ---`;
      } else {
        t.diagnostic(`callback-gate output:\n${out}`);
      }
    }
    throw err;
  } finally {
    await browser?.close().catch((e) => t.diagnostic(`browser close: ${e}`));
    if (gate) {
      const exit = await gate.stop();
      t.diagnostic(`callback-gate exit after SIGTERM: ${JSON.stringify(exit)}`);
      const leaks = leakedSecrets(gate.output());
      t.diagnostic(`log checked for ${usedSecrets.size} secrets`);
      assert.deepEqual(leaks.map((s) => `${s.slice(0, 6)}…`), [], 'no code, state, nonce, cookie or key in the gate log');
    }
    await idp?.close().catch((e) => t.diagnostic(`provider close: ${e}`));
  }
}

async function api(gate, method, path, body) {
  const res = await fetch(`${gate.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${gate.apiKey}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: 'manual',
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

async function mintLink(gate, identifier) {
  const res = await api(gate, 'POST', '/v1/authorization-links', {
    connection: CONNECTION,
    identifier,
  });
  assert.equal(res.status, 201, `POST /v1/authorization-links -> ${res.status} ${res.text}`);
  assert.ok(res.json && typeof res.json === 'object', `expected a JSON body, got ${res.text}`);
  const { link, expires_at: expiresAt } = res.json;
  assert.equal(typeof link, 'string', `link: ${res.text}`);
  assert.ok(
    link.startsWith(`${gate.url}/connect/start/`),
    `link should be an absolute URL under ${gate.url}/connect/start/, got ${link}`,
  );
  assert.equal(typeof expiresAt, 'string', `expires_at: ${res.text}`);
  const expiresMs = Date.parse(expiresAt);
  assert.ok(Number.isFinite(expiresMs), `expires_at is not a timestamp: ${expiresAt}`);
  assert.ok(expiresMs > Date.now(), `expires_at is not in the future: ${expiresAt}`);
  return link;
}

/** Records every response the page sees (including redirect hops). */
function recordResponses(page) {
  const responses = [];
  page.on('response', (r) => responses.push(r));
  return responses;
}

function pathOf(url) {
  return new URL(url).pathname;
}

/** The gate's 3xx hop from `pathPrefix`, checked to land on `targetPrefix`. */
async function assertGateRedirect(responses, gateUrl, pathPrefix, targetPrefix) {
  const hop = responses.find(
    (r) => r.url().startsWith(`${gateUrl}${pathPrefix}`),
  );
  assert.ok(hop, `no response from the gate for ${pathPrefix}; saw:\n${responses.map((r) => `${r.status()} ${r.url()}`).join('\n')}`);
  assert.equal(hop.status(), 303, `${hop.url()} should answer 303, got ${hop.status()}`);
  const headers = await hop.allHeaders();
  const location = headers.location;
  assert.ok(location, `${hop.url()} 303 without Location`);
  const target = new URL(location, hop.url()).href;
  assert.ok(
    target.startsWith(targetPrefix),
    `${hop.url()} should redirect to ${targetPrefix}..., got ${target}`,
  );
  return { hop, headers, target };
}

async function assertSecurityHeaders(response, what) {
  const headers = await response.allHeaders();
  assert.match(headers['cache-control'] ?? '', /(^|,\s*)no-store(\s*,|$)/, `${what}: cache-control is ${headers['cache-control']}`);
  assert.equal(headers['referrer-policy'], 'no-referrer', `${what}: referrer-policy`);
  const csp = headers['content-security-policy'] ?? '';
  assert.match(csp, /frame-ancestors 'none'/, `${what}: content-security-policy is ${csp}`);
  return headers;
}

async function signIn(page, login) {
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any-password');
  await page.getByRole('button', { name: 'Sign-in' }).click();
}

describe('callback-gate connect flow (real OpenID provider, headless Chromium)', () => {
  test('approve: sign in and consent at the provider -> connected', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    await withStack(t, async ({ idp, gate, browser }) => {
      const identifier = 'user_e2e_1';
      const link = await mintLink(gate, identifier);

      const context = await newLoopbackContext(browser);
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      const responses = recordResponses(page);

      // Start: the gate sends the browser to the provider's authorization
      // endpoint; the provider shows its sign-in form.
      await page.goto(link);
      assert.ok(
        page.url().startsWith(`${idp.issuer}/interaction/`),
        `expected the provider's sign-in page, got ${page.url()}\n${await page.content()}`,
      );
      await assertGateRedirect(responses, gate.url, '/connect/start/', `${idp.issuer}/auth?`);

      // What the gate asked the provider for.
      assert.equal(idp.authRequests.length, 1, 'one authorization request reached the provider');
      const authz = idp.authRequests[0];
      assert.equal(authz.client_id, CLIENT_ID);
      assert.equal(authz.response_type, 'code');
      assert.equal(authz.redirect_uri, `${gate.url}/connect/callback/${CONNECTION}`);
      assert.equal(authz.code_challenge_method, 'S256', 'PKCE S256');
      assert.match(authz.code_challenge ?? '', /^[A-Za-z0-9_-]{43}$/, 'PKCE code_challenge');
      assert.ok(authz.state && authz.state.length >= 16, `state should be long and random, got ${authz.state}`);
      assert.deepEqual(new Set(authz.scope.split(' ')), new Set(['openid', 'email', 'profile']));

      await signIn(page, 'alice');
      // The consent page ("Authorize") follows the sign-in form.
      await page.getByRole('heading', { name: 'Authorize' }).waitFor();

      const resultResponse = page.waitForResponse(
        (r) => r.url().startsWith(`${gate.url}/connect/result/`) && r.request().isNavigationRequest(),
      );
      await page.getByRole('button', { name: 'Continue' }).click();
      await page.waitForURL((url) => url.href.startsWith(`${gate.url}/connect/result/`));
      await page.waitForLoadState('load');

      // The callback carried code, state and iss, and the gate moved the
      // browser on to a clean result URL.
      const callback = await assertGateRedirect(
        responses,
        gate.url,
        `/connect/callback/${CONNECTION}?`,
        `${gate.url}/connect/result/`,
      );
      const callbackParams = new URL(callback.hop.url()).searchParams;
      assert.ok(callbackParams.get('code'), 'callback had a code');
      assert.equal(callbackParams.get('state'), authz.state, 'callback state is the one the gate sent');
      assert.equal(callbackParams.get('iss'), idp.issuer, 'callback carried the RFC 9207 iss');
      assert.equal(idp.tokenRequests.length, 1, 'the gate redeemed the code once');
      assert.match(idp.tokenRequests[0].authorization ?? '', /^Basic /, 'client_secret_basic at the token endpoint');

      const finalUrl = new URL(page.url());
      assert.ok(finalUrl.pathname.startsWith('/connect/result/'), `final URL ${page.url()}`);
      assert.ok(!finalUrl.search.includes('code='), `final URL leaks code: ${page.url()}`);
      assert.ok(!finalUrl.search.includes('state='), `final URL leaks state: ${page.url()}`);

      const res = await resultResponse;
      assert.equal(res.status(), 200, `result page status ${res.status()}`);
      await assertSecurityHeaders(res, 'result page');

      const outcome = await page.locator('main').getAttribute('data-outcome');
      assert.equal(outcome, 'connected', `main[data-outcome]; page:\n${await page.content()}`);
      const headings = await page.locator('h1').allInnerTexts();
      assert.ok(
        headings.some((h) => h.includes('Connected')),
        `an h1 should contain "Connected", got ${JSON.stringify(headings)}`,
      );

      // The API now reports the account as active.
      const account = await api(gate, 'GET', `/v1/connected-accounts/${CONNECTION}/${identifier}`);
      assert.equal(account.status, 200, `GET connected account -> ${account.status} ${account.text}`);
      assert.equal(account.json?.status, 'ACTIVE', `account: ${account.text}`);
      assert.ok(Array.isArray(account.json.scopes), `scopes should be an array: ${account.text}`);
      assert.ok(account.json.scopes.includes('openid'), `scopes should include openid: ${account.text}`);

      await context.close();
    });
  });

  test('deny: cancel at the provider -> failure page with a reference', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    await withStack(t, async ({ idp, gate, browser }) => {
      const identifier = 'user_e2e_2';
      const link = await mintLink(gate, identifier);

      const context = await newLoopbackContext(browser);
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      const responses = recordResponses(page);

      await page.goto(link);
      assert.ok(
        page.url().startsWith(`${idp.issuer}/interaction/`),
        `expected the provider's sign-in page, got ${page.url()}\n${await page.content()}`,
      );

      // The dev interactions' "[ Cancel ]" link ends the interaction with
      // error=access_denied&error_description=End-User aborted interaction.
      const resultResponse = page.waitForResponse(
        (r) => r.url().startsWith(`${gate.url}/connect/result/`) && r.request().isNavigationRequest(),
      );
      await page.getByRole('link', { name: '[ Cancel ]' }).click();
      await page.waitForURL((url) => url.href.startsWith(`${gate.url}/connect/result/`));
      await page.waitForLoadState('load');

      const callback = await assertGateRedirect(
        responses,
        gate.url,
        `/connect/callback/${CONNECTION}?`,
        `${gate.url}/connect/result/`,
      );
      const callbackParams = new URL(callback.hop.url()).searchParams;
      assert.equal(callbackParams.get('error'), 'access_denied', 'the provider sent access_denied');
      assert.equal(idp.tokenRequests.length, 0, 'no code to redeem after a denial');

      const finalUrl = new URL(page.url());
      assert.ok(finalUrl.pathname.startsWith('/connect/result/'), `final URL ${page.url()}`);
      assert.ok(!finalUrl.search.includes('state='), `final URL leaks state: ${page.url()}`);
      assert.ok(!finalUrl.search.includes('error'), `final URL carries the provider's error: ${page.url()}`);

      const res = await resultResponse;
      await assertSecurityHeaders(res, 'result page');

      const main = page.locator('main');
      const outcome = await main.getAttribute('data-outcome');
      assert.notEqual(outcome, 'connected', `main[data-outcome]; page:\n${await page.content()}`);
      assert.equal(outcome, 'failed', 'main[data-outcome]');
      assert.equal(await main.getAttribute('data-code'), 'access_denied', 'main[data-code]');

      const referenceEl = page.locator('[data-reference]');
      assert.equal(await referenceEl.count(), 1, `one [data-reference] element; page:\n${await page.content()}`);
      const reference = (await referenceEl.innerText()).trim();
      assert.match(reference, REFERENCE_RE, 'reference id format');

      // The provider's own words stay out of what the user reads. In
      // development mode the gate adds a "For developers" panel
      // (section.developer) that echoes error/error_description on purpose;
      // everything outside that panel must not contain the raw text.
      const userFacing = await page.evaluate(() => {
        const doc = document.documentElement.cloneNode(true);
        for (const el of doc.querySelectorAll('section.developer')) el.remove();
        return doc.outerHTML;
      });
      const at = userFacing.indexOf(ABORT_ERROR_DESCRIPTION);
      assert.ok(
        at === -1,
        `the page must not show the provider's error_description ("${ABORT_ERROR_DESCRIPTION}") to the user; found in:\n`
          + userFacing.slice(Math.max(0, at - 400), at + 200),
      );

      // The API shows the failed attempt with the same reference.
      const account = await api(gate, 'GET', `/v1/connected-accounts/${CONNECTION}/${identifier}`);
      assert.equal(account.status, 200, `GET connected account -> ${account.status} ${account.text}`);
      assert.notEqual(account.json?.status, 'ACTIVE', `account: ${account.text}`);
      assert.equal(account.json?.last_error?.code, 'access_denied', `last_error: ${account.text}`);
      assert.equal(account.json?.last_error?.reference, reference, `last_error.reference: ${account.text}`);

      await context.close();
    });
  });
});
