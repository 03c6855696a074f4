// A scroll container whose scrollbar spans the whole result set (every
// matching row × a fixed row height, scaled down when that is taller than a
// browser lets an element be). Only the rows in view exist in the DOM; the
// rows at the scrolled-to offset are fetched (debounced), and an answer that
// arrives after a newer request was answered is dropped.

import { highlight } from 'instantsearch.js/es/helpers';
import { escapeHtml } from './api.js';

export const ROW_HEIGHT = 44;
// Chrome stops at about 33.5 million px, Firefox at about 17.8 million.
const MAX_SCROLL_PX = 15_000_000;
const OVERSCAN = 8;
const DEBOUNCE_MS = 40;
const MAX_CACHED_ROWS = 4000;
const PRE = '__ais-highlight__';
const POST = '__/ais-highlight__';

const FIELDS = ['first_name', 'last_name', 'emails', 'company_name', 'city'];

/** A hit from our own fetch, or from InstantSearch, shaped for the `highlight`
 * helper: `_highlightResult.<field>.value`, HTML-escaped, the tags kept. */
export function toHighlightable(hit) {
  const formatted = hit._formatted || {};
  const hr = hit._highlightResult || {};
  const out = {};
  for (const f of FIELDS) {
    let raw;
    if (hr[f] !== undefined) {
      raw = Array.isArray(hr[f]) ? hr[f].map((x) => x?.value ?? '').join(', ') : hr[f]?.value;
    } else if (formatted[f] !== undefined) {
      raw = Array.isArray(formatted[f]) ? formatted[f].join(', ') : formatted[f];
    } else {
      raw = Array.isArray(hit[f]) ? hit[f].join(', ') : hit[f];
    }
    // what the highlight helper takes: escaped, the placeholders as <mark>
    out[f] = { value: escapeHtml(raw ?? '').split(PRE).join('<mark>').split(POST).join('</mark>') };
  }
  return { id: hit.id ?? hit.objectID, _highlightResult: out };
}

function hl(hit, attribute) {
  return highlight({ attribute, hit });
}

