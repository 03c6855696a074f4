//! The vector data of the memory and ANN benches: clustered unit vectors
//! (seeded) and their exact neighbours.

use indexer::vectors::normalize;
use rand::Rng;
use rand::rngs::StdRng;

pub const DIM: usize = 384;
pub const CLUSTERS: usize = 1_000;

pub fn unit(rng: &mut StdRng) -> Vec<f32> {
    normalize((0..DIM).map(|_| rng.random::<f32>() - 0.5).collect()).expect("non-zero")
}

/// `n` points around `CLUSTERS` centres: what embeddings of related texts
/// look like (neighbours are close, clusters far apart).
pub fn clustered(rng: &mut StdRng, centres: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..centres.len())];
            normalize(
                c.iter()
                    .map(|x| x + (rng.random::<f32>() - 0.5) * 0.15)
                    .collect(),
            )
            .expect("non-zero")
        })
        .collect()
}

/// The exact top 10 of each query (by dot product).
pub fn truth(vectors: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<usize>> {
    use rayon::prelude::*;
    queries
        .par_iter()
        .map(|q| {
            let mut d: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (-v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i))
                .collect();
            d.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
            d.truncate(10);
            d.into_iter().map(|x| x.1).collect()
        })
        .collect()
}
