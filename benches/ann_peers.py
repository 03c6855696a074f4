"""The ANN peers of benches/ann.rs: hnswlib, faiss and usearch on the same
vectors, queries and exact truth, with the same graph parameters.

Run by `cargo bench --bench ann` with the venv of benches/ann_peers_setup.sh:

    ann_peers.py --base BASE.f32 --queries Q.f32 --truth TRUTH.u32 --dim 384 \
        --k 10 --m 16 --ef-construction 100 --efs 10,16,32 --threads 2 --out OUT.json

Files are raw little-endian (f32 rows of `dim`; u32 rows of `k`). Builds use
`--threads`; queries run one at a time on one thread, each timed alone.
Writes {"peers": [{"name", "package", "build_s", "build_rate",
"points": [{"ef", "recall", "qps", "p50_ms", "p99_ms"}]}]}.
"""

import argparse
import json
import sys
import time
from importlib.metadata import version

import numpy as np


def pct(sorted_ms, p):
    return sorted_ms[round((len(sorted_ms) - 1) * p)]


def sweep(search, queries, truth, k, efs, set_ef):
    points = []
    for ef in efs:
        set_ef(ef)
        for q in queries[:20]:
            search(q)
        lat, found = [], 0
        for q, t in zip(queries, truth):
            t0 = time.perf_counter()
            ids = search(q)
            lat.append((time.perf_counter() - t0) * 1e3)
            found += len(set(int(i) for i in ids[:k]) & set(int(i) for i in t))
        total_s = sum(lat) / 1e3
        lat.sort()
        points.append({
            "ef": ef,
            "recall": found / (k * len(queries)),
            "qps": len(queries) / total_s,
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
        })
    return points


def run_hnswlib(base, queries, truth, a):
    import hnswlib
    idx = hnswlib.Index(space="ip", dim=a.dim)
    idx.init_index(max_elements=len(base), ef_construction=a.ef_construction, M=a.m)
    idx.set_num_threads(a.threads)
    t0 = time.perf_counter()
    idx.add_items(base, np.arange(len(base)), num_threads=a.threads)
    build = time.perf_counter() - t0
    idx.set_num_threads(1)
    points = sweep(lambda q: idx.knn_query(q, k=a.k, num_threads=1)[0][0],
                   queries, truth, a.k, a.efs, idx.set_ef)
    return "chroma-hnswlib", build, points


def run_faiss(base, queries, truth, a):
    import faiss
    idx = faiss.IndexHNSWFlat(a.dim, a.m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = a.ef_construction
    faiss.omp_set_num_threads(a.threads)
    t0 = time.perf_counter()
    idx.add(base)
    build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)

    def set_ef(ef):
        idx.hnsw.efSearch = ef

    points = sweep(lambda q: idx.search(q.reshape(1, -1), a.k)[1][0],
                   queries, truth, a.k, a.efs, set_ef)
    return "faiss-cpu", build, points


def run_usearch(base, queries, truth, a):
    from usearch.index import Index
    idx = Index(ndim=a.dim, metric="ip", dtype="f32", connectivity=a.m,
                expansion_add=a.ef_construction, expansion_search=a.efs[0])
    t0 = time.perf_counter()
    idx.add(np.arange(len(base), dtype=np.uint64), base, threads=a.threads)
    build = time.perf_counter() - t0

    def set_ef(ef):
        idx.expansion_search = ef

    points = sweep(lambda q: idx.search(q, a.k, threads=1).keys,
                   queries, truth, a.k, a.efs, set_ef)
    return "usearch", build, points


PEERS = {"hnswlib": run_hnswlib, "faiss": run_faiss, "usearch": run_usearch}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--efs", default="10,16,24,32,48,64,96,128,192,256")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--libs", default="hnswlib,faiss,usearch")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.efs = [int(x) for x in a.efs.split(",")]
    base = np.ascontiguousarray(np.fromfile(a.base, dtype="<f4").reshape(-1, a.dim))
    queries = np.ascontiguousarray(np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim))
    truth = np.fromfile(a.truth, dtype="<u4").reshape(-1, a.k)
    out = {"n": len(base), "dim": a.dim, "nq": len(queries), "k": a.k,
           "threads": a.threads, "peers": []}
    for name in a.libs.split(","):
        try:
            package, build, points = PEERS[name](base, queries, truth, a)
            out["peers"].append({
                "name": name, "package": f"{package} {version(package)}",
                "build_s": build, "build_rate": len(base) / build, "points": points,
            })
            best = max(points, key=lambda x: x["recall"])
            print(f"{name}: build {build:.1f} s ({len(base) / build:.0f}/s); "
                  f"best recall {best['recall']:.3f} at ef {best['ef']}, {best['qps']:.0f} q/s",
                  flush=True)
        except Exception as e:  # one peer failing does not stop the others
            print(f"{name} failed: {e!r}", file=sys.stderr)
            out["peers"].append({"name": name, "error": repr(e)})
    with open(a.out, "w") as f:
        json.dump(out, f)
    if all("error" in x for x in out["peers"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