export class VirtualList {
  /**
   * @param {HTMLElement} root
   * @param {{ fetchWindow: (q: object, signal: AbortSignal) => Promise<object>, onOpen: (id: string) => void, onError: (e: Error) => void, onWindow?: (info: object) => void }} opts
   */
  constructor(root, opts) {
    this.opts = opts;
    this.root = root;
    this.source = null; // { key, q, filter, sort, total }
    this.rows = new Map(); // absolute index → highlightable hit
    this.first = 0;
    this.pinned = null;
    this.requestSeq = 0;
    this.appliedSeq = 0;
    this.dropped = 0;
    this.timer = null;
    this.inflight = new Map(); // seq → AbortController

    root.classList.add('vlist');
    root.innerHTML = '';
    this.scroller = document.createElement('div');
    this.scroller.className = 'vlist-scroller';
    this.scroller.tabIndex = 0;
    this.scroller.setAttribute('role', 'region');
    this.scroller.setAttribute('aria-label', 'Matching contacts');
    this.scroller.dataset.testid = 'results-scroller';
    this.viewport = document.createElement('div');
    this.viewport.className = 'vlist-viewport';
    this.list = document.createElement('ol');
    this.list.className = 'vlist-rows';
    this.list.setAttribute('role', 'list');
    this.list.setAttribute('aria-label', 'Contacts');
    this.list.dataset.testid = 'rows';
    this.viewport.appendChild(this.list);
    this.spacer = document.createElement('div');
    this.spacer.className = 'vlist-spacer';
    this.scroller.append(this.viewport, this.spacer);
    this.empty = document.createElement('p');
    this.empty.className = 'vlist-empty';
    this.empty.hidden = true;
    root.append(this.scroller, this.empty);

    this.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    this.list.addEventListener('click', (e) => {
      const row = e.target.closest('[data-id]');
      if (row) this.opts.onOpen(row.dataset.id);
    });
    this.list.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' && e.key !== ' ') return;
      const row = e.target.closest('[data-id]');
      if (row) {
        e.preventDefault();
        this.opts.onOpen(row.dataset.id);
      }
    });
    new ResizeObserver(() => this.layout()).observe(this.scroller);
  }

  get total() {
    return this.source ? this.source.total : 0;
  }

  viewportHeight() {
    return this.scroller.clientHeight || 480;
  }

  visibleCount() {
    return Math.ceil(this.viewportHeight() / ROW_HEIGHT) + 1;
  }

  /** Height of what scrolls, and how many rows one scroll pixel stands for. */
  geometry() {
    const vh = this.viewportHeight();
    const content = this.total * ROW_HEIGHT;
    const height = Math.max(vh, Math.min(content, MAX_SCROLL_PX));
    const scrollRange = Math.max(0, height - vh);
    const rowRange = Math.max(0, this.total - vh / ROW_HEIGHT);
    return { vh, height, scrollRange, rowRange, scaled: content > MAX_SCROLL_PX };
  }

  firstRowAt(scrollTop) {
    const g = this.geometry();
    if (g.scrollRange === 0) return 0;
    return Math.min(g.rowRange, Math.max(0, (scrollTop / g.scrollRange) * g.rowRange));
  }

  scrollTopFor(firstRow) {
    const g = this.geometry();
    if (g.rowRange === 0) return 0;
    return (Math.min(firstRow, g.rowRange) / g.rowRange) * g.scrollRange;
  }

  layout() {
    const g = this.geometry();
    this.viewport.style.height = `${g.vh}px`;
    this.spacer.style.height = `${Math.max(0, g.height - g.vh)}px`;
    this.root.dataset.total = String(this.total);
    this.root.dataset.scaled = String(g.scaled);
    this.root.dataset.rowHeight = String(ROW_HEIGHT);
    this.onScroll(true);
  }

  /** A new answer from InstantSearch: its query, filter, sort and total,
   * and its first page of hits (rows 1..n). */
  setSource(source, firstHits) {
    const changed = !this.source || this.source.key !== source.key;
    if (changed) {
      this.rows.clear();
      this.abortAll();
      this.requestSeq++;
      this.appliedSeq = this.requestSeq;
      this.pinned = null;
      this.source = source;
      this.scroller.scrollTop = 0;
    } else {
      this.source = { ...this.source, total: source.total };
    }
    (firstHits || []).forEach((hit, i) => this.rows.set(i, toHighlightable(hit)));
    this.root.dataset.query = source.q;
    this.root.dataset.filter = source.filter;
    this.root.dataset.sort = (source.sort || []).join(',');
    this.empty.hidden = this.total > 0;
    this.empty.textContent = this.total > 0 ? '' : 'No contact matches.';
    this.layout();
  }

  /** Forget everything (a refused key: show no stale rows). */
  clear() {
    this.abortAll();
    this.requestSeq++;
    this.appliedSeq = this.requestSeq;
    this.source = null;
    this.rows.clear();
    this.list.innerHTML = '';
    this.root.dataset.query = '';
    delete this.root.dataset.renderedQuery;
    this.empty.hidden = true;
    this.layout();
  }

  abortAll() {
    for (const c of this.inflight.values()) c.abort();
    this.inflight.clear();
    clearTimeout(this.timer);
  }

  /** Scroll so that row n (1-based) is the first one in view, exactly. */
  goToRow(n) {
    if (!this.source || this.total === 0) return;
    const row = Math.min(Math.max(1, Math.floor(n)), this.total) - 1;
    this.pinned = Math.min(row, Math.floor(this.geometry().rowRange) || 0);
    this.scroller.scrollTop = this.scrollTopFor(this.pinned);
    this.onScroll();
  }

  onScroll(fromLayout = false) {
    let first = this.firstRowAt(this.scroller.scrollTop);
    if (this.pinned != null) {
      if (Math.abs(first - this.pinned) < 3) first = this.pinned;
      else this.pinned = null;
    }
    this.first = first;
    this.render();
    if (!fromLayout || this.missing().length) this.schedule();
  }

  range() {
    const start = Math.floor(this.first);
    const end = Math.min(this.total, start + this.visibleCount());
    return [start, end];
  }

  missing() {
    const [start, end] = this.range();
    const out = [];
    for (let i = start; i < end; i++) if (!this.rows.has(i)) out.push(i);
    return out;
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.source || this.missing().length === 0) return;
    this.timer = setTimeout(() => this.fetchMissing(), DEBOUNCE_MS);
  }

  async fetchMissing() {
    if (!this.source) return;
    const missing = this.missing();
    if (missing.length === 0) return;
    const offset = Math.max(0, missing[0] - OVERSCAN);
    const limit = Math.min(1000, missing[missing.length - 1] + 1 + OVERSCAN - offset);
    const source = this.source;
    const seq = ++this.requestSeq;
    const controller = new AbortController();
    this.inflight.set(seq, controller);
    const started = performance.now();
    let answer;
    try {
      answer = await this.opts.fetchWindow(
        { q: source.q, filter: source.filter, sort: source.sort, offset, limit },
        controller.signal,
      );
    } catch (e) {
      this.inflight.delete(seq);
      if (e && e.name === 'AbortError') return;
      if (seq > this.appliedSeq && this.source === source) this.opts.onError(e);
      return;
    }
    this.inflight.delete(seq);
    // Out of order: a newer window is already on screen, or the query changed.
    if (seq < this.appliedSeq || this.source !== source) {
      this.dropped++;
      this.root.dataset.dropped = String(this.dropped);
      return;
    }
    this.appliedSeq = seq;
    if (this.rows.size > MAX_CACHED_ROWS) {
      const [s, e] = this.range();
      for (const k of this.rows.keys()) if (k < s - 500 || k > e + 500) this.rows.delete(k);
    }
    (answer.hits || []).forEach((hit, i) => this.rows.set(offset + i, toHighlightable({ ...hit })));
    const total = answer.totalHits ?? answer.estimatedTotalHits;
    if (typeof total === 'number' && total !== this.total) {
      this.source = { ...this.source, total };
      this.layout();
    }
    this.opts.onWindow?.({ offset, limit, ms: performance.now() - started, hits: (answer.hits || []).length });
    this.render();
    this.schedule();
  }

  render() {
    const [start, end] = this.range();
    const frac = this.first - start;
    this.list.style.transform = `translateY(${-frac * ROW_HEIGHT}px)`;
    const parts = [];
    let loaded = 0;
    for (let i = start; i < end; i++) {
      const n = i + 1;
      const hit = this.rows.get(i);
      if (!hit) {
        parts.push(`<li class="row loading" data-row="${n}" role="listitem" aria-busy="true"><span class="rownum">#${n}</span><span class="ph"></span></li>`);
        continue;
      }
      loaded++;
      const name = `${hl(hit, 'first_name')} ${hl(hit, 'last_name')}`.trim() || '<span class="muted">(no name)</span>';
      parts.push(
        `<li class="row" data-row="${n}" data-id="${escapeHtml(hit.id)}" role="listitem" tabindex="0" data-testid="row">` +
          `<span class="rownum">#${n}</span>` +
          `<span class="name" data-testid="row-name">${name}</span>` +
          `<span class="email">${hl(hit, 'emails')}</span>` +
          `<span class="company">${hl(hit, 'company_name')}</span>` +
          `<span class="city">${hl(hit, 'city')}</span>` +
          `</li>`,
      );
    }
    this.list.innerHTML = parts.join('');
    const complete = loaded === end - start;
    this.root.dataset.first = String(start + 1);
    this.root.dataset.complete = String(complete);
    if (this.source && complete) {
      this.root.dataset.renderedQuery = this.source.q;
      this.root.dataset.renderedKey = this.source.key;
      this.opts.onRendered?.({ q: this.source.q, first: start + 1, t: performance.now() });
    }
  }
}
