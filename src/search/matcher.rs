//! One query word against one field: exact, by prefix, or within a few
//! edits, each match scored by its kind so exact beats prefix beats fuzzy.
//!
//! A single pass over the term dictionary (a Levenshtein automaton, a prefix
//! range, or plain lookups) classifies every matching term; the postings of
//! each kind go into one bitset, so a document scores the best kind it has.

use std::sync::Arc;

use schema::analysis::{edit_distance, prefix_distance};
use tantivy::query::{BitSetDocSet, DfaWrapper, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, TERMINATED, Term};

/// Scores of the kinds of match, relative to the field's weight.
pub mod kind {
    pub const EXACT: f32 = 1.0;
    /// The word being typed (the last of `q`) as the start of a term.
    pub const PREFIX: f32 = 0.75;
    pub const NICKNAME: f32 = 0.7;
    /// A whole word that matches nothing exactly, as the start of a name
    /// ("ann kowa": `ann` → Anna): below every whole-word match but fuzzy.
    pub const WORD_PREFIX: f32 = 0.6;
    /// One letter (or a letter and a dot) beside other words, as the
    /// initial of a name ("J Kowalski", "J. Kowalski").
    pub const INITIAL: f32 = 0.6;
    pub const FUZZY1: f32 = 0.5;
    pub const FUZZY2: f32 = 0.4;
    /// Multiplies a fuzzy score when the first letter differs.
    pub const FIRST_LETTER: f32 = 0.8;
}

/// How one word may match.
#[derive(Debug, Clone)]
pub struct WordMatch {
    /// The word as the index folds it.
    pub word: String,
    /// Other terms that match whole, with their kind score (a German
    /// transliteration, nicknames).
    pub alternatives: Vec<(String, f32)>,
    /// Terms starting with the word match (it is being typed, it is an
    /// initial, or it matches nothing whole).
    pub prefix: bool,
    /// The kind score of such a prefix match ([`kind::PREFIX`],
    /// [`kind::WORD_PREFIX`] or [`kind::INITIAL`]).
    pub prefix_kind: f32,
    /// Edits allowed (0, 1 or 2).
    pub distance: u8,
    /// Most terms the word expands to in one field by prefix or typos,
    /// beside its own spelling and alternatives: the best kind of match
    /// first, then the terms in most documents, counted over the whole
    /// index (every segment keeps the same terms, whatever the layout).
    pub max_expansions: usize,
}

impl WordMatch {
    /// The automaton of the fuzzy match, when there is one: of the word's
    /// prefixes within its edits (`prefix`: it is being typed) or of the
    /// whole word. Built once and shared by every field the word is looked
    /// for in.
    pub fn automaton(&self, prefix: bool) -> Option<Arc<Automaton>> {
        if self.distance == 0 {
            return None;
        }
        let term = Term::from_field_text(Field::from_field_id(0), &self.word);
        let query = if prefix {
            tantivy::query::FuzzyTermQuery::new_prefix(term, self.distance, true)
        } else {
            tantivy::query::FuzzyTermQuery::new(term, self.distance, true)
        };
        query
            .automaton()
            .ok()
            .map(|a| Arc::new(Automaton { dfa: a, prefix }))
    }

    /// The kind score of a term the word's automaton or prefix matched.
    fn classify(&self, term: &str, prefix: bool) -> Option<f32> {
        if term == self.word {
            return Some(kind::EXACT);
        }
        if prefix && term.starts_with(&self.word) {
            return Some(self.prefix_kind);
        }
        let max = u32::from(self.distance);
        let d = if prefix {
            prefix_distance(&self.word, term, max)
        } else {
            edit_distance(&self.word, term, max)
        };
        let score = match d {
            0 => kind::EXACT,
            1 => kind::FUZZY1,
            2 => kind::FUZZY2,
            _ => return None,
        };
        let same_first = term.chars().next() == self.word.chars().next();
        Some(if same_first {
            score
        } else {
            score * kind::FIRST_LETTER
        })
    }
}

/// A Levenshtein automaton (tantivy's, with transpositions).
pub struct Automaton {
    dfa: DfaWrapper,
    /// It matches the terms that start within the edits of the word.
    prefix: bool,
}

impl std::fmt::Debug for Automaton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Automaton")
    }
}

