"""The MCP endpoint through the official Python client (PyPI `mcp`), against
a live server: list the tools and their schemas, remember, recall it back,
forget it, the refusal of a key bound to another agent, a wrong key; then
`recall` round trips over MCP against the same search over HTTP.

    mcp_check.py URL ADMIN_KEY        (scripts/api_check runs it)
"""

import asyncio
import contextlib
import json
import statistics
import sys
import time
import urllib.request

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

URL, ADMIN = sys.argv[1], sys.argv[2]
TOOLS = {"search_contacts", "get_contact_context", "remember", "recall", "forget"}
ROUNDS = 50


def http(method, path, key, body=None):
    req = urllib.request.Request(
        URL + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def key_for(agent):
    s, v = http("POST", "/v1/keys", ADMIN, {"role": "agent", "agent_id": agent})
    assert s == 201 or s == 200, (s, v)
    return v["key"]


class Tools:
    """A client session's tool calls, answers parsed."""

    def __init__(self, session):
        self.session = session

    async def call(self, tool, args):
        r = await self.session.call_tool(tool, args)
        return bool(r.is_error), json.loads(r.content[0].text)


@contextlib.asynccontextmanager
async def connect(key):
    """An initialized MCP client session at /mcp with this key."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as client:
        async with streamable_http_client(URL + "/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield Tools(session)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def main():
    alice, bob = key_for("bot-alice"), key_for("bot-bob")
    async with connect(alice) as c:
        tools = {t.name: t for t in (await c.session.list_tools()).tools}
        assert set(tools) == TOOLS, sorted(tools)
        for t in tools.values():
            assert t.description and len(t.description) > 30, t.name
            assert t.input_schema["type"] == "object", t.name
        assert "query" in tools["recall"].input_schema["required"]
        assert "kind" in tools["remember"].input_schema["properties"]

        err, m = await c.call("remember", {
            "agent_id": "bot-alice", "kind": "preference", "subject_id": "anna",
            "content": "Anna prefers a phone call on Tuesday mornings to email",
        })
        assert not err, m
        mid, lsn = m["id"], m["lsn"]
        ask = {"query": "how does Anna like to be contacted", "agent_id": "bot-alice",
               "mode": "keyword", "min_lsn": lsn}
        err, r = await c.call("recall", ask)
        assert not err, r
        assert [x["id"] for x in r["memories"]][:1] == [mid], r
        assert set(r["memories"][0]["scores"]) >= {"keyword", "recency", "importance"}, r

        # a key bound to one agent cannot reach another's memories
        err, r = await c.call("recall", {**ask, "agent_id": "bot-bob"})
        assert err and r["code"] == "forbidden" and r["status"] == 403, r
        async with connect(bob) as other:
            err, r = await other.call("recall", {**ask, "agent_id": None} | {"agent_id": "bot-bob"})
            assert not err and all(x["id"] != mid for x in r["memories"]), r
            err, r = await other.call("forget", {"id": mid})
            assert err and r["code"] == "not_found", r
        # bad arguments are a tool error, not a crash
        r = await c.session.call_tool("remember", {"agent_id": "bot-alice", "kind": "rumour", "content": "x"})
        assert r.is_error, r

        # round trips: recall over MCP against the same search over HTTP
        body = {k: v for k, v in ask.items() if k != "min_lsn"}
        times = {"mcp": [], "http": []}
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            err, r = await c.call("recall", body)
            times["mcp"].append((time.perf_counter() - t0) * 1e3)
            assert not err, r
            t0 = time.perf_counter()
            s, v = http("POST", "/v1/memories/search", alice, body)
            times["http"].append((time.perf_counter() - t0) * 1e3)
            assert s == 200, v

        err, r = await c.call("forget", {"id": mid})
        assert not err, r
        err, r = await c.call("recall", {**ask, "min_lsn": r.get("lsn", lsn)})
        assert not err and all(x["id"] != mid for x in r["memories"]), r

    # a wrong key never reaches MCP: the HTTP answer is 401
    accepted = False
    try:
        async with connect("ck_wrong"):
            accepted = True
    except BaseException:  # the client's error for a 401 (an exception group)
        pass
    assert not accepted, "a wrong key was accepted"
    s, v = http("POST", "/mcp", "ck_wrong", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert s == 401 and v["error"]["code"] == "invalid_api_key", (s, v)

    out = {k: {"p50_ms": round(statistics.median(v), 2), "p99_ms": round(pct(v, 99), 2)} for k, v in times.items()}
    print(f"mcp_check: 5 tools; remember/recall/forget; bound key refused; recall round trip over {ROUNDS}: "
          f"MCP p50 {out['mcp']['p50_ms']} ms p99 {out['mcp']['p99_ms']} ms, "
          f"HTTP p50 {out['http']['p50_ms']} ms p99 {out['http']['p99_ms']} ms")


asyncio.run(main())
