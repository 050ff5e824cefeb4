// Shared plumbing for the callback-gate end-to-end tests.
//
// Everything runs on loopback (127.0.0.1): an in-process OpenID provider
// (oidc-provider with its development interactions), the callback-gate binary
// as a child process, and a headless Chromium driven by playwright-core.
//
// This file is not a test file itself (node --test only picks up *.test.mjs
// here); connect.test.mjs and pages.test.mjs import it.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import Provider from 'oidc-provider';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

export const CLIENT_ID = 'callback-gate-e2e';
export const CLIENT_SECRET = 'e2e-client-secret-0123456789abcdef';
export const CONNECTION = 'idp';
// What the dev interactions' abort endpoint sends back with access_denied.
export const ABORT_ERROR_DESCRIPTION = 'End-User aborted interaction';

export const GATE_BIN = process.env.E2E_GATE_BIN
  ? path.resolve(process.env.E2E_GATE_BIN)
  : path.resolve(here, '../../target/debug/callback-gate');

/**
 * Every secret a scenario used (keys, codes, states, nonces, cookies, link tokens): none may appear in the gate's
 * log. Values shorter than 8 characters are ignored, since they would match by chance.
 */
export const usedSecrets = new Set();

export function leakedSecrets(log) {
  return [...usedSecrets].filter((secret) => secret.length >= 8 && log.includes(secret));
}

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** A free TCP port on 127.0.0.1 (bind to 0, read it, close). */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

// ---------------------------------------------------------------------------
// OpenID provider
// ---------------------------------------------------------------------------

/**
 * Starts oidc-provider on a free loopback port with one confidential client
 * whose redirect URI points at the gate's callback for connection "idp".
 *
 * Returns { issuer, port, provider, authRequests, tokenRequests, close() }.
 * authRequests records the query of every /auth request so the test can check
 * what the gate sent (PKCE S256, state, scopes).
 */
export async function startIdp({ redirectUri }) {
  const authRequests = [];
  const tokenRequests = [];

  // Listen first so the issuer (which must contain the port) is known before
  // the provider is constructed; the provider's handler is attached below.
  const httpServer = http.createServer();
  httpServer.listen(0, '127.0.0.1');
  await once(httpServer, 'listening');
  const { port } = httpServer.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: `${sub}@idp.example.test`,
            email_verified: true,
            name: `E2E ${sub}`,
            preferred_username: sub,
          };
        },
      };
    },
    // Make the gate prove it does PKCE: without a code_challenge the provider
    // answers invalid_request. oidc-provider v9 only supports S256.
    pkce: { required: () => true },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: true },
    },
    // Keep the logs quiet-ish and the flow simple.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 86400,
    },
  });

  // Record what reaches the provider (before oidc-provider's own handling).
  provider.use(async (ctx, next) => {
    if (ctx.path === '/auth') authRequests.push({ ...ctx.query });
    if (ctx.path === '/token') {
      tokenRequests.push({ authorization: ctx.get('authorization') || null });
    }
    await next();
  });

  httpServer.on('request', provider.callback());

  return {
    issuer,
    port,
    provider,
    authRequests,
    tokenRequests,
    async close() {
      httpServer.closeAllConnections?.();
      await new Promise((resolve) => httpServer.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------
// callback-gate child process
// ---------------------------------------------------------------------------

/** A TOML value: strings quoted (JSON escaping is valid TOML), numbers and booleans as they are. */
function tomlValue(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(', ')}]`;
  throw new Error(`no TOML form for ${JSON.stringify(value)}`);
}

function tomlLines(table) {
  return Object.entries(table)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key} = ${tomlValue(value)}\n`)
    .join('');
}

