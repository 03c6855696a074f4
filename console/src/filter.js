// The Meilisearch filter and sort that InstantSearch's helper state stands
// for, so the virtual list asks for exactly the rows InstantSearch counts.

function quote(value) {
  return `"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** `(lifecycle_stage = "lead" OR lifecycle_stage = "customer") AND country = "PL"` */
export function filterFromState(state) {
  const clauses = [];
  const disjunctive = state.disjunctiveFacetsRefinements || {};
  for (const facet of Object.keys(disjunctive).sort()) {
    const values = disjunctive[facet] || [];
    if (values.length === 0) continue;
    const ors = values.map((v) => `${facet} = ${quote(v)}`);
    clauses.push(ors.length === 1 ? ors[0] : `(${ors.join(' OR ')})`);
  }
  const conjunctive = state.facetsRefinements || {};
  for (const facet of Object.keys(conjunctive).sort()) {
    for (const v of conjunctive[facet] || []) clauses.push(`${facet} = ${quote(v)}`);
  }
  return clauses.join(' AND ');
}

/** `contacts:last_name:asc` (the sortBy widget's index name) → `["last_name:asc"]`. */
export function sortFromIndexName(indexName) {
  const at = (indexName || '').indexOf(':');
  if (at < 0) return undefined;
  const sort = indexName.slice(at + 1);
  return sort ? [sort] : undefined;
}

export function indexUidOf(indexName) {
  const at = (indexName || '').indexOf(':');
  return at < 0 ? indexName : indexName.slice(0, at);
}