/// The query of one word in one field, scored `weight × kind`.
#[derive(Debug, Clone)]
pub struct FieldMatch {
    pub field: Field,
    pub weight: f32,
    pub word: Arc<WordMatch>,
    /// Whether the field takes fuzzy matches at all.
    pub fuzzy: bool,
    /// Whether the field takes prefix matches.
    pub prefix: bool,
    /// Prefix matches only among terms without email punctuation after the
    /// prefix: a plain word in the email tokens matches the pieces of
    /// addresses (`anna` → `anna`, `annamaria`), not every whole address and
    /// local part starting with it (thousands of one-document terms; the
    /// pieces find the same contacts).
    pub pieces: bool,
    pub automaton: Option<Arc<Automaton>>,
}

/// Every term of a prefix stream: the word itself exact, the others at
/// `prefix_kind`.
fn each_prefixed<A: tantivy_fst::Automaton>(
    mut stream: tantivy::termdict::TermStreamer<'_, A>,
    word: &[u8],
    prefix_kind: f32,
    push: &mut impl FnMut(&[u8], tantivy::postings::TermInfo, f32),
) {
    while stream.advance() {
        let score = if stream.key() == word {
            kind::EXACT
        } else {
            prefix_kind
        };
        push(stream.key(), stream.value().clone(), score);
    }
}

/// Terms starting with a prefix and holding none of `@ . _ - +` after it.
struct PiecePrefix<'a>(&'a [u8]);

impl tantivy_fst::Automaton for PiecePrefix<'_> {
    /// Bytes of the prefix matched so far; `None`: no match below.
    type State = Option<usize>;

    fn start(&self) -> Option<usize> {
        Some(0)
    }

    fn is_match(&self, state: &Option<usize>) -> bool {
        *state == Some(self.0.len())
    }

    fn can_match(&self, state: &Option<usize>) -> bool {
        state.is_some()
    }

    fn accept(&self, state: &Option<usize>, byte: u8) -> Option<usize> {
        let i = (*state)?;
        if i < self.0.len() {
            (self.0[i] == byte).then_some(i + 1)
        } else {
            (!b"@._-+".contains(&byte)).then_some(i)
        }
    }
}

impl FieldMatch {
    /// Whether this is a plain lookup: its word whole, or as a prefix, and
    /// alternatives — no typos, so whether it matches is cheap to tell.
    pub fn plain(&self) -> bool {
        self.automaton.is_none() || !self.fuzzy
    }

