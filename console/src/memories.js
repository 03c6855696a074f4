// Agent memory search: POST /v1/memories/search, each memory with its score
// taken apart — the semantic (cosine) and keyword (BM25) signals fused by
// reciprocal rank into a relevance, plus weighted recency and importance.

import { api, getKey, getMemoryKey, setMemoryKey, escapeHtml, findApiError } from './api.js';

const $ = (id) => document.getElementById(id);
let seq = 0;

function num(v, digits = 3) {
  if (v == null || Number.isNaN(Number(v))) return '—';
  return Number(v).toFixed(digits);
}

function numberOr(input, fallback) {
  const s = input.value.trim();
  if (s === '') return fallback;
  const n = Number(s);
  return Number.isFinite(n) ? n : fallback;
}

/** The score as the server adds it up (src/retrieve.rs):
 * score = relevance + w_recency × recency + w_importance × importance. */
function breakdown(m, weights) {
  const s = m.scores || {};
  const recency = s.recency ?? 0;
  const importance = s.importance ?? m.importance ?? 0;
  const rec = weights.recency * recency;
  const imp = weights.importance * importance;
  const hasRelevance = typeof s.relevance === 'number';
  const relevance = hasRelevance ? s.relevance : m.score - rec - imp;
  const sum = relevance + rec + imp;
  const matches = Math.abs(sum - m.score) < 1e-3;
  const parts = [
    ['semantic', 'Semantic', s.semantic, s.semantic == null ? 'not a vector candidate' : 'cosine similarity to the query'],
    ['keyword', 'Keyword', s.keyword, s.keyword == null ? 'not a keyword candidate' : 'BM25 of the query words'],
  ];
  const total = Math.max(1e-9, relevance + rec + imp);
  const bar = [
    ['relevance', relevance],
    ['recency', rec],
    ['importance', imp],
  ]
    .map(([k, v]) => `<span class="seg seg-${k}" style="width:${Math.max(0, (v / total) * 100).toFixed(1)}%" title="${k} ${num(v)}"></span>`)
    .join('');
  return `
  <table class="breakdown" data-testid="score-breakdown">
    <caption class="visually-hidden">How the score of this memory adds up</caption>
    <tbody>
      ${parts
        .map(
          ([k, label, v, note]) =>
            `<tr data-part="${k}"><th scope="row">${label}</th><td class="v">${num(v)}</td><td class="note">${escapeHtml(note)}</td></tr>`,
        )
        .join('')}
      <tr data-part="relevance"><th scope="row">Relevance</th><td class="v">${num(relevance)}</td><td class="note">${hasRelevance ? 'the two ranks fused (reciprocal rank), 1 = first on both' : 'score minus recency and importance (the server sent no relevance)'}</td></tr>
      <tr data-part="recency"><th scope="row">Recency</th><td class="v">+ ${num(rec)}</td><td class="note">${num(weights.recency, 2)} × ${num(recency)} (exp(−age / half-life))</td></tr>
      <tr data-part="importance"><th scope="row">Importance</th><td class="v">+ ${num(imp)}</td><td class="note">${num(weights.importance, 2)} × ${num(importance)}</td></tr>
      <tr data-part="total" class="total"><th scope="row">Score</th><td class="v">= ${num(m.score)}</td><td class="note">${matches ? 'relevance + recency + importance' : `the parts add up to ${num(sum)}; the server's score is ${num(m.score)}`}</td></tr>
    </tbody>
  </table>
  <div class="scorebar" aria-hidden="true">${bar}</div>`;
}

function renderMemory(m, i, weights) {
  const meta = [
    m.kind && `<span class="chip kind">${escapeHtml(m.kind)}</span>`,
    m.agent_id && `agent <code>${escapeHtml(m.agent_id)}</code>`,
    m.subject_id && `subject <code>${escapeHtml(m.subject_id)}</code>`,
    m.session_id && `session <code>${escapeHtml(m.session_id)}</code>`,
    m.tokens != null && `${m.tokens} tokens`,
    m.created_at && `created ${escapeHtml(new Date(m.created_at).toLocaleString())}`,
    m.updated_at && m.updated_at !== m.created_at && `updated ${escapeHtml(new Date(m.updated_at).toLocaleString())}`,
  ].filter(Boolean);
  const metadata =
    m.metadata && typeof m.metadata === 'object' && Object.keys(m.metadata).length
      ? `<details><summary>metadata</summary><pre>${escapeHtml(JSON.stringify(m.metadata, null, 2))}</pre></details>`
      : '';
  return `<li class="memory" data-testid="memory" data-id="${escapeHtml(m.id)}" data-score="${m.score}">
    <div class="memory-head"><span class="rank">${i + 1}</span><p class="content">${escapeHtml(m.content)}</p>
      <span class="score" title="score" data-testid="memory-score">${num(m.score)}</span></div>
    <div class="memory-meta">${meta.join(' · ')}</div>
    ${breakdown(m, weights)}
    ${metadata}
  </li>`;
}

export function setupMemories() {
  const form = $('memory-form');
  const memKey = $('mem-key');
  memKey.value = getMemoryKey();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const errorBox = $('memory-error');
    const summary = $('memory-summary');
    const list = $('memory-results');
    const weights = {
      recency: numberOr($('mem-w-recency'), 0.1),
      importance: numberOr($('mem-w-importance'), 0.1),
    };
    const body = {
      query: $('mem-query').value,
      agent_id: $('mem-agent').value.trim() || undefined,
      mode: $('mem-mode').value,
      top_k: numberOr($('mem-topk'), 10),
      token_budget: numberOr($('mem-budget'), undefined),
    };
    if (weights.recency !== 0.1 || weights.importance !== 0.1) body.weights = weights;
    const key = memKey.value.trim().replace(/^Bearer\s+/i, '');
    setMemoryKey(key);
    const mine = ++seq;
    errorBox.hidden = true;
    summary.textContent = 'Searching…';
    form.dataset.state = 'loading';
    try {
      const answer = await api('/v1/memories/search', { method: 'POST', body, key: key || getKey() });
      if (mine !== seq) return;
      const ms = answer.memories || [];
      const budget = body.token_budget != null ? ` of ${body.token_budget}` : '';
      summary.innerHTML =
        `<strong>${ms.length}</strong> ${ms.length === 1 ? 'memory' : 'memories'} · ${answer.tokens_used ?? '?'} tokens used${budget}` +
        (answer.took_ms != null ? ` · ${num(answer.took_ms, 1)} ms` : '') +
        (answer.source ? ` · from ${escapeHtml(answer.source)}` : '');
      list.innerHTML = ms.map((m, i) => renderMemory(m, i, weights)).join('');
      form.dataset.state = 'ok';
    } catch (err0) {
      if (mine !== seq) return;
      const err = findApiError(err0) || err0;
      list.innerHTML = '';
      summary.textContent = '';
      errorBox.hidden = false;
      form.dataset.state = 'error';
      if (err.status === 403) {
        errorBox.textContent = `This key may not search memories: ${err.message}. Use an agent key (or a write or admin key) in “Key for memories”; a search key only searches contacts.`;
      } else if (err.status === 401) {
        errorBox.textContent = `This key was refused: ${err.message}`;
      } else if (err.status === 429) {
        errorBox.textContent = `Rate-limited: retry in ${err.retryAfter ?? 1} s`;
      } else {
        errorBox.textContent = `Memory search failed (${err.status || 'network'}): ${err.message}`;
      }
    }
  });
}
