//! Global ordinals: one number per distinct value of a string fast field
//! across the segments of a searcher, in the values' byte order — what
//! Elasticsearch calls global ordinals and Lucene an `OrdinalMap`.
//!
//! A segment numbers its values itself; comparing or merging them across
//! segments means reading the values. Mapped once to global numbers, a sort
//! by a text field compares numbers, and facet counts of every segment add
//! up in one array of which only the winners' values are ever read.
//!
//! Segments never change, so the map of a set of segments holds until the
//! set changes (a commit that adds or merges segments; deletes do not touch
//! it): built on first use and kept in a small cache keyed by the field and
//! the segments.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use tantivy::Searcher;
use tantivy::columnar::StrColumn;
use tantivy::index::SegmentId;

/// How many (field, segment set) maps are kept: every facet and sort field
/// of a few recent searchers.
const CACHED: usize = 64;

/// The global ordinals of one field over one searcher's segments.
pub struct GlobalOrds {
    /// Per segment (in the searcher's order), the global ordinal of each of
    /// its ordinals.
    pub per_segment: Vec<Vec<u32>>,
    /// Per global ordinal, a segment and ordinal holding its value.
    holders: Vec<(u32, u64)>,
    columns: Vec<Option<StrColumn>>,
}

type Cache = Mutex<lru::LruCache<(String, Vec<SegmentId>), Arc<GlobalOrds>>>;

