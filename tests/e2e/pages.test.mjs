// Real-browser checks of every page callback-gate shows an end user: the success page, one failure page per outcome
// class, the start-error pages, the notices and the demo's pages, each reached through the real service.
//
// For each page, in headless Chromium:
//   - it renders with its CSP enforced (no CSP violation in the console, nothing fails to load), with one h1 and
//     its actions, and no script at all;
//   - axe-core finds no violation (WCAG 2.0/2.1/2.2 A and AA rules and best practices) in light and dark, at 375
//     and 1280 px wide;
//   - from a fresh load, the first Tab reaches the primary action, every focus stop shows a visible focus
//     indicator with at least 3:1 contrast, and Enter on the primary action goes where its href (or form) says;
//   - no horizontal scroll and nothing spilling out of the card at 320 px (1280 px at 400%), at 640 px (1280 px
//     at 200% zoom) and with WCAG 1.4.12 text spacing, <details> opened; nothing animates with reduced motion;
//   - with JavaScript disabled it shows the same h1 and actions.
//
// Screenshots (full page, 375 and 1280 px, light and dark) are written to docs/screenshots/ only with
// UPDATE_SCREENSHOTS=1. Run from the repository root, after `cargo build`:
//   (cd tests/e2e && npm ci) && UPDATE_SCREENSHOTS=1 node --test tests/e2e/pages.test.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import {
  freePort,
  launchBrowser,
  leakedSecrets,
  newLoopbackContext,
  startDemo,
  startGate,
  startIdp,
  usedSecrets,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

const UPDATE_SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === '1';
const SCREENSHOT_DIR = path.resolve(here, '../../docs/screenshots');

/** The connection's name: it shows on the success page ("Your corp-sso account is now connected..."). */
const CONNECTION = 'corp-sso';
const APP_NAME = 'Acme Agents';
const SUPPORT = { email: 'support@example.com', status_page_url: 'https://status.example.com' };
/** What end users see in production: no developer panel. */
const USER_SETTINGS = { developer_hints: false };
/** The shared gate must not rate-limit the suite's own reloads of callback and start URLs. */
const GENEROUS_LIMITS = { starts_per_minute: 10_000, callbacks_per_minute: 10_000, burst: 10_000 };

const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];
const SCHEMES = ['light', 'dark'];
const VIEWPORTS = [
  { width: 375, height: 812 },
  { width: 1280, height: 800 },
];
const PAGE_TIMEOUT_MS = 45_000;
const CHECK_TIMEOUT_MS = 20_000;
const SETUP_TIMEOUT_MS = 60_000;
/** WCAG 1.4.11: a focus indicator is a user-interface component and needs 3:1 against what is next to it. */
const FOCUS_CONTRAST = 3;

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([type="hidden"]):not([disabled]), select, textarea, '
  + 'summary, [tabindex]:not([tabindex="-1"])';

let axeSource;
let idp;
let gate;
let demo;
let browser;
/** Gates started by single tests, stopped in their own finally; listed here for the log check in after(). */
const finishedGateLogs = [];

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

async function startUserGate(options = {}) {
  return startGate({
    port: options.port ?? await freePort(),
    issuer: idp.issuer,
    connection: CONNECTION,
    appName: APP_NAME,
    support: SUPPORT,
    limits: GENEROUS_LIMITS,
    ...options,
    settings: { ...USER_SETTINGS, ...options.settings },
  });
}

/** Runs fn with a gate started for one test; stops it and keeps its log for the secret check. */
async function withGate(t, options, fn) {
  const own = await startUserGate(options);
  try {
    return await fn(own);
  } catch (err) {
    appendOutput(err, own);
    throw err;
  } finally {
    const exit = await own.stop();
    t.diagnostic(`gate on ${own.url} exit after SIGTERM: ${JSON.stringify(exit)}`);
    finishedGateLogs.push({ url: own.url, log: own.output() });
  }
}

/** Overwrites every flow's sealed secrets in the gate's SQLite database, through Python's sqlite3 module. */
function damageSealedFlowSecrets(dbPath) {
  const script = 'import sqlite3, sys\n'
    + 'db = sqlite3.connect(sys.argv[1], timeout=5)\n'
    + 'db.execute("UPDATE flows SET sealed_secrets = x\'00\'")\n'
    + 'db.commit()\n';
  execFileSync('python3', ['-c', script, dbPath]);
}

function appendOutput(err, which) {
  if (err && typeof err === 'object' && typeof err.message === 'string' && !err.message.includes('--- callback-gate output')) {
    err.message += `\n--- callback-gate output (${which.url}, last 6000 characters) ---\n${which.output().slice(-6000)}`
      + '--- end of callback-gate output ---';
  }
}

