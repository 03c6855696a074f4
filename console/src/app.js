// The crmsearch search console: InstantSearch.js over crmsearch's
// Meilisearch-compatible API (instant-meilisearch), a virtual list over the
// whole result set, autocomplete, contact cards, and agent memory search.

import instantsearch from 'instantsearch.js';
import { refinementList, sortBy, configure, clearRefinements } from 'instantsearch.js/es/widgets';
import { connectSearchBox } from 'instantsearch.js/es/connectors';
import { instantMeiliSearch } from '@meilisearch/instant-meilisearch';

import { api, getKey, setKey, meiliHttpClient, findApiError, escapeHtml } from './api.js';
import { filterFromState, sortFromIndexName, indexUidOf } from './filter.js';
import { VirtualList } from './virtual-list.js';
import { Autocomplete } from './autocomplete.js';
import { openContactCard } from './card.js';
import { setupMemories } from './memories.js';
import { showAlert, clearAlert, describeSearchError } from './alert.js';

const INDEX = 'contacts';
const PAGE = 50;
const FACETS = ['lifecycle_stage', 'country', 'tags', 'company_name'];

// Timings the browser tests read (not shown).
const probe = (window.__crmsearchConsole = { inputs: [], renders: [], windows: [] });

const $ = (id) => document.getElementById(id);

// ---- key ------------------------------------------------------------------
const keyInput = $('key-input');
const keyStatus = $('key-status');
function showKeyStatus() {
  const k = getKey();
  keyStatus.textContent = k ? `Using key ${k.slice(0, 8)}…` : 'No key yet: paste a search key';
  document.body.dataset.hasKey = String(Boolean(k));
}

// ---- the InstantSearch instance ---------------------------------------------
const { searchClient } = instantMeiliSearch(window.location.origin, () => getKey(), {
  httpClient: meiliHttpClient,
  finitePagination: true,
  placeholderSearch: true,
  keepZeroFacets: false,
});

const search = instantsearch({
  indexName: INDEX,
  searchClient,
  future: { preserveSharedStateOnUnmount: true },
});

let errorShown = false;
function setSearchError(e) {
  const err = findApiError(e) || e;
  errorShown = true;
  document.body.dataset.searchState = 'error';
  vlist.clear();
  $('stats').textContent = '';
  $('stats').dataset.total = '';
  autocomplete.close();
  const { text, retryIn } = describeSearchError(err);
  showAlert(text, { kind: err?.status === 429 ? 'warn' : 'error', retryIn, onRetry: () => refresh() });
}
function clearSearchError() {
  if (!errorShown) return;
  errorShown = false;
  document.body.dataset.searchState = 'ok';
  clearAlert();
}
search.on('error', ({ error }) => setSearchError(error));

function refresh() {
  searchClient.clearCache();
  clearAlert();
  errorShown = false;
  document.body.dataset.searchState = 'loading';
  if (!started) startSearch();
  else search.refresh();
}

// ---- virtual list -----------------------------------------------------------
const vlist = new VirtualList($('vlist'), {
  fetchWindow: ({ q, filter, sort, offset, limit }, signal) =>
    api(`/indexes/${INDEX}/search`, {
      method: 'POST',
      signal,
      body: {
        q,
        ...(filter ? { filter } : {}),
        offset,
        limit,
        ...(sort ? { sort } : {}),
        attributesToHighlight: ['*'],
        highlightPreTag: '__ais-highlight__',
        highlightPostTag: '__/ais-highlight__',
      },
    }),
  onOpen: (id) => openContactCard(id),
  onError: (e) => setSearchError(e),
  onWindow: (w) => probe.windows.push(w),
  onRendered: (r) => probe.renders.push(r),
});

// The widget that hands InstantSearch's answer (and the state it answered)
// to the virtual list and the totals.
const resultsWidget = {
  $$type: 'crmsearch.virtualList',
  init() {},
  render({ results, instantSearchInstance }) {
    if (!results || instantSearchInstance.status === 'error' || errorShown) return;
    const state = results._state;
    const q = state.query || '';
    const filter = filterFromState(state);
    const sort = sortFromIndexName(state.index);
    const key = JSON.stringify([indexUidOf(state.index), q, filter, sort || null]);
    const total = results.nbHits;
    const firstHits = results.page === 0 ? results.hits : [];
    vlist.setSource({ key, q, filter, sort, total }, firstHits);
    const stats = $('stats');
    stats.dataset.total = String(total);
    stats.textContent = `${total.toLocaleString('en-US')} ${total === 1 ? 'contact' : 'contacts'}` +
      (typeof results.processingTimeMS === 'number' ? ` · ${results.processingTimeMS} ms` : '');
    $('goto-row').max = String(Math.max(1, total));
  },
  dispose() {},
};

