// Suggestions under the search box from GET /v1/contacts/autocomplete: a
// listbox the keyboard can walk (arrows, Enter, Escape); answers that
// arrive after a newer one are dropped.

import { escapeHtml } from './api.js';

const DEBOUNCE_MS = 60;

/** The server's highlight is HTML with <em> marks, already escaped; keep
 * only text and <em>, whatever else it might hold. */
export function safeHighlight(html) {
  const t = document.createElement('template');
  t.innerHTML = String(html ?? '');
  const out = [];
  const walk = (node) => {
    for (const c of node.childNodes) {
      if (c.nodeType === Node.TEXT_NODE) out.push(escapeHtml(c.textContent));
      else if (c.nodeType === Node.ELEMENT_NODE && c.tagName === 'EM') {
        out.push('<mark>');
        walk(c);
        out.push('</mark>');
      } else if (c.nodeType === Node.ELEMENT_NODE) walk(c);
    }
  };
  walk(t.content);
  return out.join('');
}

export class Autocomplete {
  constructor(input, list, { fetch, onPick }) {
    this.input = input;
    this.list = list;
    this.fetch = fetch;
    this.onPick = onPick;
    this.items = [];
    this.active = -1;
    this.seq = 0;
    this.shownSeq = 0;
    this.timer = null;
    this.controller = null;

    input.addEventListener('keydown', (e) => this.onKey(e));
    input.addEventListener('blur', () => setTimeout(() => this.close(), 120));
    input.addEventListener('focus', () => {
      if (this.items.length) this.open();
    });
    list.addEventListener('mousedown', (e) => e.preventDefault());
    list.addEventListener('click', (e) => {
      const li = e.target.closest('[role=option]');
      if (li) this.pick(Number(li.dataset.index));
    });
  }

  update(q) {
    clearTimeout(this.timer);
    if (!q.trim()) {
      this.items = [];
      this.close();
      return;
    }
    this.timer = setTimeout(() => this.load(q), DEBOUNCE_MS);
  }

  async load(q) {
    const seq = ++this.seq;
    this.controller?.abort();
    this.controller = new AbortController();
    let answer;
    try {
      answer = await this.fetch(q, this.controller.signal);
    } catch {
      if (seq === this.seq) {
        this.items = [];
        this.close();
      }
      return;
    }
    if (seq < this.shownSeq || seq !== this.seq) return; // out of order
    this.shownSeq = seq;
    this.items = answer?.suggestions || [];
    this.active = -1;
    this.renderList();
    if (this.items.length && document.activeElement === this.input) this.open();
    else this.close();
  }

  renderList() {
    this.list.innerHTML = this.items
      .map((s, i) => {
        const label = s.highlight ? safeHighlight(s.highlight) : escapeHtml(s.text);
        return (
          `<li role="option" id="suggestion-${i}" data-index="${i}" data-kind="${escapeHtml(s.kind)}" data-id="${escapeHtml(s.id ?? '')}" ` +
          `aria-selected="${i === this.active}" data-testid="suggestion">` +
          `<span class="kind kind-${escapeHtml(s.kind)}">${s.kind === 'company' ? 'Company' : 'Contact'}</span> ` +
          `<span class="label">${label}</span></li>`
        );
      })
      .join('');
  }

  open() {
    this.list.hidden = false;
    this.input.setAttribute('aria-expanded', 'true');
  }

  close() {
    this.list.hidden = true;
    this.input.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
    this.active = -1;
  }

  move(delta) {
    if (!this.items.length) return;
    this.open();
    this.active = (this.active + delta + this.items.length) % this.items.length;
    this.renderList();
    this.input.setAttribute('aria-activedescendant', `suggestion-${this.active}`);
  }

  pick(i) {
    const s = this.items[i];
    this.close();
    if (s) this.onPick(s);
  }

  onKey(e) {
    if (e.key === 'ArrowDown') {
      e.preventDefault();
      this.move(1);
    } else if (e.key === 'ArrowUp') {
      e.preventDefault();
      this.move(-1);
    } else if (e.key === 'Enter' && !this.list.hidden && this.active >= 0) {
      e.preventDefault();
      this.pick(this.active);
    } else if (e.key === 'Escape' && !this.list.hidden) {
      // close the list only (a search input clears itself on Escape otherwise)
      e.preventDefault();
      this.close();
    }
  }
}
