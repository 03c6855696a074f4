// The banner under the header: what went wrong and what to do, with a
// countdown and an automatic retry when the server rate-limited us.

const el = () => document.getElementById('alert');
let timer = null;

export function describeSearchError(err) {
  const status = err?.status;
  const msg = err?.message || String(err);
  if (status === 401 || status === 403) return { text: `This key was refused: ${msg}` };
  if (status === 429) {
    const n = err.retryAfter ?? 1;
    return { text: `Rate-limited: retry in ${n} s`, retryIn: n, detail: msg };
  }
  if (status === 0) return { text: `${msg}. Is crmsearch running?` };
  if (status) return { text: `Search failed (${status}): ${msg}` };
  return { text: `Search failed: ${msg}` };
}

export function clearAlert() {
  clearInterval(timer);
  timer = null;
  const a = el();
  a.hidden = true;
  a.textContent = '';
  a.dataset.kind = '';
}

/** @param {{kind?: string, retryIn?: number, onRetry?: () => void}} opts */
export function showAlert(text, { kind = 'error', retryIn, onRetry } = {}) {
  clearInterval(timer);
  timer = null;
  const a = el();
  a.hidden = false;
  a.dataset.kind = kind;
  a.textContent = text;
  if (retryIn != null && onRetry) {
    let left = retryIn;
    a.dataset.retryAfter = String(retryIn);
    timer = setInterval(() => {
      left -= 1;
      if (left <= 0) {
        clearInterval(timer);
        timer = null;
        onRetry();
      } else {
        a.textContent = `Rate-limited: retry in ${left} s`;
      }
    }, 1000);
  }
}