// Our own search box (a combobox with our autocomplete under it),
// refining InstantSearch's query on every keystroke.
const searchInput = $('search-input');
let refineQuery = () => {};
const searchBoxWidget = connectSearchBox(({ refine, query }, isFirst) => {
  refineQuery = refine;
  if (isFirst) return;
  if (document.activeElement !== searchInput && searchInput.value !== query) searchInput.value = query;
})({});
searchInput.addEventListener('input', () => {
  probe.inputs.push({ q: searchInput.value, t: performance.now() });
  refineQuery(searchInput.value);
  autocomplete.update(searchInput.value);
});

const facetWidgets = FACETS.map((attribute) =>
  refinementList({
    container: `#facet-${attribute}`,
    attribute,
    operator: 'or',
    limit: attribute === 'company_name' ? 8 : 10,
    showMore: true,
    showMoreLimit: 30,
    sortBy: ['count:desc', 'name:asc'],
    cssClasses: { root: `facet-list facet-${attribute}` },
  }),
);

search.addWidgets([
  configure({ hitsPerPage: PAGE, attributesToHighlight: ['*'] }),
  searchBoxWidget,
  sortBy({
    container: '#sort-by',
    items: [
      { value: INDEX, label: 'Relevance' },
      { value: `${INDEX}:last_name:asc`, label: 'Last name A→Z' },
      { value: `${INDEX}:last_name:desc`, label: 'Last name Z→A' },
      { value: `${INDEX}:first_name:asc`, label: 'First name A→Z' },
      { value: `${INDEX}:company_name:asc`, label: 'Company A→Z' },
      { value: `${INDEX}:created_at:desc`, label: 'Newest first' },
      { value: `${INDEX}:updated_at:desc`, label: 'Recently updated' },
    ],
    cssClasses: { select: 'sort-select' },
  }),
  ...facetWidgets,
  clearRefinements({ container: '#clear-refinements', templates: { resetLabel: () => 'Clear filters' } /* a function: a string template is compiled with new Function, which the server's CSP forbids */ }),
  resultsWidget,
]);

// A successful search after an error: the error goes.
let started = false;
search.on('render', () => {
  if (search.status !== 'error' && document.body.dataset.searchState !== 'error') {
    document.body.dataset.searchState = 'ok';
  }
});
const origSearch = searchClient.search.bind(searchClient);
searchClient.search = async (requests) => {
  const answer = await origSearch(requests);
  clearSearchError();
  return answer;
};

function startSearch() {
  if (started) return;
  started = true;
  search.start();
  // the label the sortBy widget's <select> needs
  const sel = document.querySelector('#sort-by select');
  if (sel) {
    sel.id = 'sort-select';
    sel.setAttribute('aria-label', 'Sort contacts');
    sel.dataset.testid = 'sort';
  }
}

// ---- autocomplete -------------------------------------------------------------
const autocomplete = new Autocomplete(searchInput, $('suggestions'), {
  fetch: (q, signal) => api(`/v1/contacts/autocomplete?q=${encodeURIComponent(q)}&limit=8`, { signal }),
  onPick: (s) => {
    if (s.kind === 'contact' && s.id) {
      openContactCard(s.id);
    } else if (s.kind === 'company') {
      searchInput.value = '';
      refineQuery('');
      const helper = search.helper;
      if (helper && !helper.state.isDisjunctiveFacetRefined('company_name', s.text)) {
        helper.addDisjunctiveFacetRefinement('company_name', s.text).search();
      }
    } else {
      searchInput.value = s.text;
      refineQuery(s.text);
    }
  },
});

// ---- go to row ----------------------------------------------------------------
$('goto-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const n = Number($('goto-row').value);
  if (Number.isFinite(n) && n >= 1) vlist.goToRow(n);
});

// ---- tabs -----------------------------------------------------------------------
const tabs = [$('tab-contacts'), $('tab-memories')];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute('aria-controls')).hidden = !on;
  }
}
tabs.forEach((t, i) => {
  t.addEventListener('click', () => selectTab(t));
  t.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
      const next = tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
      selectTab(next);
      next.focus();
    }
  });
});

// ---- key form ---------------------------------------------------------------------
$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const k = keyInput.value.trim().replace(/^Bearer\s+/i, '');
  if (!k) return;
  setKey(k);
  keyInput.value = '';
  showKeyStatus();
  vlist.clear();
  refresh();
});
$('key-forget').addEventListener('click', () => {
  setKey('');
  showKeyStatus();
  vlist.clear();
  searchClient.clearCache();
  $('stats').textContent = '';
  showAlert('Paste a search key to start searching.', { kind: 'info' });
});

setupMemories();
showKeyStatus();
if (getKey()) startSearch();
else showAlert('Paste a search key to start searching.', { kind: 'info' });

// escapeHtml is re-exported for the card and memories modules' sake
export { escapeHtml };
