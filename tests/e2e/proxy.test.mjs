// End-to-end tests of callback-gate behind a reverse proxy, as production runs it: Debian's nginx terminates TLS
// with a certificate the test makes (a throwaway CA), and forwards to callback-gate over plain HTTP with Host,
// X-Forwarded-For and X-Forwarded-Proto. public_url is https, so the browser-binding cookie is a `__Host-` cookie
// and Chromium enforces what that prefix means (Secure, no Domain, path /, set over https).
//
// Chromium trusts the server certificate by its public key (--ignore-certificate-errors-spki-list with the key's
// SHA-256), not by ignoring certificate errors in general; the test's own https requests verify the certificate
// against the throwaway CA, host name included.
//
// One scenario runs two callback-gate instances on a throwaway PostgreSQL server (scripts/postgres) behind the same
// nginx, as docs/deployment.md sets them up.
//
// Run from the repository root, after `cargo build`, with nginx and postgresql installed (scripts/test installs them):
//   node --test tests/e2e/proxy.test.mjs

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import {
  api,
  CONNECTION,
  freePort,
  launchBrowser,
  leakedSecrets,
  newLoopbackContext,
  startGate,
  startIdp,
} from './harness.mjs';
import { chromiumTrusting, get, makeCertificates, startNginx } from './nginx.mjs';
import { startPostgres } from './postgres.mjs';

const SCENARIO_TIMEOUT_MS = 90_000;
/** The addresses nginx reaches callback-gate from, as production lists its proxies in [limits] trusted_proxies. */
const NGINX_PEERS = ['127.0.0.1/32', '::1/128'];

/**
 * Starts a provider, `instances` callback-gate processes on private loopback ports (several share a throwaway
 * PostgreSQL server and one secret key, as in production) with `limits` (by default: nginx's loopback addresses as
 * trusted_proxies), and nginx on `servers` (the first one is the public origin, https://localhost:{port}) in front
 * of them all; runs `fn`, and always tears everything down. On failure the
 * gates' output and nginx's logs are added to the error.
 */
async function withProxiedStack(t, { servers = [{}], limits = { trusted_proxies: NGINX_PEERS }, instances = 1 } = {}, fn) {
  const dir = await mkdtemp(path.join(tmpdir(), 'callback-gate-nginx-'));
  const ports = [];
  for (const server of servers) ports.push({ ...server, port: await freePort() });
  const publicUrl = `https://localhost:${ports[0].port}`;
  const secretKey = randomBytes(32).toString('base64');
  const gates = [];
  let postgres;
  let idp;
  let nginx;
  let browser;
  try {
    const certs = await makeCertificates(dir);
    idp = await startIdp({ redirectUri: `${publicUrl}/connect/callback/${CONNECTION}` });
    if (instances > 1) postgres = await startPostgres();
    for (let i = 0; i < instances; i++) {
      gates.push(await startGate({ port: await freePort(), issuer: idp.issuer, publicUrl, limits, secretKey, databaseUrl: postgres?.url }));
    }
    nginx = await startNginx({ dir, servers: ports, upstream: gates.map((g) => g.url), certs });
    browser = await launchBrowser(chromiumTrusting(certs));
    await fn({ idp, gate: gates[0], gates, nginx, browser, certs, ports, publicUrl });
  } catch (err) {
    if (err && typeof err === 'object' && typeof err.message === 'string') {
      for (const gate of gates) err.message += `\n--- callback-gate ${gate.url} output ---\n${gate.output()}--- end of callback-gate output ---`;
      if (nginx) err.message += `\n--- nginx access log ---\n${await nginx.accessLog()}--- nginx error log ---\n${await nginx.errorLog()}`;
    }
    throw err;
  } finally {
    await browser?.close().catch((e) => t.diagnostic(`browser close: ${e}`));
    if (nginx) t.diagnostic(`nginx exit: ${JSON.stringify(await nginx.stop())}`);
    for (const gate of gates) {
      t.diagnostic(`callback-gate ${gate.url} exit after SIGTERM: ${JSON.stringify(await gate.stop())}`);
      const leaks = leakedSecrets(gate.output());
      assert.deepEqual(leaks.map((s) => `${s.slice(0, 6)}…`), [], 'no code, state, nonce, cookie or key in the gate log');
    }
    await postgres?.stop();
    await idp?.close().catch((e) => t.diagnostic(`provider close: ${e}`));
    await rm(dir, { recursive: true, force: true });
  }
}

