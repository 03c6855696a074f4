#!/usr/bin/env python3
"""Replicas and shards behind nginx, measured on this machine's cores.

`python3 benches/scaleout.py` (after `cargo build --release --bin crmsearch`;
scripts/bench runs it). Env: SCALE_CONTACTS=100000 (the searched tenant,
and the tenant that moves, each), SCALE_SECS=10 (each throughput run),
SCALE_CONN=64, SCALE_BIN=target/release/crmsearch.

Everything runs on 127.0.0.1 under target/bench-scaleout (made afresh): the
first node's embedded Postgres, redis-server, nginx with
deploy/nginx/crmsearch-shards.conf, wrk (Debian's; installed when missing)
as the load. Shard s1 holds the searched tenant and the moving one; its
three replicas start one after another (each indexes the shard by a
snapshot). Then:
1. throughput and latency through nginx with 1, 2 and 3 replicas of s1:
   wrk, SCALE_CONN connections, contact searches of 600 distinct queries
   (names, prefixes, typos, two words) with the result cache off;
2. replication lag: 200 writes through nginx, each then searched for on
   every replica directly with its `min_lsn`: write answered -> visible on
   each replica (and on all three);
3. WAL retained per slot (`crmsearch slot list` every second) under a write
   load of bulk loads through nginx;
4. a move of the 100K-contact tenant from s1 to s2 (two replicas, holding a
   resident tenant of SCALE_CONTACTS/2) with `crmsearch shard move`, while a
   client searches it through nginx.
Writes target/bench-results/scaleout.json (BENCHMARKS.md's section). Every
process started is stopped at the end.
"""
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SCALE_BIN", os.path.join(ROOT, "target/release/crmsearch"))
CONTACTS = int(os.environ.get("SCALE_CONTACTS", "100000"))
SECS = int(os.environ.get("SCALE_SECS", "10"))
CONN = int(os.environ.get("SCALE_CONN", "64"))
DATA = os.path.join(ROOT, "target/bench-scaleout")
MASTER = "scaleout-bench-master-key-0123456789"
NGINX_PORT, REDIS_PORT = 7400, 7399
PORTS = {"s1_1": 7411, "s1_2": 7412, "s1_3": 7413, "s2_1": 7421, "s2_2": 7422}
procs = []


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def req(port, method, path, key, body=None, ctype="application/json"):
    return benchlib.request(port, method, path, key, body, ctype, 60)


def start(cmd, log, env=None):
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    procs.append(p)
    return p


def node(name, shard, db_url):
    env = dict(os.environ, CRMSEARCH_DATA=os.path.join(DATA, name), CRMSEARCH_NODE=name,
               CRMSEARCH_SHARD=shard, CRMSEARCH_ADDR=f"127.0.0.1:{PORTS[name]}",
               CRMSEARCH_MASTER_KEY=MASTER, REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}",
               CRMSEARCH_RATE_LIMITS="off", CRMSEARCH_RESULT_CACHE_MB="0",
               CRMSEARCH_TRUSTED_PROXY_HEADER="x-forwarded-for",
               CRMSEARCH_MAX_CONNECTIONS_PER_CLIENT="0", CRMSEARCH_LOG_FORMAT="json")
    env.pop("DATABASE_URL", None)
    if db_url:
        env["DATABASE_URL"] = db_url
    log = open(os.path.join(DATA, f"{name}.log"), "ab")
    p = start([BIN, "serve"], log, env)
    t0 = time.time()
    while time.time() - t0 < 1800:
        if p.poll() is not None:
            sys.exit(f"node {name} exited; see {DATA}/{name}.log")
        if req(PORTS[name], "GET", "/readyz", "")[0] == 200:
            return p, time.time() - t0
        time.sleep(0.25)
    sys.exit(f"node {name} did not become ready")