impl GlobalOrds {
    /// The global ordinals of `field` over `searcher`'s segments, from the
    /// cache or built.
    pub fn of(searcher: &Searcher, field: &str) -> tantivy::Result<Arc<GlobalOrds>> {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(|| {
            Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHED).unwrap_or(NonZeroUsize::MIN),
            ))
        });
        let key = (
            field.to_owned(),
            searcher
                .segment_readers()
                .iter()
                .map(|s| s.segment_id())
                .collect::<Vec<_>>(),
        );
        if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(hit.clone());
        }
        // built outside the lock: a race builds it twice, never blocks
        let built = Arc::new(Self::build(searcher, field)?);
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, built.clone());
        Ok(built)
    }

    /// A k-way merge of the segments' value dictionaries.
    fn build(searcher: &Searcher, field: &str) -> tantivy::Result<GlobalOrds> {
        let columns: Vec<Option<StrColumn>> = searcher
            .segment_readers()
            .iter()
            .map(|s| s.fast_fields().str(field))
            .collect::<tantivy::Result<_>>()?;
        let mut per_segment: Vec<Vec<u32>> = columns
            .iter()
            .map(|c| vec![0; c.as_ref().map_or(0, |c| c.num_terms())])
            .collect();
        let mut streams = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            if let Some(c) = c {
                let mut s = c.dictionary().stream()?;
                if s.advance() {
                    streams.push((i, s));
                }
            }
        }
        let mut holders: Vec<(u32, u64)> = Vec::new();
        let mut prev: Vec<u8> = Vec::new();
        while !streams.is_empty() {
            // few segments: the smallest head by a linear scan
            let mut min = 0;
            for j in 1..streams.len() {
                if streams[j].1.key() < streams[min].1.key() {
                    min = j;
                }
            }
            let (seg, stream) = &mut streams[min];
            let key = stream.key();
            if holders.is_empty() || key != prev.as_slice() {
                prev.clear();
                prev.extend_from_slice(key);
                holders.push((*seg as u32, stream.term_ord()));
            }
            per_segment[*seg][stream.term_ord() as usize] = (holders.len() - 1) as u32;
            if !stream.advance() {
                streams.swap_remove(min);
            }
        }
        Ok(GlobalOrds {
            per_segment,
            holders,
            columns,
        })
    }

    /// The number of distinct values.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// The value of a global ordinal.
    pub fn value(&self, ord: u32, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        let (seg, local) = self.holders[ord as usize];
        if let Some(column) = &self.columns[seg as usize] {
            column.dictionary().ord_to_term(local, out)?;
        }
        Ok(())
    }

    /// Where `value` sorts: the global ordinal of the first value not below
    /// it, and whether that value is `value` itself.
    pub fn position(&self, value: &[u8]) -> std::io::Result<(u32, bool)> {
        let (mut lo, mut hi) = (0usize, self.len());
        let mut buf = Vec::new();
        while lo < hi {
            let mid = (lo + hi) / 2;
            self.value(mid as u32, &mut buf)?;
            if buf.as_slice() < value {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let found = lo < self.len() && {
            self.value(lo as u32, &mut buf)?;
            buf == value
        };
        Ok((lo as u32, found))
    }
}

/// Bytes of per-document ordinals kept across searches (see [`DocOrds`]).
const DOC_ORDS_BUDGET: usize = 256 << 20;

/// A string fast field of one segment as plain arrays: each document's
/// ordinal (or none), two bytes a document when the segment has under
/// 65,535 values, else four; a multi-valued field as offsets and ordinals —
/// Lucene's field cache. Counting a facet
/// then costs one load a document instead of a walk through the column's
/// optional index and bit-packed values. Segments never change, so an
/// array holds for the segment's life; the cache keeps the recently used
/// ones within [`DOC_ORDS_BUDGET`].
pub enum DocOrds {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
    /// A multi-valued field: document `d`'s ordinals are
    /// `ords[starts[d]..starts[d + 1]]`.
    Multi {
        starts: Vec<u32>,
        ords: Vec<u32>,
    },
}

impl DocOrds {
    const NONE16: u16 = u16::MAX;
    const NONE32: u32 = u32::MAX;

    /// Adds one to `counts[ordinal]` for each of `docs` that has a value.
    pub fn count(&self, docs: &[tantivy::DocId], counts: &mut [u32]) {
        match self {
            DocOrds::Narrow(ords) => {
                for &d in docs {
                    let o = ords[d as usize];
                    if o != Self::NONE16 {
                        counts[o as usize] += 1;
                    }
                }
            }
            DocOrds::Wide(ords) => {
                for &d in docs {
                    let o = ords[d as usize];
                    if o != Self::NONE32 {
                        counts[o as usize] += 1;
                    }
                }
            }
            DocOrds::Multi { starts, ords } => {
                for &d in docs {
                    let d = d as usize;
                    for &o in &ords[starts[d] as usize..starts[d + 1] as usize] {
                        counts[o as usize] += 1;
                    }
                }
            }
        }
    }

    /// A document's (first) ordinal.
    pub fn first(&self, doc: tantivy::DocId) -> Option<u32> {
        let d = doc as usize;
        match self {
            DocOrds::Narrow(ords) => Some(ords[d]).filter(|o| *o != Self::NONE16).map(u32::from),
            DocOrds::Wide(ords) => Some(ords[d]).filter(|o| *o != Self::NONE32),
            DocOrds::Multi { starts, ords } => {
                (starts[d] < starts[d + 1]).then(|| ords[starts[d] as usize])
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            DocOrds::Narrow(v) => v.len() * 2,
            DocOrds::Wide(v) => v.len() * 4,
            DocOrds::Multi { starts, ords } => (starts.len() + ords.len()) * 4,
        }
    }

    /// The arrays of `field` (its `column`) in `reader`'s segment, from
    /// the cache or built.
    pub fn of(reader: &tantivy::SegmentReader, column: &StrColumn, field: &str) -> Arc<DocOrds> {
        use tantivy::columnar::Cardinality;
        static CACHE: OnceLock<Mutex<DocOrdsCache>> = OnceLock::new();
        let ords = column.ords();
        let cache = CACHE.get_or_init(|| {
            Mutex::new(DocOrdsCache {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
            })
        });
        let key = (reader.segment_id(), field.to_owned());
        if let Some(hit) = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .get(&key)
        {
            return hit.clone();
        }
        let max_doc = reader.max_doc();
        let built = Arc::new(if ords.get_cardinality() == Cardinality::Multivalued {
            let mut starts = Vec::with_capacity(max_doc as usize + 1);
            let mut all = Vec::new();
            starts.push(0);
            for doc in 0..max_doc {
                all.extend(ords.values_for_doc(doc).map(|o| o as u32));
                starts.push(all.len() as u32);
            }
            DocOrds::Multi { starts, ords: all }
        } else {
            let docs: Vec<u32> = (0..max_doc).collect();
            let mut vals = vec![None; docs.len()];
            ords.first_vals(&docs, &mut vals);
            if column.num_terms() < usize::from(Self::NONE16) {
                DocOrds::Narrow(
                    vals.iter()
                        .map(|v| v.map_or(Self::NONE16, |o| o as u16))
                        .collect(),
                )
            } else {
                DocOrds::Wide(
                    vals.iter()
                        .map(|v| v.map_or(Self::NONE32, |o| o as u32))
                        .collect(),
                )
            }
        });
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        c.bytes += built.bytes();
        if let Some(old) = c.entries.put(key, built.clone()) {
            c.bytes -= old.bytes();
        }
        while c.bytes > DOC_ORDS_BUDGET {
            match c.entries.pop_lru() {
                Some((_, old)) => c.bytes -= old.bytes(),
                None => break,
            }
        }
        built
    }
}

struct DocOrdsCache {
    entries: lru::LruCache<(SegmentId, String), Arc<DocOrds>>,
    bytes: usize,
}
