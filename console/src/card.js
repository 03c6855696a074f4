// The contact card: GET /v1/contacts/{id} in a modal dialog.

import { api, escapeHtml, findApiError } from './api.js';

const FIELDS = [
  ['title', 'Title'],
  ['emails', 'Emails'],
  ['phones', 'Phones'],
  ['company_name', 'Company'],
  ['city', 'City'],
  ['region', 'Region'],
  ['country', 'Country'],
  ['lifecycle_stage', 'Lifecycle stage'],
  ['owner_id', 'Owner'],
  ['tags', 'Tags'],
  ['notes', 'Notes'],
  ['external_id', 'External id'],
  ['company_id', 'Company id'],
  ['id', 'Id'],
  ['created_at', 'Created'],
  ['updated_at', 'Updated'],
];

let wired = false;
let seq = 0;

function value(v) {
  if (v == null || v === '' || (Array.isArray(v) && v.length === 0)) return '<span class="muted">—</span>';
  if (Array.isArray(v)) return v.map((x) => `<span class="chip">${escapeHtml(x)}</span>`).join(' ');
  if (typeof v === 'object') return `<code>${escapeHtml(JSON.stringify(v))}</code>`;
  return escapeHtml(v);
}

export async function openContactCard(id) {
  const dialog = document.getElementById('contact-card');
  const title = document.getElementById('card-title');
  const body = document.getElementById('card-body');
  if (!wired) {
    wired = true;
    document.getElementById('card-close').addEventListener('click', () => dialog.close());
    dialog.addEventListener('click', (e) => {
      if (e.target === dialog) dialog.close();
    });
  }
  const mine = ++seq;
  title.textContent = 'Contact';
  body.innerHTML = '<p class="muted">Loading…</p>';
  dialog.dataset.id = id;
  dialog.dataset.state = 'loading';
  if (!dialog.open) dialog.showModal();
  try {
    const c = await api(`/v1/contacts/${encodeURIComponent(id)}`);
    if (mine !== seq) return;
    const contact = c && c.contact && !c.id ? c.contact : c;
    title.textContent = `${contact.first_name ?? ''} ${contact.last_name ?? ''}`.trim() || '(no name)';
    const rows = FIELDS.filter(([f]) => f in contact).map(
      ([f, label]) => `<dt>${label}</dt><dd data-field="${f}">${value(contact[f])}</dd>`,
    );
    const custom =
      contact.custom && Object.keys(contact.custom).length
        ? `<dt>Custom</dt><dd data-field="custom">${value(contact.custom)}</dd>`
        : '';
    body.innerHTML = `<dl class="card-fields">${rows.join('')}${custom}</dl>`;
    dialog.dataset.state = 'ok';
  } catch (e) {
    if (mine !== seq) return;
    const err = findApiError(e) || e;
    const refused = err.status === 401 || err.status === 403;
    body.innerHTML = `<p class="error" role="alert">${escapeHtml(refused ? `This key was refused: ${err.message}` : `Could not load the contact (${err.status || 'network'}): ${err.message}`)}</p>`;
    dialog.dataset.state = 'error';
  }
}