async function mintLink(which, identifier) {
  const res = await fetch(`${which.url}/v1/authorization-links`, {
    method: 'POST',
    headers: { authorization: `Bearer ${which.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection: CONNECTION, identifier }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  assert.equal(res.status, 201, `POST /v1/authorization-links -> ${res.status} ${text}`);
  return JSON.parse(text).link;
}

async function newPage(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.setDefaultNavigationTimeout(15_000);
  return page;
}

/**
 * Opens a link in a new context: the gate starts a flow and sends the browser to the provider, whose middleware
 * records the authorization request. The test reads the `state` the gate sent from that record (for gates whose
 * redirect URI the provider does not know, the provider shows an error page: the browser goes no further).
 */
async function startRecordedFlow(which, link) {
  const context = await newLoopbackContext(browser);
  const page = await newPage(context);
  const redirectUri = `${which.url}/connect/callback/${CONNECTION}`;
  const before = idp.authRequests.length;
  await page.goto(link);
  const authorization = idp.authRequests.slice(before).findLast((query) => query.redirect_uri === redirectUri);
  assert.ok(authorization?.state, `no authorization request from ${which.url} reached the provider; at ${page.url()}`);
  return { context, page, state: authorization.state };
}

/** Navigates the flow's browser to the gate's callback with `params` and the flow's state and the issuer. */
async function arriveAtCallback(which, flow, params) {
  const query = new URLSearchParams({ ...params, state: flow.state, iss: idp.issuer });
  await flow.page.goto(`${which.url}/connect/callback/${CONNECTION}?${query}`);
  assert.ok(
    new URL(flow.page.url()).pathname.startsWith('/connect/result/'),
    `expected the result page after the callback, got ${flow.page.url()}`,
  );
  return { url: flow.page.url(), storageState: await flow.context.storageState() };
}

/** A failure page reached by a crafted callback on the shared gate: the provider "said" `error`. */
async function callbackErrorPage(error, description) {
  const link = await mintLink(gate, `user_${error}`);
  const flow = await startRecordedFlow(gate, link);
  try {
    return await arriveAtCallback(gate, flow, { error, error_description: description });
  } finally {
    await flow.context.close();
  }
}

/** Sign in (and consent, or cancel) at the real provider. */
async function throughProvider(identifier, decision) {
  const link = await mintLink(gate, identifier);
  const context = await newLoopbackContext(browser);
  try {
    const page = await newPage(context);
    await page.goto(link);
    assert.ok(page.url().startsWith(`${idp.issuer}/interaction/`), `expected the provider's page, got ${page.url()}`);
    if (decision === 'approve') {
      await page.locator('input[name="login"]').fill(identifier);
      await page.locator('input[name="password"]').fill('any-password');
      await page.getByRole('button', { name: 'Sign-in' }).click();
      await page.getByRole('heading', { name: 'Authorize' }).waitFor();
      await page.getByRole('button', { name: 'Continue' }).click();
    } else {
      await page.getByRole('link', { name: '[ Cancel ]' }).click();
    }
    await page.waitForURL((url) => url.href.startsWith(`${gate.url}/connect/result/`));
    return { url: page.url(), storageState: await context.storageState() };
  } finally {
    await context.close();
  }
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/**
 * A page to check:
 *   name      screenshot file prefix (failure-access_denied, success, ...)
 *   url       reloaded by every check
 *   storageState  cookies the page needs (the browser-binding cookie of result pages)
 *   status    expected HTTP status
 *   outcome   expected main[data-outcome] (connected, failed, notice), or undefined
 *   code, cls expected main[data-code] and main[data-class] on failure pages
 *   primary   selector of the primary action, or null when the page offers none
 *   firstFocus  on a form, the field the first Tab reaches instead of the primary action
 */
async function checkPage(t, target) {
  const contextOptions = (extra = {}) => ({ storageState: target.storageState, ...extra });
  let actionCount = 0;
  let heading = '';

  await t.test(`${target.name}: renders with its CSP enforced: one h1, its actions, no script`, { timeout: CHECK_TIMEOUT_MS }, async () => {
    const context = await newLoopbackContext(browser, contextOptions({ viewport: VIEWPORTS[1] }));
    try {
      const page = await newPage(context);
      const consoleProblems = [];
      page.on('console', (message) => {
        // (Chromium also logs the page's own 4xx/5xx status as an error: that is the page under test, not a fault.)
        if (/Content Security Policy|Refused to/i.test(message.text())) {
          consoleProblems.push(`${message.type()}: ${message.text()}`);
        }
      });
      page.on('pageerror', (err) => consoleProblems.push(`pageerror: ${err}`));
      const failedLoads = [];
      page.on('requestfailed', (request) => failedLoads.push(`${request.url()}: ${request.failure()?.errorText}`));
      page.on('response', (response) => {
        if (response.request().resourceType() !== 'document' && response.status() >= 400) {
          failedLoads.push(`${response.url()}: HTTP ${response.status()}`);
        }
      });

      const response = await page.goto(target.url);
      assert.equal(response.status(), target.status, `${target.url} answered ${response.status()}`);
      const csp = (await response.allHeaders())['content-security-policy'] ?? '';
      assert.match(csp, /default-src 'none'/, `content-security-policy is "${csp}"`);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `content-security-policy is "${csp}"`);
      await page.waitForLoadState('load');

      const facts = await page.evaluate(() => ({
        lang: document.documentElement.lang,
        title: document.title,
        h1: [...document.querySelectorAll('h1')].map((h) => h.innerText.trim()),
        mains: document.querySelectorAll('main').length,
        scripts: document.scripts.length,
        inlineHandlers: [...document.querySelectorAll('*')].filter((el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length,
        stylesheets: [...document.styleSheets].filter((s) => s.cssRules.length > 0).length,
        outcome: document.querySelector('main')?.dataset.outcome,
        code: document.querySelector('main')?.dataset.code,
        cls: document.querySelector('main')?.dataset.class,
        actions: [...document.querySelectorAll('.actions a, .actions button')].filter((el) => el.checkVisibility()).length,
      }));
      assert.ok(facts.lang, 'html[lang] is set');
      assert.ok(facts.title, 'the page has a title');
      assert.equal(facts.h1.length, 1, `exactly one h1, got ${JSON.stringify(facts.h1)}`);
      assert.ok(facts.h1[0], 'the h1 has text');
      assert.equal(facts.mains, 1, 'one main landmark');
      assert.equal(facts.scripts, 0, 'no script element');
      assert.equal(facts.inlineHandlers, 0, 'no inline event handler');
      assert.ok(facts.stylesheets >= 1, 'the stylesheet loaded under the CSP');
      if (target.outcome) assert.equal(facts.outcome, target.outcome, 'main[data-outcome]');
      if (target.code) assert.equal(facts.code, target.code, 'main[data-code]');
      if (target.cls) assert.equal(facts.cls, target.cls, 'main[data-class]');
      if (target.primary) {
        assert.ok(await page.locator(target.primary).first().isVisible(), `the primary action ${target.primary} is visible`);
        assert.ok(facts.actions >= 1, 'at least one action');
      } else {
        assert.equal(facts.actions, 0, 'this page offers no action');
        t.diagnostic(`${target.name}: offers no action (no way back to the app)`);
      }
      actionCount = facts.actions;
      heading = facts.h1[0];
      assert.deepEqual(consoleProblems, [], 'no CSP violation or error in the console');
      assert.deepEqual(failedLoads, [], 'every subresource loaded');
    } finally {
      await context.close();
    }
  });

  await t.test(`${target.name}: axe-core finds no violation (light, dark; 375, 1280 px)`, { timeout: CHECK_TIMEOUT_MS }, async () => {
    // Playwright injects axe with a script tag, which the page's CSP (rightly) forbids: bypass it for this check.
    const context = await newLoopbackContext(browser, contextOptions({ bypassCSP: true, viewport: VIEWPORTS[0] }));
    try {
      const page = await newPage(context);
      await page.goto(target.url);
      await page.waitForLoadState('load');
      await page.addScriptTag({ content: axeSource });
      const violations = [];
      // What axe could not decide (e.g. contrast over a gradient) is listed, not failed: a person checks it.
      const incomplete = new Set();
      const backgrounds = {};
      for (const colorScheme of SCHEMES) {
        await page.emulateMedia({ colorScheme });
        backgrounds[colorScheme] = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        for (const viewport of VIEWPORTS) {
          await page.setViewportSize(viewport);
          if (UPDATE_SCREENSHOTS) {
            await page.screenshot({
              path: path.join(SCREENSHOT_DIR, `${target.name}-${viewport.width}-${colorScheme}.png`),
              fullPage: true,
              animations: 'disabled',
            });
          }
          const result = await page.evaluate(
            (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags } }),
            AXE_TAGS,
          );
          for (const item of result.incomplete) {
            for (const node of item.nodes) {
              const why = [...node.any, ...node.all, ...node.none].map((check) => check.message).filter(Boolean).join(' ');
              incomplete.add(`${item.id} on ${node.target.join(' ')} ${node.html} (${why})`);
            }
          }
          for (const violation of result.violations) {
            for (const node of violation.nodes) {
              violations.push(
                `[${colorScheme}, ${viewport.width} px] ${violation.id} (${violation.impact}): ${violation.help}\n`
                  + `    target: ${node.target.join(' ')}\n    html:   ${node.html}\n`
                  + `    ${(node.failureSummary ?? '').replace(/\n/g, '\n    ')}`,
              );
            }
          }
        }
      }
      if (incomplete.size) t.diagnostic(`${target.name}: axe needs review (not failed): ${[...incomplete].join('; ')}`);
      assert.notEqual(backgrounds.light, backgrounds.dark, 'prefers-color-scheme: dark changes the page');
      assert.equal(violations.length, 0, `axe-core violations on ${target.name} (${target.url}):\n${violations.join('\n')}`);
    } finally {
      await context.close();
    }
  });

  await t.test(`${target.name}: keyboard path to the primary action, visible focus`, { timeout: CHECK_TIMEOUT_MS }, async () => {
    const context = await newLoopbackContext(browser, contextOptions({ viewport: VIEWPORTS[0] }));
    try {
      const page = await newPage(context);
      const problems = [];
      for (const colorScheme of SCHEMES) {
        await page.emulateMedia({ colorScheme });
        await page.goto(target.url);
        await page.waitForLoadState('load');
        const stops = await page.evaluate(
          (selector) => [...document.querySelectorAll(selector)].filter((el) => el.checkVisibility()).length,
          FOCUSABLE,
        );
        if (!target.primary) {
          assert.equal(stops, 0, 'a page without actions has nothing to focus');
          continue;
        }
        for (let stop = 0; stop < stops; stop += 1) {
          await page.keyboard.press('Tab');
          // A form's first stop is its first field: what must be filled before the primary action can do anything.
          const first = stop === 0 && target.firstFocus ? target.firstFocus : target.primary;
          const focus = await page.evaluate(focusFacts, { primary: first, focusable: FOCUSABLE });
          if (stop === 0) {
            t.diagnostic(`${target.name} [${colorScheme}]: first Tab -> ${focus.html}; outline ${focus.outline} ${focus.outlineColor}`
              + ` on ${focus.background} (${focus.contrast?.toFixed(2) ?? '?'}:1)`);
          }
          if (stop === 0 && !focus.isPrimary) {
            problems.push(`[${colorScheme}] the first Tab focuses ${focus.html}, not ${first}`);
          }
          if (focus.domIndex !== stop) {
            problems.push(`[${colorScheme}] Tab ${stop + 1} focuses ${focus.html}, which is focusable element ${focus.domIndex + 1} in the DOM`);
          }
          if (!focus.indicator) {
            problems.push(`[${colorScheme}] no visible focus indicator on ${focus.html} (outline ${focus.outline}, box-shadow ${focus.boxShadow})`);
          } else if (focus.contrast !== null && focus.contrast < FOCUS_CONTRAST) {
            problems.push(`[${colorScheme}] the focus indicator on ${focus.html} (${focus.outlineColor}) has ${focus.contrast.toFixed(2)}:1 against ${focus.background}; needs ${FOCUS_CONTRAST}:1`);
          }
          if (!focus.inViewport) {
            problems.push(`[${colorScheme}] ${focus.html} is focused but not inside the viewport: ${JSON.stringify(focus.rect)}`);
          }
        }
      }
      if (target.primary && !target.firstFocus) {
        // Enter on the primary action, from a fresh load: the browser goes where the action says. The request is
        // answered here, so nothing (a new flow, a connection) happens at the service.
        await page.emulateMedia({ colorScheme: 'light' });
        await page.goto(target.url);
        await page.waitForLoadState('load');
        await page.keyboard.press('Tab');
        const focus = await page.evaluate(focusFacts, { primary: target.primary, focusable: FOCUSABLE });
        if (focus.isPrimary) {
          const expected = focus.kind === 'link' ? focus.href : focus.formAction;
          await page.route((url) => url.href === expected, (route) => route.fulfill({
            status: 200,
            contentType: 'text/html',
            body: '<!doctype html><title>followed</title>',
          }));
          const [request] = await Promise.all([
            page.waitForRequest((r) => r.isNavigationRequest() && r.frame() === page.mainFrame(), { timeout: 5_000 }),
            page.keyboard.press('Enter'),
          ]);
          if (request.url() !== expected) {
            problems.push(`Enter on ${focus.html} went to ${request.url()}, not ${expected}`);
          }
          if (focus.kind === 'submit') {
            const body = new URLSearchParams(request.postData() ?? '');
            if (request.method() !== focus.formMethod.toUpperCase()) {
              problems.push(`Enter on ${focus.html} sent ${request.method()}, not ${focus.formMethod}`);
            }
            if (focus.name && body.get(focus.name) !== focus.value) {
              problems.push(`Enter on ${focus.html} did not submit ${focus.name}=${focus.value} (sent ${request.postData()})`);
            }
          }
          await page.waitForURL(expected);
        }
      }
      assert.deepEqual(problems, [], `keyboard problems on ${target.name} (${target.url}):\n${problems.join('\n')}`);
    } finally {
      await context.close();
    }
  });

  await t.test(`${target.name}: reflows at 320 px, at 200% zoom and with text spacing; no motion`, { timeout: CHECK_TIMEOUT_MS }, async () => {
    const context = await newLoopbackContext(browser, contextOptions({ bypassCSP: true, viewport: { width: 320, height: 480 } }));
    try {
      const page = await newPage(context);
      const problems = [];
      // 320 px is WCAG 1.4.10's reflow width (1280 px at 400%); 640 px is a 1280 px window at 200% zoom.
      const cases = [
        { label: '320 px', viewport: { width: 320, height: 480 } },
        { label: '200% zoom (1280 px window, 640 CSS px)', viewport: { width: 640, height: 400 } },
        { label: '1.4.12 text spacing at 320 px', viewport: { width: 320, height: 480 }, textSpacing: true },
      ];
      // Light only: the dark scheme changes colours, not layout (axe and the keyboard check cover both).
      for (const { label, viewport, textSpacing } of cases) {
        for (const colorScheme of ['light']) {
          await page.setViewportSize(viewport);
          await page.emulateMedia({ colorScheme });
          await page.goto(target.url);
          await page.waitForLoadState('load');
          if (textSpacing) {
            await page.addStyleTag({
              content: '* { line-height: 1.5 !important; letter-spacing: .12em !important; word-spacing: .16em !important; }'
                + ' p { margin-bottom: 2em !important; }',
            });
          }
          const overflow = await page.evaluate(reflowFacts, target.primary);
          if (overflow.scrollWidth > overflow.width) {
            problems.push(`[${label}, ${colorScheme}] horizontal scroll: scrollWidth ${overflow.scrollWidth} > ${overflow.width}`);
          }
          for (const element of overflow.outside) {
            problems.push(`[${label}, ${colorScheme}] ${element} sticks out of the viewport`);
          }
          for (const element of overflow.spilled) {
            problems.push(`[${label}, ${colorScheme}] ${element} spills out of the card`);
          }
          if (overflow.clipped.length) {
            problems.push(`[${label}, ${colorScheme}] text clipped in ${overflow.clipped.join(', ')}`);
          }
          if (target.primary && !overflow.primaryInside) {
            problems.push(`[${label}, ${colorScheme}] the primary action is not fully inside the viewport's width`);
          }
        }
      }
      // prefers-reduced-motion: nothing animates or transitions.
      await page.setViewportSize(VIEWPORTS[0]);
      await page.emulateMedia({ reducedMotion: 'reduce', colorScheme: 'light' });
      await page.goto(target.url);
      const motion = await page.evaluate(() => ({
        matches: window.matchMedia('(prefers-reduced-motion: reduce)').matches,
        moving: [...document.querySelectorAll('*')]
          .map((el) => ({ el, style: getComputedStyle(el) }))
          .filter(({ style }) => style.animationName !== 'none'
            || style.transitionDuration.split(',').some((d) => parseFloat(d) > 0))
          .map(({ el }) => el.outerHTML.slice(0, 120)),
      }));
      assert.ok(motion.matches, 'reducedMotion: reduce is emulated');
      if (motion.moving.length) problems.push(`animated with reduced motion: ${motion.moving.join(', ')}`);
      assert.deepEqual(problems, [], `reflow and motion problems on ${target.name} (${target.url}):\n${problems.join('\n')}`);
    } finally {
      await context.close();
    }
  });

  await t.test(`${target.name}: works with JavaScript disabled`, { timeout: CHECK_TIMEOUT_MS }, async () => {
    const context = await newLoopbackContext(browser, contextOptions({ javaScriptEnabled: false, viewport: VIEWPORTS[0] }));
    try {
      const page = await newPage(context);
      const response = await page.goto(target.url);
      assert.equal(response.status(), target.status, `${target.url} answered ${response.status()}`);
      const h1 = page.locator('h1');
      assert.ok(await h1.isVisible(), 'the h1 is shown');
      if (heading) assert.equal((await h1.innerText()).trim(), heading, 'the same h1 as with JavaScript');
      const actions = page.locator('.actions a:visible, .actions button:visible');
      assert.equal(await actions.count(), actionCount, 'the same actions as with JavaScript');
      if (target.primary) assert.ok(await page.locator(target.primary).first().isVisible(), 'the primary action is shown');
    } finally {
      await context.close();
    }
  });
}

/** Runs in the page: what the focused element is and how its focus shows. */
function focusFacts({ primary, focusable }) {
  const el = document.activeElement;
  const parse = (color) => {
    const m = color.match(/rgba?\(([\d.]+),?\s*([\d.]+),?\s*([\d.]+)(?:\s*[,/]\s*([\d.]+%?))?\)/);
    if (!m) return null;
    const alpha = m[4] === undefined ? 1 : m[4].endsWith('%') ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
    return { rgb: [m[1], m[2], m[3]].map(Number), alpha };
  };
  const luminance = ([r, g, b]) => {
    const lin = (c) => {
      const s = c / 255;
      return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  // The colour behind the outline: the first opaque background among the element's ancestors.
  let background = null;
  for (let node = el.parentElement; node; node = node.parentElement) {
    const color = parse(getComputedStyle(node).backgroundColor);
    if (color && color.alpha === 1) {
      background = color;
      break;
    }
  }
  const style = getComputedStyle(el);
  const outlineShown = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
  const outlineColor = parse(style.outlineColor);
  let contrast = null;
  if (outlineShown && outlineColor && background) {
    const [a, b] = [luminance(outlineColor.rgb), luminance(background.rgb)];
    contrast = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  const rect = el.getBoundingClientRect();
  const all = [...document.querySelectorAll(focusable)].filter((e) => e.checkVisibility());
  const kind = el.tagName === 'A' ? 'link' : el.tagName === 'BUTTON' && el.type === 'submit' && el.form ? 'submit' : 'other';
  return {
    html: el === document.body ? '<body>' : el.outerHTML.replace(/\s+/g, ' ').slice(0, 160),
    isPrimary: el !== document.body && el.matches(primary),
    domIndex: all.indexOf(el),
    kind,
    href: el.href ?? null,
    // (formAction reflects the document's URL when the button has no formaction attribute.)
    formAction: el.form ? (el.hasAttribute('formaction') ? el.formAction : el.form.action) : null,
    formMethod: el.form ? (el.getAttribute('formmethod') || el.form.method) : null,
    name: el.name ?? null,
    value: el.value ?? null,
    indicator: outlineShown || style.boxShadow !== 'none',
    outline: `${style.outlineStyle} ${style.outlineWidth}`,
    outlineColor: style.outlineColor,
    boxShadow: style.boxShadow,
    background: background ? `rgb(${background.rgb.join(', ')})` : 'unknown',
    contrast,
    rect: { left: rect.left, top: rect.top, right: rect.right, bottom: rect.bottom },
    inViewport: rect.top >= 0 && rect.left >= 0 && rect.bottom <= window.innerHeight && rect.right <= window.innerWidth,
  };
}

/**
 * Runs in the page: whether anything is wider than the viewport, or spills out of the card's content box. Closed
 * <details> are opened first: what a user can reveal must reflow too.
 */
function reflowFacts(primary) {
  for (const details of document.querySelectorAll('details')) details.open = true;
  const width = document.documentElement.clientWidth;
  const describe = (el) => el.outerHTML.replace(/\s+/g, ' ').slice(0, 120);
  const outside = [];
  const spilled = [];
  const clipped = [];
  const card = document.querySelector('main');
  let content = null;
  if (card) {
    const box = card.getBoundingClientRect();
    const style = getComputedStyle(card);
    content = {
      left: box.left + parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft),
      right: box.right - parseFloat(style.borderRightWidth) - parseFloat(style.paddingRight),
    };
  }
  for (const el of document.querySelectorAll('body *')) {
    if (!el.checkVisibility()) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width > 0 && (rect.right > width + 0.5 || rect.left < -0.5)) outside.push(describe(el));
    else if (content && el !== card && card.contains(el) && rect.width > 0
      && (rect.right > content.right + 0.5 || rect.left < content.left - 0.5)) {
      spilled.push(`${describe(el)} (${Math.round(rect.left)}..${Math.round(rect.right)} px; the card's content is ${Math.round(content.left)}..${Math.round(content.right)} px)`);
    }
    const style = getComputedStyle(el);
    if (['hidden', 'clip'].includes(style.overflowX) && el.scrollWidth > el.clientWidth + 1) clipped.push(describe(el));
  }
  let primaryInside = true;
  const action = primary && document.querySelector(primary);
  if (action) {
    const rect = action.getBoundingClientRect();
    primaryInside = rect.left >= -0.5 && rect.right <= width + 0.5;
  }
  return {
    width,
    scrollWidth: document.documentElement.scrollWidth,
    outside: outside.slice(0, 10),
    spilled: spilled.slice(0, 10),
    clipped: clipped.slice(0, 10),
    primaryInside,
  };
}

// ---------------------------------------------------------------------------
// The pages
// ---------------------------------------------------------------------------

describe('callback-gate pages in a real browser (axe-core, keyboard, reflow, no JavaScript)', () => {
  before(async () => {
    axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
    if (UPDATE_SCREENSHOTS) await mkdir(SCREENSHOT_DIR, { recursive: true });
    const port = await freePort();
    idp = await startIdp({ redirectUri: `http://127.0.0.1:${port}/connect/callback/${CONNECTION}` });
    gate = await startUserGate({ port });
    demo = await startDemo();
    browser = await launchBrowser();
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    await browser?.close().catch(() => {});
    const logs = [...finishedGateLogs];
    if (gate) {
      await gate.stop();
      logs.push({ url: gate.url, log: gate.output() });
    }
    await demo?.stop();
    await idp?.close().catch(() => {});
    for (const { url, log } of logs) {
      const leaks = leakedSecrets(log);
      assert.deepEqual(leaks.map((s) => `${s.slice(0, 6)}…`), [], `no code, state, cookie or key in the log of ${url}`);
    }
  }, { timeout: 30_000 });

  let success;

  test('success page (approved at the provider)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      success = await throughProvider('user_success', 'approve');
      await checkPage(t, { name: 'success', ...success, status: 200, outcome: 'connected', primary: 'a.button.primary' });
    } catch (err) {
      appendOutput(err, gate);
      throw err;
    }
  });

  test('user_cancelled: access_denied (cancelled at the provider)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      const page = await throughProvider('user_cancel', 'cancel');
      await checkPage(t, {
        name: 'failure-access_denied', ...page, status: 403, outcome: 'failed', code: 'access_denied', cls: 'user_cancelled', primary: 'a.button.primary',
      });
    } catch (err) {
      appendOutput(err, gate);
      throw err;
    }
  });

  test('app_configuration: invalid_scope', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      const page = await callbackErrorPage('invalid_scope', 'The requested scope is invalid, unknown, or malformed.');
      await checkPage(t, {
        name: 'failure-invalid_scope', ...page, status: 502, outcome: 'failed', code: 'invalid_scope', cls: 'app_configuration', primary: 'a.button.primary',
      });
    } catch (err) {
      appendOutput(err, gate);
      throw err;
    }
  });

  test('provider_transient: server_error (every action: try again, back, support, status page)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      const page = await callbackErrorPage('server_error', 'The authorization server encountered an unexpected condition.');
      await checkPage(t, {
        name: 'failure-server_error', ...page, status: 502, outcome: 'failed', code: 'server_error', cls: 'provider_transient', primary: 'a.button.primary',
      });
    } catch (err) {
      appendOutput(err, gate);
      throw err;
    }
  });

  test('security: state_invalid (a callback with an unknown state)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      const state = randomBytes(32).toString('base64url');
      const url = `${gate.url}/connect/callback/${CONNECTION}?code=e2e-code-for-no-flow&state=${state}&iss=${encodeURIComponent(idp.issuer)}`;
      await checkPage(t, {
        name: 'failure-state_invalid', url, status: 400, outcome: 'failed', code: 'state_invalid', cls: 'security', primary: 'a.button.primary',
      });
    } catch (err) {
      appendOutput(err, gate);
      throw err;
    }
  });

  test('start error: link_invalid (a forged link)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      await checkPage(t, {
        name: 'failure-link_invalid', url: `${gate.url}/connect/start/forged.sig`, status: 404, outcome: 'failed', code: 'link_invalid', cls: 'security', primary: 'a.button.primary',
      });
    } catch (err) {
      appendOutput(err, gate);
      throw err;
    }
  });

  test('user_action: session_expired, and start error: link_expired (a gate with 4 s links and 1 s flows)', { timeout: PAGE_TIMEOUT_MS * 2 }, async (t) => {
    await withGate(t, { settings: { link_ttl_seconds: 4, flow_ttl_seconds: 1 } }, async (short) => {
      const minted = Date.now();
      const link = await mintLink(short, 'user_slow');
      const flow = await startRecordedFlow(short, link);
      let expired;
      try {
        // Come back after the link has expired too, so the page is the same on every load: no "Try again"
        // (the link cannot start a new flow), "Back to Acme Agents" first.
        await sleep(Math.max(0, minted + 4_300 - Date.now()));
        expired = await arriveAtCallback(short, flow, { code: 'e2e-code-after-expiry' });
      } finally {
        await flow.context.close();
      }
      await checkPage(t, {
        name: 'failure-session_expired', ...expired, status: 400, outcome: 'failed', code: 'session_expired', cls: 'user_action', primary: 'a.button.primary',
      });
      await checkPage(t, {
        name: 'failure-link_expired', url: link, status: 410, outcome: 'failed', code: 'link_expired', cls: 'user_action', primary: 'a.button.primary',
      });
    });
  });

  test('internal: internal_error (a flow whose sealed secrets no longer open)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    // A flow's PKCE verifier is sealed in its database row. Damage that row between start and callback (as a bad
    // restore or a disk fault would) and the claimed flow cannot be finished: internal_error on the result page.
    await withGate(t, {}, async (own) => {
      const link = await mintLink(own, 'user_internal');
      const flow = await startRecordedFlow(own, link);
      let page;
      try {
        damageSealedFlowSecrets(path.join(own.dir, 'gate.db'));
        page = await arriveAtCallback(own, flow, { code: 'e2e-code-for-damaged-secrets' });
      } finally {
        await flow.context.close();
      }
      await checkPage(t, {
        name: 'failure-internal_error', ...page, status: 500, outcome: 'failed', code: 'internal_error', cls: 'internal', primary: 'a.button.primary',
      });
    });
  });

  test('credential form (an api_key connection\'s hosted form)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    const extraConnections = `
[[connections]]
name = "keys"
display_name = "ZoomInfo"
provider = "api_key"
api_base_url = "https://api.zoominfo.example"
`;
    await withGate(t, { extraConnections }, async (keyed) => {
      const res = await fetch(`${keyed.url}/v1/authorization-links`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keyed.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ connection: 'keys', identifier: 'user_form' }),
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(res.status, 201);
      const { link } = await res.json();
      await checkPage(t, {
        name: 'credential-form', url: link, status: 200, outcome: 'credential-form', primary: 'button.button.primary', firstFocus: '#api_key',
      });
    });
  });

  test('notice: page not found', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    await checkPage(t, { name: 'notice-not_found', url: `${gate.url}/no/such/page`, status: 404, outcome: 'notice', primary: 'a.button.primary' });
  });

  test('notice: a result page opened in another browser', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    assert.ok(success, 'the success test ran first');
    await checkPage(t, { name: 'notice-other_browser', url: success.url, status: 403, outcome: 'notice', primary: 'a.button.primary' });
  });

  test('notice: rate limited (429, a gate allowing 1 callback a minute)', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    await withGate(t, { limits: { callbacks_per_minute: 1, burst: 1 } }, async (limited) => {
      const url = `${limited.url}/connect/callback/${CONNECTION}?state=e2e-hammered`;
      const statuses = [];
      for (let i = 0; i < 5 && !statuses.includes(429); i += 1) {
        const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(5_000) });
        await res.arrayBuffer();
        statuses.push(res.status);
      }
      assert.ok(statuses.includes(429), `hammering the callback never answered 429: ${statuses.join(', ')}`);
      await checkPage(t, { name: 'notice-rate_limited', url, status: 429, outcome: 'notice', primary: 'a.button.primary' });
    });
  });

  test('demo: the demo app page', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      await checkPage(t, { name: 'demo-app', url: `${demo.url}/`, status: 200, primary: 'button.button.primary' });
    } catch (err) {
      appendOutput(err, demo);
      throw err;
    }
  });

  test('demo: the demo provider\'s consent page', { timeout: PAGE_TIMEOUT_MS }, async (t) => {
    try {
      const context = await newLoopbackContext(browser);
      let url;
      try {
        const page = await newPage(context);
        await page.goto(`${demo.url}/`);
        await page.getByRole('button', { name: 'Connect the demo provider' }).click();
        await page.waitForURL((u) => u.pathname === '/demo/provider/authorize');
        url = page.url();
      } finally {
        await context.close();
      }
      await checkPage(t, { name: 'demo-consent', url, status: 200, primary: 'button.button.primary' });
    } catch (err) {
      appendOutput(err, demo);
      throw err;
    }
  });

  // The demo refuses form posts whose Origin is not its own; a real browser must still send its own origin from
  // the demo's pages, which every response's Referrer-Policy: no-referrer would turn into "null".
  test('demo: Connect and Approve in a real browser end connected', { timeout: PAGE_TIMEOUT_MS }, async () => {
    try {
      const context = await newLoopbackContext(browser);
      try {
        const page = await newPage(context);
        await page.goto(`${demo.url}/`);
        await page.getByRole('button', { name: 'Connect the demo provider' }).click();
        await page.waitForURL((u) => u.pathname === '/demo/provider/authorize');
        await page.getByRole('button', { name: 'Approve', exact: true }).click();
        await page.waitForURL((u) => u.pathname.startsWith('/connect/result/'));
        const outcome = await page.locator('main').getAttribute('data-outcome');
        assert.equal(outcome, 'connected', `main[data-outcome]; page:\n${await page.content()}`);
      } finally {
        await context.close();
      }
    } catch (err) {
      appendOutput(err, demo);
      throw err;
    }
  });
});
