//! Every match of a query, in the request's order, and any window of it.
//!
//! One pass over the matching documents reads each one's sort key from a
//! fast field into flat vectors (and counts facets on the way); the window
//! `[offset, offset + limit)` is then found by two linear-time selections
//! over the keys alone, and only the matches whose key falls between the
//! window's first and last key get their tie-break read and are sorted. A
//! window at offset 400,000 costs about what the first does — nothing is
//! collected into a heap, and `total` is exact because every match is
//! visited.
//!
//! Orders are total: by the sort key, then by the id's first 8 bytes
//! ([`schema::index::id_key`]), then by address. String keys compare across
//! segments through a rank merged from the segments' fast-field
//! dictionaries (folded values, see [`schema::analysis::sort_key`]); a
//! document without the value sorts last either way.

use std::cmp::Ordering;

use std::sync::Arc;

use tantivy::query::{EnableScoring, Query};
use tantivy::{DocAddress, DocId, Score, Searcher};

use super::ordinals::{DocOrds, GlobalOrds};

/// The order of a result list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKind {
    Relevance,
    /// A date fast field.
    Date(&'static str),
    /// A string fast field of sort keys.
    Text(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub kind: SortKind,
    pub desc: bool,
}

/// A match and where it sorts.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub key: u64,
    pub tie: u64,
    pub seg: u32,
    pub doc: DocId,
    pub score: Score,
}

impl Row {
    fn cmp(&self, other: &Row) -> Ordering {
        (self.key, self.tie, self.seg, self.doc).cmp(&(other.key, other.tie, other.seg, other.doc))
    }

    pub fn address(&self) -> DocAddress {
        DocAddress::new(self.seg, self.doc)
    }
}

/// A sort position to continue after (`search_after`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterKey {
    Score(f32),
    /// Microseconds since the epoch.
    Date(i64),
    /// A sort key, or none (the documents without the field).
    Text(Option<String>),
}

/// Rows strictly after this key are kept; `tie: None` keeps rows whose key
/// equals `key` as well.
#[derive(Debug, Clone, Copy)]
struct Threshold {
    key: u64,
    tie: Option<u64>,
}

impl Threshold {
    fn passes(&self, key: u64, tie: u64) -> bool {
        key > self.key || (key == self.key && self.tie.is_none_or(|t| tie > t))
    }
}

const MISSING: u64 = u64::MAX;

fn score_key(score: Score) -> u64 {
    // scores are never negative, where the bits of an f32 sort as it does
    u64::from(u32::MAX - score.max(0.0).to_bits())
}

fn date_key(micros: i64, desc: bool) -> u64 {
    let k = (micros as u64) ^ (1 << 63);
    if desc { !k } else { k }
}

fn rank_key(rank: u32, desc: bool) -> u64 {
    if desc {
        u64::from(u32::MAX - rank)
    } else {
        u64::from(rank)
    }
}

/// Counts of one facet over the documents of a pass.
pub struct FacetCounter {
    pub field: &'static str,
    /// Per segment, a count per term ordinal.
    counts: Vec<Vec<u32>>,
    /// Per segment, each document's ordinals (none: no such column).
    doc_ords: Vec<Option<Arc<DocOrds>>>,
    ords: Arc<GlobalOrds>,
}

impl FacetCounter {
    pub fn new(searcher: &Searcher, field: &'static str) -> tantivy::Result<Self> {
        let mut doc_ords = Vec::new();
        let mut counts = Vec::new();
        for seg in searcher.segment_readers() {
            let column = seg.fast_fields().str(field)?;
            counts.push(vec![0; column.as_ref().map_or(0, |c| c.num_terms())]);
            doc_ords.push(column.map(|c| DocOrds::of(seg, &c, field)));
        }
        Ok(Self {
            field,
            counts,
            doc_ords,
            ords: GlobalOrds::of(searcher, field)?,
        })
    }

    fn count(&mut self, seg: usize, docs: &[DocId]) {
        if let Some(ords) = &self.doc_ords[seg] {
            ords.count(docs, &mut self.counts[seg]);
        }
    }