/**
 * Writes a config file for the gate and starts `callback-gate serve`.
 * Returns { url, publicUrl, apiKey, dir, secretKey, configPath, output(), stop() } once GET /readyz answers 200.
 * `url` is where the gate listens; `publicUrl` the origin browsers use (the same unless a proxy is in front).
 *
 * Options beyond { port, issuer } (all optional; the defaults are what connect.test.mjs runs with):
 * - publicUrl: public_url, when a reverse proxy in front of the gate is what browsers reach (default: the gate's own
 *   http://127.0.0.1:{port}); the app's return URL and allowed origin follow it.
 * - connection: the connection's name (default "idp").
 * - appName: [app] name (default "E2E App").
 * - settings: extra top-level keys, e.g. { developer_hints: false, link_ttl_seconds: 1 }.
 * - support: the [support] table (default { email: "support@example.test" }).
 * - limits: a [limits] table, e.g. { callbacks_per_minute: 1, burst: 1 }.
 * - databaseUrl: database_url (default: sqlite://{dir}/gate.db), e.g. a PostgreSQL server several gates share.
 * - dir: reuse this folder (its gate.db) instead of a fresh one, e.g. to restart a gate on the same database.
 * - keepDir: leave the folder in place on stop() (the caller removes it).
 * - secretKey: CALLBACK_GATE_SECRET_KEY (default: a fresh random key).
 */
