"""What the Python benches against the real server share: one HTTP request
on a connection of its own, and the results file BENCHMARKS.md is made from."""
import http.client
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def request(port, method, path, key, body=None, ctype="application/json", timeout=120):
    """(status, body, headers with lowercase names); status 0 when the
    server refused or cut the connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Authorization": f"Bearer {key}"}
    if body is not None:
        h["Content-Type"] = ctype
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    except Exception as e:
        return 0, str(e).encode(), {}
    finally:
        c.close()


def save_results(results):
    """target/bench-results/<name>.json, read by `cargo bench --bench report`."""
    out = os.path.join(ROOT, "target/bench-results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{results['name']}.json"), "w") as f:
        json.dump(results, f)