    /// The `size` values with the most documents (ties by value), with
    /// their exact counts: the segments' counts added up by global ordinal,
    /// and only the winners' values read.
    pub fn top(&self, size: usize) -> tantivy::Result<Vec<(String, u64)>> {
        let mut total = vec![0u64; self.ords.len()];
        for (map, counts) in self.ords.per_segment.iter().zip(&self.counts) {
            for (ord, &c) in counts.iter().enumerate() {
                if c > 0 {
                    total[map[ord] as usize] += u64::from(c);
                }
            }
        }
        // global ordinals are in value order: ties by value are ties by ordinal
        let mut best: Vec<(u64, u32)> = total
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(o, c)| (*c, o as u32))
            .collect();
        let by = |a: &(u64, u32), b: &(u64, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if best.len() > size && size > 0 {
            best.select_nth_unstable_by(size - 1, by);
        }
        best.truncate(size);
        best.sort_unstable_by(by);
        let mut buf = Vec::new();
        best.into_iter()
            .map(|(count, ord)| {
                self.ords.value(ord, &mut buf)?;
                Ok((String::from_utf8_lossy(&buf).into_owned(), count))
            })
            .collect()
    }
}

/// The matching live documents of each segment, with their scores.
fn for_each_segment(
    searcher: &Searcher,
    query: &dyn Query,
    scoring: bool,
    mut f: impl FnMut(usize, &tantivy::SegmentReader, &[DocId], &[Score]) -> tantivy::Result<()>,
) -> tantivy::Result<()> {
    let weight = query.weight(if scoring {
        EnableScoring::enabled_from_searcher(searcher)
    } else {
        EnableScoring::disabled_from_searcher(searcher)
    })?;
    let mut docs: Vec<DocId> = Vec::new();
    let mut scores: Vec<Score> = Vec::new();
    for (seg_ord, seg) in searcher.segment_readers().iter().enumerate() {
        docs.clear();
        scores.clear();
        let alive = seg.alive_bitset();
        if scoring {
            weight.for_each(seg, &mut |doc, score| {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    docs.push(doc);
                    scores.push(score);
                }
            })?;
        } else {
            weight.for_each_no_score(seg, &mut |block| {
                docs.extend(
                    block
                        .iter()
                        .filter(|d| alive.is_none_or(|a| a.is_alive(**d))),
                );
            })?;
            scores.resize(docs.len(), 0.0);
        }
        f(seg_ord, seg, &docs, &scores)?;
    }
    Ok(())
}

/// The number of matches of `query`, counting facets on the way.
pub fn count(
    searcher: &Searcher,
    query: &dyn Query,
    facets: &mut [&mut FacetCounter],
) -> tantivy::Result<usize> {
    let mut total = 0;
    for_each_segment(searcher, query, false, |seg_ord, _, docs, _| {
        total += docs.len();
        for f in facets.iter_mut() {
            f.count(seg_ord, docs);
        }
        Ok(())
    })?;
    Ok(total)
}

/// The matches of one segment: documents and their sort keys (and scores).
struct SegmentMatches {
    seg: u32,
    docs: Vec<DocId>,
    keys: Vec<u64>,
    scores: Vec<Score>,
}

/// Every match of a pass, in no order, with the sort key of each.
#[derive(Default)]
pub struct Matches {
    segments: Vec<SegmentMatches>,
    len: usize,
}

