#!/usr/bin/env python3
"""Memory and status codes under a hostile mix, against the real server.

`python3 benches/hostile.py` (after `cargo build --release --bin crmsearch`;
scripts/bench runs it). Env: HOSTILE_N=12000 requests, HOSTILE_CONC=32
connections, HOSTILE_BIN=target/release/crmsearch.

The server runs on its embedded defaults in target/bench-hostile (made
afresh), with rate limits off; 20 tenants. Every request is one a careless
or hostile client sends, in turn: bulk loads of 300 contacts with 2 KB
notes, searches of 1,000 rows with highlights and six facets of 100 values,
misspelled words up to 70 letters, ten-word queries, autocomplete of 1-3
letters, memory searches of 30 words with a 100,000-token budget, 1 MiB of
broken JSON, windows at random offsets up to 10^9, contacts with 60 KB
notes and 100 tags, memories of 500 words, stats, 50-query multi-searches
and whole-tenant exports. The server's RSS is sampled every second; after
the last answer it idles 10 s and is sampled again. Writes
target/bench-results/hostile.json (BENCHMARKS.md's section). Traffic goes to
127.0.0.1 only; the server is stopped at the end.
"""
import json
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import threading
import time

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(os.environ.get("HOSTILE_N", "12000"))
CONC = int(os.environ.get("HOSTILE_CONC", "32"))
BIN = os.environ.get("HOSTILE_BIN", os.path.join(ROOT, "target/release/crmsearch"))
DATA = os.path.join(ROOT, "target/bench-hostile")
MASTER = "hostile-bench-master-key-0123456789"
PORT = 7391

KINDS = [
    "bulk load, 300 contacts with 2 KB notes",
    "search: a word of 1-70 letters, 1,000 rows, highlights, 6 facets of 100",
    "autocomplete of 1-3 letters, 50 suggestions",
    "memory search: 30 words, top 100, 100,000-token budget",
    "1 MiB of broken JSON",
    "1,000 rows at an offset up to 10^9 by last name",
    "a contact with 60 KB of notes and 100 tags",
    "a memory of 500 words (embedded)",
    "stats, 100 values a facet",
    "ten misspelled words, 1,000 rows, 100 tags",
    "multi-search of 50 queries",
    "export of the whole tenant",
]