    /// Whether any segment's dictionary has a term this (plain) match
    /// takes; stops at the first.
    pub fn has_any_term(&self, searcher: &tantivy::Searcher) -> tantivy::Result<bool> {
        let w = &self.word;
        let word = w.word.as_bytes();
        for reader in searcher.segment_readers() {
            let inverted = reader.inverted_index(self.field)?;
            let dict = inverted.terms();
            if dict.get(word)?.is_some() {
                return Ok(true);
            }
            for (alt, _) in &w.alternatives {
                if dict.get(alt.as_bytes())?.is_some() {
                    return Ok(true);
                }
            }
            if w.prefix && self.prefix {
                let found = if self.pieces {
                    dict.search(PiecePrefix(word)).into_stream()?.advance()
                } else {
                    let mut range = dict.range().ge(word);
                    if let Some(end) = prefix_end(word) {
                        range = range.lt(end);
                    }
                    range.into_stream()?.advance()
                };
                if found {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Every term of one segment's dictionary the word matches here, with
    /// its kind score; `own`: whether it is the word itself or an
    /// alternative (never capped).
    fn segment_terms(&self, reader: &SegmentReader) -> tantivy::Result<SegmentTerms> {
        let inverted = reader.inverted_index(self.field)?;
        let dict = inverted.terms();
        let w = &self.word;
        let prefix = w.prefix && self.prefix;
        let mut out = SegmentTerms::default();
        let mut push = |term: &[u8], info: tantivy::postings::TermInfo, score: f32| {
            out.push(term == w.word.as_bytes(), term, info, score);
        };
        // the fuzzy pass finds the exact term too, and the prefixes when its
        // automaton is one of prefixes
        let mut exact_done = false;
        let mut prefix_done = false;
        if let (Some(automaton), true) = (&self.automaton, self.fuzzy) {
            let mut stream = dict.search(&automaton.dfa).into_stream()?;
            let by_prefix = prefix && automaton.prefix;
            while stream.advance() {
                let term = std::str::from_utf8(stream.key()).unwrap_or_default();
                // a prefix automaton in a field without prefixes: classify
                // as a whole word, which drops what only a prefix matched
                if let Some(score) = w.classify(term, by_prefix) {
                    push(stream.key(), stream.value().clone(), score);
                }
            }
            exact_done = true;
            prefix_done = by_prefix;
        }
        if prefix && !prefix_done {
            let word = w.word.as_bytes();
            if self.pieces {
                let stream = dict.search(PiecePrefix(word)).into_stream()?;
                each_prefixed(stream, word, w.prefix_kind, &mut push);
            } else {
                let mut range = dict.range().ge(word);
                if let Some(end) = prefix_end(word) {
                    range = range.lt(end);
                }
                each_prefixed(range.into_stream()?, word, w.prefix_kind, &mut push);
            }
            exact_done = true;
        }
        if !exact_done && let Some(info) = dict.get(w.word.as_bytes())? {
            push(w.word.as_bytes(), info, kind::EXACT);
        }
        for (alt, score) in &w.alternatives {
            if let Some(info) = dict.get(alt.as_bytes())? {
                out.push(true, alt.as_bytes(), info, *score);
            }
        }
        Ok(out)
    }
}

/// The terms a word matches in one segment; their bytes in one buffer (a
/// typed prefix can match thousands of terms: one allocation, not one each).
#[derive(Default)]
struct SegmentTerms {
    bytes: Vec<u8>,
    terms: Vec<Candidate>,
}

impl SegmentTerms {
    fn push(&mut self, own: bool, term: &[u8], info: tantivy::postings::TermInfo, score: f32) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(term);
        self.terms.push(Candidate {
            own,
            term: at..self.bytes.len(),
            info,
            score,
        });
    }

    fn term(&self, c: &Candidate) -> &[u8] {
        &self.bytes[c.term.clone()]
    }
}

/// A term a word matches in one segment.
struct Candidate {
    /// The word itself or one of its alternatives: never capped.
    own: bool,
    /// Where its bytes are in [`SegmentTerms::bytes`].
    term: std::ops::Range<usize>,
    info: tantivy::postings::TermInfo,
    score: f32,
}

/// Keeps, of every segment's candidates, the word's own terms and the
/// `max` best others over the whole index (kind score, then documents
/// summed over the segments, then the term).
fn cap_expansions(per_segment: &mut [SegmentTerms], max: usize) {
    let others: usize = per_segment
        .iter()
        .map(|s| s.terms.iter().filter(|c| !c.own).count())
        .sum();
    if others <= max {
        return;
    }
    let mut merged: std::collections::HashMap<&[u8], (f32, u64)> = Default::default();
    for seg in per_segment.iter() {
        for c in seg.terms.iter().filter(|c| !c.own) {
            let e = merged.entry(seg.term(c)).or_insert((c.score, 0));
            e.1 += u64::from(c.info.doc_freq);
        }
    }
    if merged.len() <= max {
        return;
    }
    let mut ranked: Vec<(&[u8], (f32, u64))> = merged.into_iter().collect();
    ranked.sort_unstable_by(|a, b| {
        b.1.0
            .total_cmp(&a.1.0)
            .then(b.1.1.cmp(&a.1.1))
            .then(a.0.cmp(b.0))
    });
    let kept: std::collections::HashSet<Vec<u8>> =
        ranked[..max].iter().map(|(t, _)| t.to_vec()).collect();
    for seg in per_segment.iter_mut() {
        let SegmentTerms { bytes, terms } = seg;
        terms.retain(|c| c.own || kept.contains(&bytes[c.term.clone()]));
    }
}

impl Query for FieldMatch {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let searcher = scoring.searcher().ok_or_else(|| {
            tantivy::TantivyError::InvalidArgument("a word query needs a searcher".into())
        })?;
        // the terms of every segment at once, so that the cap keeps the
        // same terms everywhere
        let readers = searcher.segment_readers();
        let per_segment: tantivy::Result<Vec<SegmentTerms>> =
            readers.iter().map(|r| self.segment_terms(r)).collect();
        let mut per_segment = per_segment?;
        cap_expansions(&mut per_segment, self.word.max_expansions);
        let terms = readers
            .iter()
            .zip(per_segment)
            .map(|(r, c)| {
                (
                    r.segment_id(),
                    c.terms.into_iter().map(|c| (c.info, c.score)).collect(),
                )
            })
            .collect();
        Ok(Box::new(FieldWeight {
            field: self.field,
            weight: self.weight,
            terms,
        }))
    }
}

/// A word in one field, its terms found: per segment, the term infos to
/// read and the score of each.
struct FieldWeight {
    field: Field,
    weight: f32,
    terms: Vec<(
        tantivy::index::SegmentId,
        Vec<(tantivy::postings::TermInfo, f32)>,
    )>,
}

impl Weight for FieldWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let id = reader.segment_id();
        let Some((_, terms)) = self.terms.iter().find(|(s, _)| *s == id) else {
            return Ok(Box::new(tantivy::query::EmptyScorer));
        };
        let inverted = reader.inverted_index(self.field)?;
        // dense from the start when the documents are known to be many
        let docs: u64 = terms.iter().map(|(i, _)| u64::from(i.doc_freq)).sum();
        let mut levels = Levels::new(reader.max_doc(), docs);
        for (info, score) in terms {
            let mut postings =
                inverted.read_block_postings_from_terminfo(info, IndexRecordOption::Basic)?;
            loop {
                let docs = postings.docs();
                if docs.is_empty() {
                    break;
                }
                levels.add(docs, *score);
                postings.advance();
            }
        }
        Ok(levels.scorer(self.weight * boost))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(Explanation::new("FieldMatch", scorer.score()))
    }
}