def cli(db_url, *args):
    env = dict(os.environ, DATABASE_URL=db_url, CRMSEARCH_DATA=os.path.join(DATA, "cli"))
    out = subprocess.run([BIN, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"crmsearch {' '.join(args)}: {out.stderr}")
    return out.stdout


def tenant(name):
    s, body, _ = req(PORTS["s1_1"], "POST", "/v1/tenants", MASTER, json.dumps({"name": name}))
    assert s == 201, body
    v = json.loads(body)
    return v["id"], v["keys"]["admin"], v["shard"]


def total(port, key):
    s, body, _ = req(port, "GET", "/v1/contacts/search?q=&limit=1", key)
    return json.loads(body)["total"] if s == 200 else -1


def wait_total(ports, key, n, what):
    t0 = time.time()
    while any(total(p, key) < n for p in ports):
        if time.time() - t0 > 1800:
            sys.exit(f"{what}: the nodes did not index {n} contacts")
        time.sleep(1)


def nginx_conf(upstreams, routes):
    """crmsearch-shards.conf with s1's and s2's replicas as given, s3 unused."""
    text = open(os.path.join(ROOT, "deploy/nginx/crmsearch-shards.conf")).read()
    text = text.replace("/etc/nginx/crmsearch-routes.map", routes)
    text = text.replace("listen [::]:80;", "").replace("listen 80;", f"listen 127.0.0.1:{NGINX_PORT};")
    for shard, ports in upstreams.items():
        lines = "".join(f"    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in ports)
        text = re.sub(rf"(upstream crmsearch_{shard} {{\n    zone [^\n]*\n)(    server [^\n]*\n)+",
                      lambda m: m.group(1) + lines, text)
    text = re.sub(r"(upstream crmsearch_s3 {\n    zone [^\n]*\n)(    server [^\n]*\n)+",
                  lambda m: m.group(1) + "    server 127.0.0.1:9 down;\n", text)
    d = os.path.join(DATA, "nginx")
    with open(os.path.join(d, "crmsearch-shards.conf"), "w") as f:
        f.write(text)
    main = os.path.join(d, "nginx.conf")
    with open(main, "w") as f:
        f.write(f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
                "events { worker_connections 4096; }\n"
                f"http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; "
                f"fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; "
                f"include {d}/crmsearch-shards.conf; }}\n")
    return main


def nginx_cmd(main, *extra):
    return ["nginx", "-p", os.path.join(DATA, "nginx"), "-c", main, *extra]


def queries(key):
    """600 searches from the tenant's own contacts: a last name, a prefix
    of 3-5 letters, a typo, first and last name."""
    names = []
    for off in random.Random(7).sample(range(0, CONTACTS - 200), 30):
        s, body, _ = req(PORTS["s1_1"], "GET", f"/v1/contacts/search?q=&limit=20&offset={off}", key)
        names += [(h["contact"].get("first_name") or "", h["contact"].get("last_name") or "")
                  for h in json.loads(body)["hits"]]
    rnd = random.Random(11)
    out = []
    for first, last in names[:150]:
        typo = last
        if len(last) > 5:
            i = rnd.randrange(1, len(last) - 2)
            typo = last[:i] + last[i + 1] + last[i] + last[i + 2:]
        out += [last, last[: rnd.randint(3, 5)], typo, f"{first} {last}"]
    return [urllib.parse.quote(q.lower()) for q in out if q.strip()]


def wrk(key, qs, secs):
    lua = os.path.join(DATA, "search.lua")
    with open(lua, "w") as f:
        f.write("local q = {" + ",".join(f'"{q}"' for q in qs) + "}\n"
                "math.randomseed(os.time())\n"
                "request = function()\n"
                '  return wrk.format("GET", "/v1/contacts/search?q=" .. q[math.random(#q)] .. "&limit=20", '
                f'{{["Authorization"] = "Bearer {key}"}})\n'
                "end\n")
    out = subprocess.run(["wrk", "-t2", f"-c{CONN}", f"-d{secs}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{NGINX_PORT}/"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label):
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"),
            "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    shutil.rmtree(DATA, ignore_errors=True)
    for d in ["nginx", "nginx/body", "nginx/proxy", "nginx/logs", "redis"]:
        os.makedirs(os.path.join(DATA, d), exist_ok=True)
    start(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", os.path.join(DATA, "redis")], open(os.path.join(DATA, "redis.log"), "ab"))
    try:
        run()
    finally:
        main_conf = os.path.join(DATA, "nginx/nginx.conf")
        if os.path.exists(main_conf):
            subprocess.run(nginx_cmd(main_conf, "-s", "stop"), capture_output=True)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def run():
    _, first_secs = node("s1_1", "s1", None)
    db_url = json.load(open(os.path.join(DATA, "s1_1/postgres/instance.json")))["admin_url"]
    db_url = db_url.rsplit("/", 1)[0] + "/crmsearch"
    searched, skey, _ = tenant("searched")
    moving, mkey, _ = tenant("moving")
    say(f"seeding 2 x {CONTACTS} contacts")
    cli(db_url, "seed", "--tenant", searched, "--contacts", str(CONTACTS), "--seed", "1")
    cli(db_url, "seed", "--tenant", moving, "--contacts", str(CONTACTS), "--seed", "2")
    wait_total([PORTS["s1_1"]], skey, CONTACTS, "s1_1")
    wait_total([PORTS["s1_1"]], mkey, CONTACTS, "s1_1")
    snapshots = {}
    for name in ["s1_2", "s1_3"]:
        say(f"starting {name} (a snapshot of s1)")
        _, snapshots[name] = node(name, "s1", db_url)
    routes = os.path.join(DATA, "nginx/routes.map")
    cli(db_url, "shard", "routes", "--out", routes)
    qs = queries(skey)

    # 1. throughput through nginx with 1, 2, 3 replicas
    throughput = []
    main_conf = None
    for n in (1, 2, 3):
        main_conf = nginx_conf({"s1": [PORTS[f"s1_{i}"] for i in range(1, n + 1)],
                                "s2": [PORTS["s2_1"], PORTS["s2_2"]]}, routes)
        if n == 1:
            subprocess.run(nginx_cmd(main_conf), check=True)
        else:
            subprocess.run(nginx_cmd(main_conf, "-s", "reload"), check=True)
        time.sleep(2)
        wrk(skey, qs, 3)  # warm: caches of the OS and the index
        r = wrk(skey, qs, SECS)
        r["replicas"] = n
        say(f"{n} replica(s): {r}")
        throughput.append(r)

    # 2. replication lag: write -> visible on every replica
    lags, each = [], {name: [] for name in ["s1_1", "s1_2", "s1_3"]}
    for i in range(200):
        token = f"lagprobe{i}x"
        s, body, _ = req(NGINX_PORT, "POST", "/v1/contacts", skey,
                         json.dumps({"first_name": token, "last_name": "Lag"}))
        assert s == 201, body
        done = time.perf_counter()
        lsn = urllib.parse.quote(json.loads(body)["lsn"], safe="")
        seen = {}

        def probe(name):
            s, b, _ = req(PORTS[name], "GET", f"/v1/contacts/search?q={token}&limit=1&min_lsn={lsn}&wait_ms=5000", skey)
            assert s == 200 and json.loads(b)["total"] >= 1, b
            seen[name] = (time.perf_counter() - done) * 1000

        ts = [threading.Thread(target=probe, args=(n,)) for n in each]
        [t.start() for t in ts]
        [t.join() for t in ts]
        for name, ms in seen.items():
            each[name].append(ms)
        lags.append(max(seen.values()))
        time.sleep(0.02)
    lag = {"p50_ms": statistics.median(lags), "p99_ms": pct(lags, 99),
           "per_replica_p50_ms": {n: statistics.median(v) for n, v in each.items()}}
    say(f"lag: {lag}")

    # 3. WAL retained per slot under a write load
    stop = threading.Event()
    written = [0]

    def writer(w):
        j = 0
        while not stop.is_set():
            body = "".join(json.dumps({"external_id": f"wal-{w}-{j}-{k}", "first_name": f"Wal{k}",
                                       "last_name": "Load", "notes": "n" * 300}) + "\n" for k in range(200))
            j += 1
            s, b, _ = req(NGINX_PORT, "POST", "/v1/contacts/bulk", skey, body, "application/x-ndjson")
            if s == 200:
                written[0] += 200

    ws = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    [w.start() for w in ws]
    samples = {}
    t0 = time.time()
    while time.time() - t0 < 20:
        for slot in json.loads(cli(db_url, "slot", "list")):
            if slot.get("retained_wal_bytes") is not None:
                samples.setdefault(slot["name"], []).append(slot["retained_wal_bytes"])
        time.sleep(1)
    stop.set()
    [w.join() for w in ws]
    wal_secs = time.time() - t0
    wal = {"contacts_per_s": written[0] / wal_secs,
           "slots": {k: {"p50_mib": statistics.median(v) / 2**20, "max_mib": max(v) / 2**20} for k, v in samples.items()}}
    say(f"wal: {wal}")

    # 4. a move of the 100K-contact tenant, searched meanwhile
    for name in ["s2_1", "s2_2"]:
        node(name, "s2", db_url)
    resident, rkey, rshard = tenant("resident")
    assert rshard == "s2", rshard
    cli(db_url, "seed", "--tenant", resident, "--contacts", str(CONTACTS // 2), "--seed", "3")
    wait_total([PORTS["s2_1"], PORTS["s2_2"]], rkey, CONTACTS // 2, "s2")
    cli(db_url, "shard", "routes", "--out", routes)
    subprocess.run(nginx_cmd(main_conf, "-s", "reload"), check=True)
    stop.clear()
    during = {"ok": 0, "failed": 0, "by": {}}

    def searcher():
        while not stop.is_set():
            s, _, h = req(NGINX_PORT, "GET", "/v1/contacts/search?q=smith&limit=10", mkey)
            if s == 200:
                during["ok"] += 1
                by = h.get("x-crmsearch-shard", "?")
                during["by"][by] = during["by"].get(by, 0) + 1
            else:
                during["failed"] += 1
            time.sleep(0.01)

    st = threading.Thread(target=searcher)
    st.start()
    reload_cmd = " ".join(nginx_cmd(main_conf, "-s", "reload"))
    moved = json.loads(cli(db_url, "shard", "move", moving, "--to", "s2", "--routes", routes,
                           "--reload", reload_cmd, "--drain-ms", "2000", "--json"))
    time.sleep(1)
    stop.set()
    st.join()
    assert all(total(PORTS[n], mkey) == CONTACTS for n in ["s2_1", "s2_2"]), "moved in full"
    say(f"move: {moved} during: {during}")

    report(first_secs, snapshots, throughput, lag, wal, moved, during)


def report(first_secs, snapshots, throughput, lag, wal, moved, during):
    command = f"SCALE_CONTACTS={CONTACTS} SCALE_SECS={SECS} SCALE_CONN={CONN} python3 benches/scaleout.py"
    one = throughput[0]["rps"]
    rows = "".join(
        f"| {r['replicas']} | {r['rps']:.0f} | {r['rps'] / one:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{r['non_2xx']} |\n" for r in throughput)
    slots = "".join(f"| `{k}` | {v['p50_mib']:.1f} | {v['max_mib']:.1f} |\n" for k, v in sorted(wal["slots"].items()))
    per = ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(lag["per_replica_p50_ms"].items()))
    md = (
        f"## Replicas and shards behind nginx (`{command}`)\n\n"
        f"One Postgres, Redis, nginx with `deploy/nginx/crmsearch-shards.conf`, wrk as the client, all on "
        f"these 2 cores. Shard s1 holds two tenants of {CONTACTS:,} contacts; each replica is its own "
        f"`crmsearch serve` with its own slot and index (the 2nd and 3rd indexed s1 by a snapshot in "
        f"{', '.join(f'{v:.0f} s' for v in snapshots.values())}).\n\n"
        f"**Throughput through nginx**: contact searches (600 distinct: names, prefixes, typos, two "
        f"words; the result cache off), {CONN} connections, {SECS} s each after a 3 s warm-up:\n\n"
        "| replicas of s1 | searches/s | vs 1 | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|---|\n" + rows +
        "\nEvery replica, nginx and wrk share the same two cores: a replica adds no CPU here, so "
        "throughput cannot grow with replicas on this machine (it is bound by the cores, not the "
        "design). Here more replicas even cost: each runs its own search threads (two a core), so three put twelve on two cores, and each keeps its own index in the page cache and the CPU's caches. On separate machines each replica brings its own cores; the replicas share nothing "
        "but Postgres (one WAL sender each) and Redis.\n\n"
        f"**Replication lag**: 200 writes through nginx, each searched for on every replica with its "
        f"`min_lsn`: write answered -> visible on all three replicas p50 {lag['p50_ms']:.1f} ms, "
        f"p99 {lag['p99_ms']:.1f} ms (per replica p50: {per}; a search included).\n\n"
        f"**WAL retained per slot** under a write load of bulk loads through nginx "
        f"({wal['contacts_per_s']:.0f} contacts/s with 300-byte notes), sampled every second "
        "(`crmsearch slot list`). Each node acknowledges its durable index commits (every 1 s), but "
        "Postgres moves a logical slot's restart point only at its running-transactions snapshots "
        "(every 15 s while there are writes), so every slot holds about the same 15 s of WAL:\n\n"
        "| slot | p50 MiB | max MiB |\n|---|---|---|\n" + slots +
        f"\n**Moving a {CONTACTS:,}-contact tenant** from s1 to s2 (two replicas, each already holding "
        f"a tenant of {CONTACTS // 2:,}) with `crmsearch shard move`: {moved['total_secs']:.1f} s in all, "
        f"of which {moved['load_secs']:.1f} s for both target replicas to load it (a tenant reindex: "
        "the tenant read from Postgres, the shard's other tenants carried over into a new generation) "
        "and 2 s of drain. A client searching the tenant through nginx meanwhile: "
        f"{during['ok']} answered ({', '.join(f'{k}: {v}' for k, v in sorted(during['by'].items()))}), "
        f"**{during['failed']} failed**.\n"
    )
    print(md)
    results = {"name": "scaleout", "command": command, "md": md,
               "metrics": {"rps_1": one, "rps_2": throughput[1]["rps"], "rps_3": throughput[2]["rps"],
                           "p99_1_ms": throughput[0]["p99_ms"], "lag_p50_ms": lag["p50_ms"],
                           "lag_p99_ms": lag["p99_ms"], "move_secs": moved["total_secs"],
                           "move_failed": during["failed"]},
               "plots": []}
    benchlib.save_results(results)


if __name__ == "__main__":
    main()