impl Matches {
    /// The number of matches kept (after the cursor, when there is one).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Every match of `query`: its sort keys (after `after`, when given) and
/// the number of matches (all of them, `after` or not). Facets count every
/// match.
pub fn gather(
    searcher: &Searcher,
    query: &dyn Query,
    sort: &Sort,
    after: Option<(&AfterKey, u64)>,
    facets: &mut [&mut FacetCounter],
) -> tantivy::Result<(Matches, usize)> {
    let ranks = match sort.kind {
        SortKind::Text(field) => {
            let text_after = match after {
                Some((AfterKey::Text(Some(s)), _)) => Some(s.as_str()),
                _ => None,
            };
            Some(text_ranks(searcher, field, text_after)?)
        }
        SortKind::Relevance | SortKind::Date(_) => None,
    };
    let threshold = after.map(|(key, tie)| threshold(sort, key, tie, ranks.as_ref()));
    let mut out = Matches::default();
    let mut total = 0;
    let scoring = sort.kind == SortKind::Relevance;
    for_each_segment(searcher, query, scoring, |seg_ord, seg, docs, scores| {
        total += docs.len();
        for f in facets.iter_mut() {
            f.count(seg_ord, docs);
        }
        let fast = seg.fast_fields();
        let mut keys: Vec<u64> = Vec::with_capacity(docs.len());
        match (&sort.kind, &ranks) {
            (SortKind::Relevance, _) => keys.extend(scores.iter().map(|s| score_key(*s))),
            (SortKind::Date(field), _) => {
                // a block at a time: no buffer in proportion to the matches
                let column = fast.date(field)?;
                let mut vals = [None; 1024];
                for block in docs.chunks(vals.len()) {
                    let vals = &mut vals[..block.len()];
                    vals.fill(None);
                    column.first_vals(block, vals);
                    keys.extend(vals.iter().map(|v| {
                        v.map_or(MISSING, |d| date_key(d.into_timestamp_micros(), sort.desc))
                    }));
                }
            }
            (SortKind::Text(field), Some(ranks)) => match fast.str(field)? {
                Some(column) => {
                    let ords = DocOrds::of(seg, &column, field);
                    let seg_ranks = &ranks.ords.per_segment[seg_ord];
                    keys.extend(docs.iter().map(|&d| {
                        ords.first(d)
                            .map_or(MISSING, |ord| rank_key(seg_ranks[ord as usize], sort.desc))
                    }));
                }
                None => keys.resize(docs.len(), MISSING),
            },
            (SortKind::Text(_), None) => keys.resize(docs.len(), MISSING),
        }
        let mut m = SegmentMatches {
            seg: seg_ord as u32,
            docs: docs.to_vec(),
            keys,
            scores: if scoring { scores.to_vec() } else { Vec::new() },
        };
        if let Some(t) = threshold {
            // the tie-break is read only where the key equals the cursor's
            let ties = fast.u64("id_key")?;
            let mut at = 0;
            for i in 0..m.docs.len() {
                let key = m.keys[i];
                let tie = if key == t.key && t.tie.is_some() {
                    ties.first(m.docs[i]).unwrap_or(0)
                } else {
                    0
                };
                if t.passes(key, tie) {
                    m.docs[at] = m.docs[i];
                    m.keys[at] = key;
                    if scoring {
                        m.scores[at] = m.scores[i];
                    }
                    at += 1;
                }
            }
            m.docs.truncate(at);
            m.keys.truncate(at);
            m.scores.truncate(at.min(m.scores.len()));
        }
        out.len += m.docs.len();
        out.segments.push(m);
        Ok(())
    })?;
    Ok((out, total))
}

/// The window `[offset, offset + limit)` of the matches in order, in
/// linear time: two selections over the keys find the window's first and
/// last key; only the matches between them are read further and sorted.
pub fn window(
    searcher: &Searcher,
    matches: &Matches,
    offset: usize,
    limit: usize,
) -> tantivy::Result<Vec<Row>> {
    let ties = searcher
        .segment_readers()
        .iter()
        .map(|s| s.fast_fields().u64("id_key"))
        .collect::<tantivy::Result<Vec<_>>>()?;
    Ok(window_by(matches, offset, limit, |seg, doc| {
        ties[seg as usize].first(doc).unwrap_or(0)
    }))
}

/// [`window`] with the tie-break of a match from `tie`.
fn window_by(
    matches: &Matches,
    offset: usize,
    limit: usize,
    tie: impl Fn(u32, DocId) -> u64,
) -> Vec<Row> {
    let n = matches.len;
    if offset >= n || limit == 0 {
        return Vec::new();
    }
    let end = (offset + limit).min(n);
    let (lo, hi) = if offset == 0 && end == n {
        (0, u64::MAX)
    } else if end <= NEAR_TOP {
        keys_near_top(matches, offset, end)
    } else {
        // the window's last key; past the end, everything after `lo`
        let last = (end < n).then_some(end - 1);
        let (lo, hi) = keys_at(matches, offset, last);
        (lo, hi.unwrap_or(u64::MAX))
    };
    let mut below = 0;
    let mut rows = Vec::new();
    for m in &matches.segments {
        for (i, &key) in m.keys.iter().enumerate() {
            if key < lo {
                below += 1;
            } else if key <= hi {
                rows.push(Row {
                    key,
                    tie: tie(m.seg, m.docs[i]),
                    seg: m.seg,
                    doc: m.docs[i],
                    score: m.scores.get(i).copied().unwrap_or(0.0),
                });
            }
        }
    }
    let from = offset - below;
    let upto = from + (end - offset);
    // many rows can share the window's last key (every prefix match of a
    // word scores alike): sort only those that reach the window
    if rows.len() > upto {
        rows.select_nth_unstable_by(upto - 1, Row::cmp);
        rows.truncate(upto);
    }
    rows.sort_unstable_by(Row::cmp);
    rows.drain(..from);
    rows
}

/// Bits of a key that pick its bucket when a window's keys are looked for:
/// 4,096 counts (16 KiB), buckets of about a 4,096th of the matches.
const BUCKET_BITS: u32 = 12;

/// Windows ending this near the top are found with a heap of their keys.
const NEAR_TOP: usize = 1024;

/// The keys at ranks `offset` and `end - 1` for a window near the top: the
/// `end` smallest keys kept in a max-heap in one pass (most keys fail the
/// comparison with its top and are never inserted).
fn keys_near_top(matches: &Matches, offset: usize, end: usize) -> (u64, u64) {
    let mut heap: std::collections::BinaryHeap<u64> =
        std::collections::BinaryHeap::with_capacity(end + 1);
    for m in &matches.segments {
        for &k in &m.keys {
            if heap.len() < end {
                heap.push(k);
            } else if heap.peek().is_some_and(|top| k < *top) {
                heap.pop();
                heap.push(k);
            }
        }
    }
    let smallest = heap.into_sorted_vec();
    (smallest[offset], smallest[end - 1])
}

/// The keys at `first` and `second` (ranks from 0, `first <= second`)
/// among every match's key, in linear time and without a copy of them all:
/// a count of the keys by their top [`BUCKET_BITS`] bits (above the smallest key) finds
/// the buckets holding the ranks, and only those buckets are copied and
/// selected in.
fn keys_at(matches: &Matches, first: usize, second: Option<usize>) -> (u64, Option<u64>) {
    // keys of documents without the value sort last: out of the span
    let (mut min, mut max, mut present) = (u64::MAX, 0, 0usize);
    for m in &matches.segments {
        for &k in &m.keys {
            if k != MISSING {
                min = min.min(k);
                max = max.max(k);
                present += 1;
            }
        }
    }
    let shift = (64 - max.saturating_sub(min).leading_zeros()).saturating_sub(BUCKET_BITS);
    let bucket = |k: u64| ((k - min) >> shift) as usize;
    let mut counts = vec![0u32; if present == 0 { 0 } else { bucket(max) + 1 }];
    for m in &matches.segments {
        for &k in &m.keys {
            if k != MISSING {
                counts[bucket(k)] += 1;
            }
        }
    }
    // (bucket, ranks before it) of a rank among the present keys
    let find = |rank: usize| -> Option<(usize, usize)> {
        if rank >= present {
            return None;
        }
        let mut before = 0;
        for (b, &c) in counts.iter().enumerate() {
            let c = c as usize;
            if before + c > rank {
                return Some((b, before));
            }
            before += c;
        }
        None
    };
    let (at1, at2) = (find(first), second.and_then(find));
    let wanted = |b: usize| at1.is_some_and(|a| a.0 == b) || at2.is_some_and(|a| a.0 == b);
    let mut inside: Vec<u64> = Vec::new();
    for m in &matches.segments {
        inside.extend(
            m.keys
                .iter()
                .filter(|k| **k != MISSING && wanted(bucket(**k))),
        );
    }
    inside.sort_unstable();
    // the buckets' keys in order: a rank's key is its place after the
    // buckets before it that were copied too
    let key_of = |rank: usize, at: Option<(usize, usize)>| match at {
        None => MISSING,
        Some((b, before)) => {
            let skipped = match at1 {
                Some((b1, _)) if b1 < b => counts[b1] as usize,
                _ => 0,
            };
            inside[rank - before + skipped]
        }
    };
    let k1 = key_of(first, at1);
    let k2 = second.map(|s| key_of(s, at2));
    (k1, k2)
}

/// The cursor key of a row: what [`AfterKey`] continues after it.
pub fn after_key(searcher: &Searcher, sort: &Sort, row: &Row) -> tantivy::Result<AfterKey> {
    Ok(match sort.kind {
        SortKind::Relevance => AfterKey::Score(row.score),
        SortKind::Date(field) => {
            let seg = searcher.segment_reader(row.seg);
            let column = seg.fast_fields().date(field)?;
            AfterKey::Date(
                column
                    .first(row.doc)
                    .map_or(i64::MAX, |d| d.into_timestamp_micros()),
            )
        }
        SortKind::Text(field) => {
            let seg = searcher.segment_reader(row.seg);
            let value = match seg.fast_fields().str(field)? {
                Some(column) => match column.ords().first(row.doc) {
                    Some(ord) => {
                        let mut s = String::new();
                        column.ord_to_str(ord, &mut s)?;
                        Some(s)
                    }
                    None => None,
                },
                None => None,
            };
            AfterKey::Text(value)
        }
    })
}

fn threshold(sort: &Sort, after: &AfterKey, tie: u64, ranks: Option<&Ranks>) -> Threshold {
    let exact = |key| Threshold {
        key,
        tie: Some(tie),
    };
    match (after, ranks) {
        (AfterKey::Score(s), _) => exact(score_key(*s)),
        (AfterKey::Date(d), _) => exact(date_key(*d, sort.desc)),
        (AfterKey::Text(None), _) => exact(MISSING),
        (AfterKey::Text(Some(_)), Some(ranks)) => {
            let (rank, found) = ranks.after.unwrap_or((0, false));
            match (found, sort.desc) {
                (true, desc) => exact(rank_key(rank, desc)),
                // not in the index any more: everything from the next value on
                (false, false) => Threshold {
                    key: rank_key(rank, false),
                    tie: None,
                },
                (false, true) => Threshold {
                    key: rank_key(rank, true),
                    tie: Some(u64::MAX),
                },
            }
        }
        // a text cursor on another order: refused before it gets here
        (AfterKey::Text(Some(_)), None) => exact(0),
    }
}

/// The global ordinals of a string sort column and, for a cursor's value,
/// its rank and whether it is in the index.
struct Ranks {
    ords: Arc<GlobalOrds>,
    after: Option<(u32, bool)>,
}

fn text_ranks(searcher: &Searcher, field: &str, after: Option<&str>) -> tantivy::Result<Ranks> {
    let ords = GlobalOrds::of(searcher, field)?;
    let after = after.map(|a| ords.position(a.as_bytes())).transpose()?;
    Ok(Ranks { ords, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order() {
        assert!(score_key(2.0) < score_key(1.0) && score_key(0.5) < score_key(0.0));
        assert!(
            date_key(-5, false) < date_key(3, false)
                && date_key(3, false) < date_key(1 << 40, false)
        );
        assert!(date_key(-5, true) > date_key(3, true) && date_key(3, true) < MISSING);
        assert!(rank_key(1, false) < rank_key(2, false) && rank_key(1, true) > rank_key(2, true));
        assert!(rank_key(0, true) < MISSING);
    }

    #[test]
    fn windows_equal_a_full_sort() {
        // two segments, many equal keys, ties from the document number
        let tie = |seg: u32, doc: DocId| u64::from((doc * 31 + seg * 7) % 1000);
        // segment 2: keys far apart (dates), and documents without one
        let key = |seg: u32, i: u32| match seg {
            2 if i.is_multiple_of(5) => MISSING,
            2 => date_key(i64::from(i % 37) << 40, false),
            _ => u64::from((i * 7919 + seg) % 97),
        };
        let matches = Matches {
            segments: (0..3u32)
                .map(|seg| SegmentMatches {
                    seg,
                    docs: (0..500).collect(),
                    keys: (0..500u32).map(|i| key(seg, i)).collect(),
                    scores: Vec::new(),
                })
                .collect(),
            len: 1500,
        };
        let mut full: Vec<Row> = matches
            .segments
            .iter()
            .flat_map(|m| {
                m.docs.iter().zip(&m.keys).map(|(d, k)| Row {
                    key: *k,
                    tie: tie(m.seg, *d),
                    seg: m.seg,
                    doc: *d,
                    score: 0.0,
                })
            })
            .collect();
        full.sort_by(Row::cmp);
        for (offset, limit) in [
            (0, 10),
            (0, 1000),
            (123, 50),
            (990, 50),
            (999, 1),
            (500, 1),
            (1000, 5),
            (1150, 100),
            (1199, 2),
            (1400, 200),
            (1499, 1),
            (1500, 5),
        ] {
            let w: Vec<(u32, u32)> = window_by(&matches, offset, limit, tie)
                .iter()
                .map(|r| (r.seg, r.doc))
                .collect();
            let want: Vec<(u32, u32)> = full
                .iter()
                .skip(offset)
                .take(limit)
                .map(|r| (r.seg, r.doc))
                .collect();
            assert_eq!(w, want, "{offset} {limit}");
        }
        assert!(window_by(&matches, 5, 0, tie).is_empty());
        assert_eq!(full.len(), 1500);
    }
}