/// The smallest byte string greater than every string starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Documents by the best kind of match they have: a list of (document,
/// score) while the matches are few — nothing allocated in proportion to
/// the segment — and a bitset per score once they pass [`DENSE_SHARE`] of
/// it.
struct Levels {
    max_doc: u32,
    sparse: Vec<(DocId, f32)>,
    dense: Option<Dense>,
}

/// Matches past which [`Levels`] switch to bitsets: a share of the
/// segment's documents (1 / this).
const DENSE_SHARE: u32 = 32;

struct Dense {
    /// (score, docs), built on first use of each score.
    sets: Vec<(f32, BitSet)>,
    any: BitSet,
}

impl Dense {
    fn add(&mut self, max_doc: u32, docs: impl IntoIterator<Item = DocId>, score: f32) {
        let i = match self.sets.iter().position(|(s, _)| *s == score) {
            Some(i) => i,
            None => {
                self.sets.push((score, BitSet::with_max_value(max_doc)));
                self.sets.len() - 1
            }
        };
        let set = &mut self.sets[i].1;
        for doc in docs {
            set.insert(doc);
            self.any.insert(doc);
        }
    }
}

impl Levels {
    /// `expected`: how many (document, score) pairs will be added.
    fn new(max_doc: u32, expected: u64) -> Self {
        let dense = (expected * u64::from(DENSE_SHARE) > u64::from(max_doc)).then(|| Dense {
            sets: Vec::new(),
            any: BitSet::with_max_value(max_doc),
        });
        Self {
            max_doc,
            sparse: Vec::with_capacity(if dense.is_some() {
                0
            } else {
                expected as usize
            }),
            dense,
        }
    }

    fn add(&mut self, docs: &[DocId], score: f32) {
        if let Some(dense) = &mut self.dense {
            dense.add(self.max_doc, docs.iter().copied(), score);
            return;
        }
        self.sparse.extend(docs.iter().map(|&d| (d, score)));
        if self.sparse.len() as u64 * u64::from(DENSE_SHARE) > u64::from(self.max_doc) {
            let mut dense = Dense {
                sets: Vec::new(),
                any: BitSet::with_max_value(self.max_doc),
            };
            let pairs = std::mem::take(&mut self.sparse);
            let mut scores: Vec<f32> = pairs.iter().map(|p| p.1).collect();
            scores.sort_by(f32::total_cmp);
            scores.dedup();
            for s in scores {
                dense.add(
                    self.max_doc,
                    pairs.iter().filter(|p| p.1 == s).map(|p| p.0),
                    s,
                );
            }
            self.dense = Some(dense);
        }
    }