async function signIn(page, login) {
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any-password');
  await page.getByRole('button', { name: 'Sign-in' }).click();
}

/**
 * Mints a link for `identifier` (from `gate`) and runs the whole flow in a fresh Chromium context through the public
 * origin: start, sign in and consent at the provider, callback, and a result page saying "connected".
 * `atProvider({ context, start })` runs while the browser is at the provider, with the start's response. Returns the
 * context (the caller closes it).
 */
async function connect({ idp, gate, browser, publicUrl, identifier, atProvider = async () => {} }) {
  const minted = await api(gate, 'POST', '/v1/authorization-links', { connection: CONNECTION, identifier });
  assert.equal(minted.status, 201, `POST /v1/authorization-links -> ${minted.status} ${minted.text}`);
  const { link } = minted.json;
  assert.ok(link.startsWith(`${publicUrl}/connect/start/`), `the link is on the public https origin: ${link}`);

  const context = await newLoopbackContext(browser);
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const start = page.waitForResponse((r) => r.url().startsWith(`${publicUrl}/connect/start/`));
  await page.goto(link);
  assert.ok(page.url().startsWith(`${idp.issuer}/interaction/`), `expected the provider's sign-in page, got ${page.url()}\n${await page.content()}`);
  await atProvider({ context, start: await start });

  await signIn(page, identifier);
  await page.getByRole('heading', { name: 'Authorize' }).waitFor();
  const result = page.waitForResponse(
    (r) => r.url().startsWith(`${publicUrl}/connect/result/`) && r.request().isNavigationRequest(),
  );
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.waitForURL((url) => url.href.startsWith(`${publicUrl}/connect/result/`));
  assert.equal((await result).status(), 200, 'the result page answers 200');
  assert.equal(await page.locator('main').getAttribute('data-outcome'), 'connected', `page:\n${await page.content()}`);
  return context;
}

async function assertActive(gate, identifier) {
  const account = await api(gate, 'GET', `/v1/connected-accounts/${CONNECTION}/${identifier}`);
  assert.equal(account.status, 200, `GET connected account -> ${account.status} ${account.text}`);
  assert.equal(account.json.status, 'ACTIVE', `account: ${account.text}`);
}

