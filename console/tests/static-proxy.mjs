// Test-only: serves console/dist (GET / and /console/*) on a loopback port
// and passes every other request to a crmsearch server, so a console build
// can be tried before a crmsearch binary embeds it.
//   CRMSEARCH_URL=http://127.0.0.1:7070 node tests/static-proxy.mjs [port]
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

export function startProxy({ upstream, port = 0 }) {
  const up = new URL(upstream);
  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = path === '/' ? 'index.html' : path.startsWith('/console/') ? path.slice('/console/'.length) : null;
    if (req.method === 'GET' && file !== null && /^(index\.html|app\.js|app\.css)$/.test(file)) {
      try {
        const body = await readFile(join(dist, file));
        const headers = { 'content-type': TYPES[file.slice(file.lastIndexOf('.'))], 'cache-control': 'no-store' };
        // the page under the server's own Content-Security-Policy, as GET / of the binary has it
        if (file === 'index.html') {
          const csp = await fetch(upstream).then((r) => r.headers.get('content-security-policy'), () => null);
          if (csp) headers['content-security-policy'] = csp;
        }
        res.writeHead(200, headers);
        res.end(body);
      } catch {
        res.writeHead(404).end('console/dist is not built: run scripts/console_build');
      }
      return;
    }
    const headers = { ...req.headers, host: up.host };
    const preq = http.request({ hostname: up.hostname, port: up.port, path: req.url, method: req.method, headers }, (pres) => {
      res.writeHead(pres.statusCode, pres.headers);
      pres.pipe(res);
    });
    preq.on('error', (e) => {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: `proxy: ${e.message}`, code: 'proxy', type: 'internal' }));
    });
    req.pipe(preq);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const upstream = process.env.CRMSEARCH_URL;
  if (!upstream) {
    console.error('set CRMSEARCH_URL');
    process.exit(2);
  }
  const server = await startProxy({ upstream, port: Number(process.argv[2] || 0) });
  console.log(`http://127.0.0.1:${server.address().port}`);
}
