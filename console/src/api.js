// Talking to crmsearch: the key kept in sessionStorage, one fetch wrapper
// that adds it, and one error type that carries what the page must say
// (status, the server's message, Retry-After).

const KEY_STORAGE = 'crmsearch.console.key';
const MEMORY_KEY_STORAGE = 'crmsearch.console.memoryKey';

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || '';
}
export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}
export function getMemoryKey() {
  return sessionStorage.getItem(MEMORY_KEY_STORAGE) || '';
}
export function setMemoryKey(key) {
  if (key) sessionStorage.setItem(MEMORY_KEY_STORAGE, key);
  else sessionStorage.removeItem(MEMORY_KEY_STORAGE);
}

export class ApiError extends Error {
  constructor({ status, message, code, retryAfter, path }) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.path = path;
  }
}

/** The server's sentence from either error shape it uses:
 * Meilisearch's `{"message","code","type"}` or crmsearch's `{"error":{"code","message"}}`. */
function messageOf(body, res) {
  if (body && typeof body === 'object') {
    if (typeof body.message === 'string') return { message: body.message, code: body.code };
    if (body.error && typeof body.error === 'object') return { message: body.error.message || '', code: body.error.code };
    if (typeof body.error === 'string') return { message: body.error, code: undefined };
  }
  return { message: `${res.status} ${res.statusText}`.trim(), code: undefined };
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date). */
export function retryAfterSeconds(value) {
  if (value == null || value === '') return undefined;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, Math.ceil(n));
  const at = Date.parse(value);
  if (!Number.isNaN(at)) return Math.max(0, Math.ceil((at - Date.now()) / 1000));
  return undefined;
}

export async function errorFrom(res, path) {
  let body;
  try {
    const text = await res.text();
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  const { message, code } = messageOf(body, res);
  return new ApiError({
    status: res.status,
    message,
    code,
    retryAfter: retryAfterSeconds(res.headers.get('Retry-After')),
    path,
  });
}

/** fetch with the key; JSON in and out; throws ApiError on a non-2xx. */
export async function api(path, { method = 'GET', body, key = getKey(), signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError({ status: 0, message: 'Could not reach the server', path });
  }
  if (!res.ok) throw await errorFrom(res, path);
  const text = await res.text();
  return text ? JSON.parse(text) : undefined;
}

/** The httpClient instant-meilisearch calls: the current key on every
 * request (so a new key needs no new client), errors as ApiError. */
export async function meiliHttpClient(url, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = getKey();
  if (key) headers.set('Authorization', `Bearer ${key}`);
  else headers.delete('Authorization');
  const path = new URL(url, window.location.origin).pathname;
  let res;
  try {
    res = await fetch(url, { ...init, headers });
  } catch (e) {
    throw new ApiError({ status: 0, message: 'Could not reach the server', path });
  }
  if (!res.ok) throw await errorFrom(res, path);
  const text = await res.text();
  return text ? JSON.parse(text) : undefined;
}

/** The ApiError inside whatever wrapped it (instant-meilisearch and
 * InstantSearch each wrap an error in another, keeping it as `cause`). */
export function findApiError(e) {
  for (let cur = e, depth = 0; cur && depth < 8; cur = cur.cause, depth++) {
    if (cur instanceof ApiError || cur?.name === 'ApiError') return cur;
  }
  return undefined;
}

export function escapeHtml(s) {
  return String(s ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}