describe('callback-gate behind nginx over TLS (headless Chromium)', () => {
  test('a complete flow through nginx: __Host- cookie, forwarded headers, account ACTIVE', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    await withProxiedStack(t, {}, async ({ idp, gate, nginx, browser, certs, publicUrl }) => {
      // The certificate nginx presents is valid for localhost under the throwaway CA (checked by Node's TLS, which
      // knows only that CA), so what Chromium is told to accept is a certificate that really verifies.
      const health = await get(`${publicUrl}/healthz`, { caPem: certs.caPem });
      assert.equal(health.status, 200, `GET /healthz through nginx -> ${health.status}`);
      assert.match(health.headers.server ?? '', /^nginx/, 'answered through nginx');

      const identifier = 'user_behind_nginx';
      const context = await connect({
        idp,
        gate,
        browser,
        publicUrl,
        identifier,
        atProvider: async ({ context, start }) => {
          assert.equal(start.status(), 303, 'the start redirects to the provider');
          assert.match((await start.allHeaders()).server ?? '', /^nginx/, 'the start went through nginx');
          assert.equal((await start.securityDetails())?.subjectName, 'localhost', 'over TLS with the test certificate');

          // The browser-binding cookie is a real __Host- cookie, and Chromium stored it (it refuses a __Host- cookie
          // that is not Secure, has a Domain, has another path or comes over plain http). The flow completing shows
          // Chromium sent it back with the callback.
          const cookies = await context.cookies(publicUrl);
          const binding = cookies.filter((c) => c.name.startsWith('__Host-'));
          assert.equal(binding.length, 1, `one __Host- cookie for ${publicUrl}; got ${JSON.stringify(cookies.map((c) => c.name))}`);
          assert.equal(binding[0].secure, true, 'Secure');
          assert.equal(binding[0].httpOnly, true, 'HttpOnly');
          assert.equal(binding[0].path, '/', 'path /');
          assert.equal(binding[0].domain, 'localhost', 'host-only, for the public host');
          assert.equal(binding[0].sameSite, 'Lax', 'SameSite=Lax, so the provider\'s redirect back carries it');
          assert.equal(cookies.length, 1, 'no other cookie from the gate');
        },
      });
      await context.close();
      await assertActive(gate, identifier);

      // nginx proxied the start, the callback and the result page, each with the browser's address appended to
      // X-Forwarded-For (Chromium sent none of its own).
      const lines = (await nginx.accessLog()).trim().split('\n');
      for (const [route, status] of [['/connect/start/', 303], [`/connect/callback/${CONNECTION}`, 303], ['/connect/result/', 200]]) {
        const line = lines.find((l) => l.includes(`"GET ${route}`));
        assert.ok(line, `nginx logged GET ${route}...; log:\n${lines.join('\n')}`);
        assert.match(line, new RegExp(`" ${status} upstream=127\\.0\\.0\\.1:\\d+ xff="127\\.0\\.0\\.1"$`), `proxied to the gate: ${line}`);
      }
    });
  });

  // nginx's two server blocks present two clients, as if their requests came from two addresses: the first (the
  // public origin) appends 198.51.100.8 to X-Forwarded-For, the second 198.51.100.7. callback-gate trusts loopback
  // peers, that is nginx, and allows each client two starts. The test fails if X-Forwarded-For is ignored (every
  // request would count as nginx's 127.0.0.1, and client B would be refused with client A) and if it is believed
  // blindly (a forged header would escape the limit, from a client through nginx or from an untrusted peer).
  test('rate limits count the client that the trusted proxy names in X-Forwarded-For', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    const clientA = '198.51.100.7';
    const clientB = '198.51.100.8';
    const limits = { trusted_proxies: NGINX_PEERS, starts_per_minute: 1, burst: 2 };
    await withProxiedStack(t, { servers: [{ clientAddress: clientB }, { clientAddress: clientA }], limits }, async ({ idp, gate, nginx, browser, certs, ports, publicUrl }) => {
      const viaA = `https://localhost:${ports[1].port}`;
      const start = (origin, options = {}) => get(`${origin}/connect/start/not-a-link`, { caPem: certs.caPem, ...options });

      // Client A uses up its two starts; the third is refused.
      for (const attempt of [1, 2]) {
        const res = await start(viaA);
        assert.notEqual(res.status, 429, `client A's start ${attempt} of 2 is not limited`);
      }
      const limited = await start(viaA);
      assert.equal(limited.status, 429, 'client A\'s third start is refused');
      assert.equal(limited.headers['retry-after'], '60', 'with Retry-After');

      // What client A writes in X-Forwarded-For itself changes nothing: nginx appends the address it saw, and
      // callback-gate counts the right-most address that is not a trusted proxy's.
      const forged = await start(viaA, { headers: { 'x-forwarded-for': '203.0.113.50' } });
      assert.equal(forged.status, 429, 'a forged X-Forwarded-For through nginx does not escape the limit');

      // Client B is another client: its whole flow runs, in Chromium, through the public origin.
      const context = await connect({
        idp,
        gate,
        browser,
        publicUrl,
        identifier: 'user_b',
        atProvider: async ({ start: response }) => assert.equal(response.status(), 303, 'client B\'s start is not limited'),
      });
      await context.close();
      await assertActive(gate, 'user_b');

      // Straight to callback-gate from 127.0.0.2, a peer that is not in trusted_proxies: its X-Forwarded-For naming
      // client A is not believed, so it counts as itself and is not limited.
      const untrusted = await get(`${gate.url}/connect/start/not-a-link`, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': clientA } });
      assert.notEqual(untrusted.status, 429, 'an untrusted peer\'s X-Forwarded-For is not believed');
      // From a trusted peer the same header is believed: that is client A, still over its limit.
      const trusted = await get(`${gate.url}/connect/start/not-a-link`, { localAddress: '127.0.0.1', headers: { 'x-forwarded-for': clientA } });
      assert.equal(trusted.status, 429, 'a trusted peer\'s X-Forwarded-For is believed');

      const log = await nginx.accessLog();
      assert.match(log, new RegExp(`xff="203\\.0\\.113\\.50, ${clientA.replaceAll('.', '\\.')}"`), `nginx appended client A's address to the forged header:\n${log}`);
      assert.match(log, new RegExp(`"GET /connect/callback/${CONNECTION}" 303 upstream=\\S+ xff="${clientB.replaceAll('.', '\\.')}"`), `client B's callback went through nginx:\n${log}`);
    });
  });

  // docs/deployment.md's set-up: two instances sharing one PostgreSQL database and one secret key behind nginx. The
  // instance that started the flow is stopped with SIGTERM, as in a rolling deploy, while the user is at the
  // provider; nginx sends what follows to the other instance, which finds the flow in the shared database.
  test('two instances on one PostgreSQL: the one that started the flow stops, the other finishes it', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    await withProxiedStack(t, { instances: 2 }, async ({ idp, gates, nginx, browser, publicUrl }) => {
      const portOf = (gate) => new URL(gate.url).port;
      const upstreamsOf = async (route) => {
        const line = (await nginx.accessLog()).split('\n').find((l) => l.includes(`"GET ${route}`));
        assert.ok(line, `nginx logged GET ${route}:\n${await nginx.accessLog()}`);
        return [...line.matchAll(/127\.0\.0\.1:(\d+)/g)].map((m) => m[1]);
      };
      let stopped;
      let survivor;
      const identifier = 'user_across_instances';
      const context = await connect({
        idp,
        gate: gates[0],
        browser,
        publicUrl,
        identifier,
        atProvider: async () => {
          const [port] = await upstreamsOf('/connect/start/');
          stopped = gates.find((g) => portOf(g) === port);
          survivor = gates.find((g) => g !== stopped);
          assert.ok(stopped, `the start went to one of the instances (port ${port})`);
          const exit = await stopped.stop();
          assert.deepEqual(exit, { code: 0, signal: null }, 'the instance stopped cleanly on SIGTERM');
        },
      });
      await context.close();
      await assertActive(survivor, identifier);

      const callback = await upstreamsOf(`/connect/callback/${CONNECTION}`);
      assert.equal(callback.at(-1), portOf(survivor), 'the callback was answered by the instance still running');
      // nginx tried the stopped instance for some request after it was gone and moved on to the other one.
      const retried = (await nginx.accessLog()).split('\n').filter((l) => l.includes(`upstream=127.0.0.1:${portOf(stopped)}, 127.0.0.1:${portOf(survivor)}`));
      assert.ok(retried.length >= 1, `a request was retried on the running instance:\n${await nginx.accessLog()}`);
      assert.ok(retried.every((l) => /" (200|303) /.test(l)), `and answered as usual:\n${retried.join('\n')}`);
    });
  });
});
