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
    add: &mut impl FnMut(&tantivy::postings::TermInfo, f32) -> tantivy::Result<()>,
) -> tantivy::Result<()> {
    while stream.advance() {
        let score = if stream.key() == word {
            kind::EXACT
        } else {
            prefix_kind
        };
        add(stream.value(), score)?;
    }
    Ok(())
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

impl Query for FieldMatch {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for FieldMatch {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inverted = reader.inverted_index(self.field)?;
        let dict = inverted.terms();
        let mut levels = Levels::new(reader.max_doc());
        let mut add = |info: &tantivy::postings::TermInfo, score: f32| -> tantivy::Result<()> {
            let mut postings =
                inverted.read_block_postings_from_terminfo(info, IndexRecordOption::Basic)?;
            loop {
                let docs = postings.docs();
                if docs.is_empty() {
                    break;
                }
                levels.add(docs, score);
                postings.advance();
            }
            Ok(())
        };
        let w = &self.word;
        let prefix = w.prefix && self.prefix;
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
                    add(stream.value(), score)?;
                }
            }
            exact_done = true;
            prefix_done = by_prefix;
        }
        if prefix && !prefix_done {
            let word = w.word.as_bytes();
            if self.pieces {
                let stream = dict.search(PiecePrefix(word)).into_stream()?;
                each_prefixed(stream, word, w.prefix_kind, &mut add)?;
            } else {
                let mut range = dict.range().ge(word);
                if let Some(end) = prefix_end(word) {
                    range = range.lt(end);
                }
                each_prefixed(range.into_stream()?, word, w.prefix_kind, &mut add)?;
            }
            exact_done = true;
        }
        if !exact_done && let Some(info) = dict.get(w.word.as_bytes())? {
            add(&info, kind::EXACT)?;
        }
        for (alt, score) in &w.alternatives {
            if let Some(info) = dict.get(alt.as_bytes())? {
                add(&info, *score)?;
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
    fn new(max_doc: u32) -> Self {
        Self {
            max_doc,
            sparse: Vec::new(),
            dense: None,
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