def req(method, path, key, body=None, ctype="application/json"):
    return benchlib.request(PORT, method, path, key, body, ctype)[:2]


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        s = f.read()
    field = lambda n: int([l for l in s.splitlines() if l.startswith(n)][0].split()[1]) / 1024
    return field("VmRSS:"), field("RssAnon:")


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release --bin crmsearch")
    shutil.rmtree(DATA, ignore_errors=True)
    os.makedirs(DATA)
    os.chmod(DATA, 0o777)
    env = dict(os.environ, CRMSEARCH_DATA=DATA, CRMSEARCH_MASTER_KEY=MASTER,
               CRMSEARCH_ADDR=f"127.0.0.1:{PORT}", CRMSEARCH_RATE_LIMITS="off")
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    log = open(os.path.join(ROOT, "target/bench-hostile.log"), "w")
    server = subprocess.Popen([BIN, "serve"], env=env, stdout=log, stderr=log)
    try:
        run(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def run(pid):
    for _ in range(180):
        st, body = req("GET", "/readyz", "")
        if st == 200:
            break
        time.sleep(1)
    else:
        sys.exit("the server did not become ready")
    tenants = []
    for i in range(20):
        st, d = req("POST", "/v1/tenants", MASTER, json.dumps({"name": f"hostile-{i}"}))
        admin = json.loads(d)["keys"]["admin"]
        keys = {}
        for role in ["write", "search", "agent"]:
            st, d = req("POST", "/v1/keys", admin, json.dumps({"role": role}))
            keys[role] = json.loads(d)["key"]
        tenants.append(keys)
    time.sleep(2)
    ready = rss(pid)
    rnd = random.Random(1)
    rlock = threading.Lock()

    def word(n):
        with rlock:
            return "".join(rnd.choice(string.ascii_lowercase) for _ in range(n))

    def between(a, b):
        with rlock:
            return rnd.randint(a, b)

    def hostile(i):
        k = tenants[i % len(tenants)]
        r = i % len(KINDS)
        if r == 0:
            rows = "\n".join(json.dumps({"external_id": word(12), "first_name": word(8), "last_name": word(10),
                                         "notes": word(2000)}) for _ in range(300))
            return r, req("POST", "/v1/contacts/bulk", k["write"], rows, "application/x-ndjson")
        if r == 1:
            return r, req("POST", "/v1/contacts/search", k["search"], json.dumps(
                {"q": word(between(1, 70)), "limit": 1000, "highlight": True, "facet_size": 100,
                 "facets": ["tags", "city", "country", "owner_id", "lifecycle_stage", "company_name"]}))
        if r == 2:
            return r, req("GET", f"/v1/contacts/autocomplete?q={word(between(1, 3))}&limit=50", k["search"])
        if r == 3:
            return r, req("POST", "/v1/memories/search", k["agent"], json.dumps(
                {"query": " ".join(word(6) for _ in range(30)), "top_k": 100, "token_budget": 100000}))
        if r == 4:
            return r, req("POST", "/v1/contacts/search", k["search"], b"{" + b"x" * (1 << 20))
        if r == 5:
            return r, req("POST", "/v1/contacts/search", k["search"], json.dumps(
                {"q": "", "offset": between(0, 10**9), "limit": 1000, "sort": ["last_name:asc"]}))
        if r == 6:
            return r, req("POST", "/v1/contacts", k["write"], json.dumps(
                {"first_name": word(50), "last_name": word(50), "notes": word(60000),
                 "tags": [word(20) for _ in range(100)]}))
        if r == 7:
            return r, req("POST", "/v1/memories", k["agent"], json.dumps(
                {"agent_id": "bot", "kind": "fact", "content": " ".join(word(7) for _ in range(500))}))
        if r == 8:
            return r, req("GET", "/v1/contacts/stats?size=100", k["search"])
        if r == 9:
            return r, req("POST", "/v1/contacts/search", k["search"], json.dumps(
                {"q": " ".join(word(between(3, 12)) for _ in range(10)), "limit": 1000, "facets": ["tags"],
                 "facet_size": 100}))
        if r == 10:
            return r, req("POST", "/multi-search", k["search"], json.dumps(
                {"queries": [{"indexUid": "contacts", "q": word(4), "limit": 1000} for _ in range(50)]}))
        return r, req("GET", "/v1/contacts/export?format=ndjson", k["write"])

    statuses = {}
    lock = threading.Lock()
    nxt = [0]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= N:
                return
            kind, (st, _) = hostile(i)
            with lock:
                statuses.setdefault(kind, {})
                statuses[kind][st] = statuses[kind].get(st, 0) + 1

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(CONC)]
    for t in threads:
        t.start()
    peak = ready
    samples = []
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        now = rss(pid)
        samples.append((time.time() - t0, now[0]))
        peak = max(peak, now, key=lambda x: x[0])
    for t in threads:
        t.join()
    secs = time.time() - t0
    time.sleep(10)
    after = rss(pid)
    fivexx = sum(n for s in statuses.values() for st, n in s.items() if st >= 500 or st == 0)
    rows = ""
    for kind, name in enumerate(KINDS):
        s = statuses.get(kind, {})
        rows += f"| {name} | {sum(s.values())} | {', '.join(f'{st}: {n}' for st, n in sorted(s.items()))} |\n"
    command = f"HOSTILE_N={N} HOSTILE_CONC={CONC} python3 benches/hostile.py"
    md = (
        "## Memory under a hostile mix (`python3 benches/hostile.py`)\n\n"
        f"{N} requests from {CONC} connections in {secs:.0f} s, against the release server on its embedded "
        "defaults (rate limits off, 20 tenants), each request one a careless or hostile client sends; "
        "the server's RSS sampled every second, and again after 10 s idle. "
        "The bounds behind these figures are listed in README.md, \"Memory\".\n\n"
        "| RSS | MiB | of which anonymous |\n|---|---|---|\n"
        f"| ready, 20 empty tenants | {ready[0]:.0f} | {ready[1]:.0f} |\n"
        f"| peak during the mix | {peak[0]:.0f} | {peak[1]:.0f} |\n"
        f"| 10 s after the last answer | {after[0]:.0f} | {after[1]:.0f} |\n\n"
        f"Answers that were a 5xx or no answer: **{fivexx}**.\n\n"
        "| request | n | statuses |\n|---|---|---|\n" + rows
    )
    print(md)
    results = {
        "name": "hostile",
        "command": command,
        "md": md,
        "metrics": {"rss_ready_mib": ready[0], "rss_peak_mib": peak[0], "rss_after_mib": after[0],
                    "anon_after_mib": after[1], "fivexx": fivexx},
        "plots": [{"plot": "hostile-rss", "kind": "xy", "title": "RSS during the hostile mix",
                   "x_label": "seconds", "y_label": "MiB", "label": "RSS", "values": [],
                   "points": samples}],
    }
    benchlib.save_results(results)


if __name__ == "__main__":
    main()