    fn scorer(self, weight: f32) -> Box<dyn Scorer> {
        match self.dense {
            Some(mut dense) => {
                dense.sets.sort_by(|a, b| b.0.total_cmp(&a.0));
                Box::new(LevelScorer {
                    any: BitSetDocSet::from(dense.any),
                    levels: dense.sets,
                    weight,
                })
            }
            None => {
                let mut docs = self.sparse;
                // each document once, at its best score
                docs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
                docs.dedup_by_key(|d| d.0);
                Box::new(ListScorer {
                    docs,
                    at: 0,
                    weight,
                })
            }
        }
    }
}

/// The documents of few matches, in order, with their scores.
struct ListScorer {
    docs: Vec<(DocId, f32)>,
    at: usize,
    weight: f32,
}

impl DocSet for ListScorer {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }
    fn seek(&mut self, target: DocId) -> DocId {
        let rest = &self.docs[self.at..];
        self.at += rest.partition_point(|d| d.0 < target);
        self.doc()
    }
    fn doc(&self) -> DocId {
        self.docs.get(self.at).map_or(TERMINATED, |d| d.0)
    }
    fn size_hint(&self) -> u32 {
        u32::try_from(self.docs.len() - self.at).unwrap_or(u32::MAX)
    }
}

impl Scorer for ListScorer {
    fn score(&mut self) -> Score {
        self.docs.get(self.at).map_or(0.0, |d| d.1 * self.weight)
    }
}

struct LevelScorer {
    any: BitSetDocSet,
    levels: Vec<(f32, BitSet)>,
    weight: f32,
}

impl DocSet for LevelScorer {
    fn advance(&mut self) -> DocId {
        self.any.advance()
    }
    fn seek(&mut self, target: DocId) -> DocId {
        self.any.seek(target)
    }
    fn doc(&self) -> DocId {
        self.any.doc()
    }
    fn size_hint(&self) -> u32 {
        self.any.size_hint()
    }
}

impl Scorer for LevelScorer {
    fn score(&mut self) -> Score {
        let doc = self.any.doc();
        self.levels
            .iter()
            .find(|(_, set)| set.contains(doc))
            .map_or(0.0, |(score, _)| score * self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::Count;
    use tantivy::schema::{STRING, Schema};
    use tantivy::{Index, IndexWriter, TantivyDocument};

    /// A prefix of "ann" capped at 2 terms over two segments: anna is in 7
    /// documents, anne in 5, anni in 3, annika in 2. Capped per segment,
    /// the first would keep anne and anni (5 + 3) and the second anna and
    /// annika (6 + 2); over the index, anna and anne everywhere.
    #[test]
    fn expansions_are_capped_by_documents_over_every_segment() {
        let mut builder = Schema::builder();
        let name = builder.add_text_field("name", STRING);
        let index = Index::create_in_ram(builder.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let segments: [&[(&str, usize)]; 2] = [
            &[("anna", 1), ("anne", 5), ("anni", 3), ("bob", 4)],
            &[("anna", 6), ("annika", 2), ("bob", 4)],
        ];
        for terms in segments {
            for (term, n) in terms {
                for _ in 0..*n {
                    let mut doc = TantivyDocument::new();
                    doc.add_text(name, term);
                    writer.add_document(doc).unwrap();
                }
            }
            writer.commit().unwrap();
        }
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.segment_readers().len(), 2);
        let count = |max_expansions: usize| {
            let query = FieldMatch {
                field: name,
                weight: 1.0,
                word: Arc::new(WordMatch {
                    word: "ann".into(),
                    alternatives: Vec::new(),
                    prefix: true,
                    prefix_kind: kind::PREFIX,
                    distance: 0,
                    max_expansions,
                }),
                fuzzy: false,
                prefix: true,
                pieces: false,
                automaton: None,
            };
            searcher.search(&query, &Count).unwrap()
        };
        assert_eq!(count(usize::MAX), 7 + 5 + 3 + 2);
        assert_eq!(count(2), 7 + 5);
        assert_eq!(count(1), 7);
    }
}