export async function startGate({
  port,
  issuer,
  publicUrl,
  databaseUrl,
  connection = CONNECTION,
  appName = 'E2E App',
  settings = {},
  support = { email: 'support@example.test' },
  limits,
  dir: reuseDir,
  keepDir = false,
  secretKey = randomBytes(32).toString('base64'),
  extraConnections = '',
}) {
  if (!existsSync(GATE_BIN)) {
    throw new Error(`callback-gate binary not found at ${GATE_BIN} (build it with cargo build, or set E2E_GATE_BIN)`);
  }
  const dir = reuseDir ?? await mkdtemp(path.join(tmpdir(), 'callback-gate-e2e-'));
  const removeDir = async () => {
    if (!keepDir) await rm(dir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  const origin = publicUrl ?? url;
  const configPath = path.join(dir, 'gate.toml');
  const dbPath = path.join(dir, 'gate.db');
  const config = `public_url = "${origin}"
listen = "127.0.0.1:${port}"
mode = "development"
database_url = "${databaseUrl ?? `sqlite://${dbPath}`}"
${tomlLines(settings)}
[app]
name = ${tomlValue(appName)}
return_url = "${origin}/"
allowed_return_origins = ["${origin}"]

[support]
${tomlLines(support)}${limits ? `\n[limits]\n${tomlLines(limits)}` : ''}
[[connections]]
name = "${connection}"
provider = "oidc"
issuer = "${issuer}"
client_id = "${CLIENT_ID}"
client_secret_env = "E2E_CLIENT_SECRET"
scopes = ["openid", "email", "profile"]
${extraConnections}`;
  await writeFile(configPath, config);

  const apiKey = `e2e_${randomBytes(24).toString('hex')}`;
  usedSecrets.add(apiKey);
  usedSecrets.add(secretKey);
  usedSecrets.add(CLIENT_SECRET);
  const env = {
    ...process.env,
    CALLBACK_GATE_SECRET_KEY: secretKey,
    CALLBACK_GATE_API_KEYS: apiKey,
    E2E_CLIENT_SECRET: CLIENT_SECRET,
    CALLBACK_GATE_LOG_FORMAT: 'json',
  };

  const chunks = [];
  const child = spawn(GATE_BIN, ['serve', '--config', configPath], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => chunks.push(d));
  child.stderr.on('data', (d) => chunks.push(d));
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (err) => {
      exited = { error: err };
      resolve(exited);
    });
  });

  const output = () => Buffer.concat(chunks).toString('utf8');

  const stop = async () => {
    if (exited === null) {
      child.kill('SIGTERM');
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exitPromise;
      clearTimeout(killTimer);
    }
    await removeDir();
    return exited;
  };

  // Wait for readiness (up to 15 s).
  const deadline = Date.now() + 15_000;
  let lastError = null;
  for (;;) {
    if (exited !== null) {
      const out = output();
      await removeDir();
      throw new Error(`callback-gate exited before becoming ready: ${JSON.stringify(exited)}\n--- config ---\n${config}--- output ---\n${out}`);
    }
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) break;
      lastError = `GET /readyz -> ${res.status} ${await res.text()}`;
    } catch (err) {
      lastError = String(err?.cause?.code ?? err);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`callback-gate not ready after 15 s (last: ${lastError})\n--- output ---\n${output()}`);
    }
    await sleep(100);
  }

  return { url, publicUrl: origin, apiKey, dir, secretKey, configPath, output, stop, child };
}

/** A /v1 call made straight to the gate, as the app's backend on the private network would. */
export async function api(gate, method, route, body) {
  const res = await fetch(`${gate.url}${route}`, {
    method,
    headers: {
      authorization: `Bearer ${gate.apiKey}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, text, json: text ? JSON.parse(text) : undefined };
}

// ---------------------------------------------------------------------------
// callback-gate demo child process
// ---------------------------------------------------------------------------

/**
 * Starts `callback-gate demo --port 0` and waits (up to 15 s) for the line
 * `Open:      http://127.0.0.1:PORT/` it prints when ready.
 * Returns { url, output(), stop() }; url has no trailing slash.
 */
export async function startDemo() {
  if (!existsSync(GATE_BIN)) {
    throw new Error(`callback-gate binary not found at ${GATE_BIN} (build it with cargo build, or set E2E_GATE_BIN)`);
  }
  const chunks = [];
  const child = spawn(GATE_BIN, ['demo', '--port', '0'], {
    env: { ...process.env, CALLBACK_GATE_LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve((exited = { code, signal })));
    child.on('error', (error) => resolve((exited = { error })));
  });
  const output = () => Buffer.concat(chunks).toString('utf8');
  const stop = async () => {
    if (exited === null) {
      child.kill('SIGTERM');
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exitPromise;
      clearTimeout(killTimer);
    }
    return exited;
  };
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`callback-gate demo printed no Open: line in 15 s\n${output()}`)), 15_000);
    const look = (d) => {
      chunks.push(d);
      const match = output().match(/Open:\s+(http:\/\/127\.0\.0\.1:\d+)\//);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on('data', look);
    child.stderr.on('data', (d) => chunks.push(d));
    exitPromise.then((how) => {
      clearTimeout(timer);
      reject(new Error(`callback-gate demo exited before it was ready: ${JSON.stringify(how)}\n${output()}`));
    });
  });
  try {
    const url = await ready;
    return { url, output, stop, child };
  } catch (err) {
    await stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Browser
// ---------------------------------------------------------------------------

/** Headless Chromium; `extraArgs` are added to its command line (e.g. a certificate to trust). */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      ...extraArgs,
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A fresh browser context that may only talk to loopback: anything else
 * (e.g. the web font the provider's dev pages @import) is aborted at once so
 * nothing waits on a network that is not there. `options` go to
 * browser.newContext (viewport, colorScheme, javaScriptEnabled, bypassCSP, ...).
 */
export async function newLoopbackContext(browser, options = {}) {
  const context = await browser.newContext(options);
  // Remember every secret the browser carries, so the gate's log can be checked for them.
  context.on('request', (request) => {
    const url = new URL(request.url());
    for (const key of ['code', 'state', 'nonce', 'code_challenge', 'iss_token']) {
      const value = url.searchParams.get(key);
      if (value) usedSecrets.add(value);
    }
    const link = url.pathname.match(/^\/connect\/start\/(.+)$/);
    if (link) usedSecrets.add(link[1]);
  });
  context.on('response', async (response) => {
    const cookie = await response.headerValue('set-cookie').catch(() => null);
    for (const line of (cookie || '').split('\n')) {
      const value = line.split(';')[0].split('=').slice(1).join('=');
      if (value) usedSecrets.add(value);
    }
  });
  await context.route('**/*', (route) => {
    const { hostname } = new URL(route.request().url());
    if (hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]') {
      return route.continue();
    }
    return route.abort('blockedbyclient');
  });
  return context;
}
