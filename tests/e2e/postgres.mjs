// A throwaway PostgreSQL server for the end-to-end suite, made and stopped by scripts/postgres (Debian's postgresql,
// which scripts/test installs): what several callback-gate instances share. Not a test file itself.

import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/postgres');

/** Starts a cluster on a free loopback port. Returns { url, stop() }; url is a postgres:// URL for database_url. */
export async function startPostgres() {
  // Its own folder directly under the temporary directory: as root, scripts/postgres hands it to the postgres user.
  const dir = await mkdtemp(path.join(tmpdir(), 'callback-gate-e2e-pg-'));
  const stop = async () => {
    await run(script, ['stop', dir]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const { stdout } = await run(script, ['start', dir], { timeout: 90_000 });
    return { url: stdout.trim(), stop };
  } catch (err) {
    await stop();
    throw new Error(`scripts/postgres start failed (is Debian's postgresql installed? scripts/test installs it): ${err.stderr || err.message}`);
  }
}
