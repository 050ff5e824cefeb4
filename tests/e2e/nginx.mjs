// A TLS-terminating reverse proxy for the end-to-end suite: Debian's nginx in front of callback-gate, the way
// production runs it, with a throwaway certificate authority and server certificate made by openssl.
//
// nginx runs as the current user from a folder of its own (configuration, pid, logs and temporary files all in
// it), in the foreground, on free loopback ports. Like harness.mjs, this is not a test file itself.

import { execFile, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

export const NGINX = process.env.NGINX_PATH || '/usr/sbin/nginx';
export const OPENSSL = process.env.OPENSSL_PATH || 'openssl';

const run = promisify(execFile);

async function openssl(dir, ...args) {
  try {
    await run(OPENSSL, args, { cwd: dir });
  } catch (err) {
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

/**
 * Makes, in `dir`, a certificate authority and a server certificate it signs for `hostname` (and 127.0.0.1), valid
 * for two days, on P-256 keys. Returns { caPem, certPath, chainPath, keyPath, spki } where chainPath is the server
 * certificate followed by the CA (what nginx presents) and spki the base64 SHA-256 of the server certificate's
 * public key, the form Chromium's --ignore-certificate-errors-spki-list takes.
 */
export async function makeCertificates(dir, hostname = 'localhost') {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-sha256',
    '-subj', '/CN=callback-gate e2e throwaway CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  await openssl(dir, 'req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${hostname}`);
  await writeFile(path.join(dir, 'server.ext'), [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    'extendedKeyUsage = serverAuth',
    `subjectAltName = DNS:${hostname}, IP:127.0.0.1`,
    '',
  ].join('\n'));
  await openssl(dir, 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '2', '-sha256', '-extfile', 'server.ext', '-out', 'server.crt');

  const caPem = await readFile(path.join(dir, 'ca.crt'), 'utf8');
  const serverPem = await readFile(path.join(dir, 'server.crt'), 'utf8');
  const chainPath = path.join(dir, 'chain.crt');
  await writeFile(chainPath, serverPem + caPem);
  const server = new X509Certificate(serverPem);
  if (!server.verify(new X509Certificate(caPem).publicKey)) throw new Error('the server certificate is not signed by the CA');
  const spki = createHash('sha256').update(server.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  return {
    caPem,
    certPath: path.join(dir, 'server.crt'),
    chainPath,
    keyPath: path.join(dir, 'server.key'),
    spki,
  };
}

/**
 * Chromium arguments that make it accept the server certificate of `certs` (and nothing else it could not verify):
 * its public key is pinned with --ignore-certificate-errors-spki-list, so a certificate with another key still fails.
 * `localhost` is mapped to 127.0.0.1 so Chromium never tries ::1, where nginx does not listen.
 */
export function chromiumTrusting(certs) {
  return [`--ignore-certificate-errors-spki-list=${certs.spki}`, '--host-resolver-rules=MAP localhost 127.0.0.1'];
}

/** How a server block fills X-Forwarded-For: as production does, or presenting a fixed client address. */
function forwardedFor(server, index) {
  if (!server.clientAddress) {
    return { map: '', value: '$proxy_add_x_forwarded_for' };
  }
  // What $proxy_add_x_forwarded_for would send if this client's address were `clientAddress`: the incoming
  // header (whatever the client claims) with the address the proxy saw appended.
  const name = `$xff_${index}`;
  const map = `  map $http_x_forwarded_for ${name} {
    "" "${server.clientAddress}";
    default "$http_x_forwarded_for, ${server.clientAddress}";
  }
`;
  return { map, value: name };
}

/**
 * Writes an nginx.conf into `dir` and runs nginx in the foreground. Each entry of `servers` is a server block
 * `{ port, clientAddress? }` listening with TLS on 127.0.0.1:port and proxying everything to `upstream` (e.g.
 * http://127.0.0.1:8080, or several such URLs: one instance after the other, and the next one when an instance
 * cannot take a request) with Host, X-Forwarded-For and X-Forwarded-Proto set. A block with `clientAddress` appends
 * that address to X-Forwarded-For instead of the peer's, as if the client had connected from it.
 *
 * Returns { config, accessLog(), errorLog(), stop() } once every port accepts connections. The access log has one
 * line per request: `port "METHOD path" status upstream=... xff="..."` (no query string: a callback's has the code and
 * state), where xff is the X-Forwarded-For sent to the upstream.
 */
export async function startNginx({ dir, servers, upstream, certs }) {
  if (!existsSync(NGINX)) {
    throw new Error(`nginx not found at ${NGINX}: install Debian's nginx (scripts/test does), or set NGINX_PATH`);
  }
  const accessLogPath = path.join(dir, 'access.log');
  const errorLogPath = path.join(dir, 'error.log');
  const blocks = servers.map((server, index) => ({ server, ...forwardedFor(server, index) }));
  const config = `# Written by tests/e2e/nginx.mjs for one test run.
daemon off;
worker_processes 1;
${process.getuid?.() === 0 ? `user ${userInfo().username};\n` : ''}pid ${path.join(dir, 'nginx.pid')};
error_log ${errorLogPath} info;
events {
  worker_connections 256;
}
http {
  client_body_temp_path ${path.join(dir, 'client_body')};
  proxy_temp_path ${path.join(dir, 'proxy')};
  fastcgi_temp_path ${path.join(dir, 'fastcgi')};
  uwsgi_temp_path ${path.join(dir, 'uwsgi')};
  scgi_temp_path ${path.join(dir, 'scgi')};
${blocks.map((b) => b.map).join('')}
  upstream callback_gate {
${[upstream].flat().map((url) => `    server ${new URL(url).host} max_fails=1 fail_timeout=10s;\n`).join('')}    keepalive 8;
  }
${blocks.map(({ server, value }) => `
  log_format proxied_${server.port} '$server_port "$request_method $uri" $status upstream=$upstream_addr xff="${value}"';
  server {
    listen 127.0.0.1:${server.port} ssl;
    server_name localhost;
    ssl_certificate ${certs.chainPath};
    ssl_certificate_key ${certs.keyPath};
    access_log ${accessLogPath} proxied_${server.port};

    location / {
      proxy_pass http://callback_gate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For ${value};
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 35s;
      proxy_next_upstream error;
      proxy_next_upstream_tries 2;
    }
  }
`).join('')}}
`;
  const configPath = path.join(dir, 'nginx.conf');
  await writeFile(configPath, config);

  const chunks = [];
  const child = spawn(NGINX, ['-p', dir, '-e', errorLogPath, '-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => chunks.push(d));
  child.stderr.on('data', (d) => chunks.push(d));
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve((exited = { code, signal })));
    child.on('error', (error) => resolve((exited = { error: String(error) })));
  });
  const read = async (file) => readFile(file, 'utf8').catch(() => '');
  const errorLog = () => read(errorLogPath);
  const stop = async () => {
    if (exited === null) {
      child.kill('SIGTERM');
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exitPromise;
      clearTimeout(killTimer);
    }
    return exited;
  };

  const deadline = Date.now() + 10_000;
  for (const { port } of servers) {
    for (;;) {
      if (exited !== null) {
        throw new Error(`nginx exited at start: ${JSON.stringify(exited)}\n${Buffer.concat(chunks)}${await errorLog()}\n--- nginx.conf ---\n${config}`);
      }
      if (await accepts(port)) break;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`nginx does not accept connections on ${port} after 10 s\n${await errorLog()}`);
      }
      await sleep(50);
    }
  }
  return { config, accessLog: () => read(accessLogPath), errorLog, stop };
}

async function accepts(port) {
  const socket = net.connect(port, '127.0.0.1');
  try {
    await once(socket, 'connect');
    return true;
  } catch {
    return false;
  } finally {
    socket.destroy();
  }
}

/**
 * A GET, over https verifying the server certificate against `caPem` only (so the certificate nginx presents must
 * really be valid for the host name) or over plain http, with optional extra headers and a local address to send
 * from. Resolves to { status, headers, body }.
 */
export function get(url, { caPem, headers = {}, localAddress } = {}) {
  const client = new URL(url).protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = client.get(url, {
      ca: caPem,
      headers,
      localAddress,
      // localhost is 127.0.0.1 here, as for Chromium (nginx listens on no other address).
      lookup: (host, options, callback) => (options?.all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4)),
      agent: false,
      timeout: 10_000,
    }, (response) => {
      const body = [];
      response.on('data', (d) => body.push(d));
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body: Buffer.concat(body).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`GET ${url}: no answer in 10 s`)));
    request.on('error', reject);
  });
}
