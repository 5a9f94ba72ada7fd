"""The micro-batcher, and the FastAPI service end to end on the tiny trained run (TestClient, httpx ASGI,
schemathesis fuzzing from the OpenAPI schema)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import peapod
from peapod.api import MAX_CANDIDATES, MAX_K
from peapod.serving.app import create_app
from peapod.serving.batching import MicroBatcher
from test_api import tiny_run  # noqa: F401  (the session's trained run)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ batcher
def _run(coro):
    return asyncio.run(coro)


def test_batcher_merges_concurrent_requests_and_keeps_their_order():
    calls: list[list[int]] = []
    threads: set[int] = set()

    def double(xs: list[int]) -> list[int]:
        calls.append(list(xs))
        threads.add(threading.get_ident())
        return [2 * x for x in xs]

    async def main():
        b = MicroBatcher(double, max_batch=4, max_wait_ms=50)
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.aclose()
        return out, b.stats

    out, stats = _run(main())
    assert out == [2 * i for i in range(10)]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert stats.requests == 10 and stats.batches == 3 and stats.max_batch_seen == 4
    assert threading.get_ident() not in threads  # the batch function ran in a worker thread


def test_batcher_flushes_a_full_batch_without_waiting():
    async def main():
        b = MicroBatcher(lambda xs: xs, max_batch=3, max_wait_ms=5000)
        t0 = time.perf_counter()
        await asyncio.gather(*(b.submit(i) for i in range(3)))
        elapsed = time.perf_counter() - t0
        await b.aclose()
        return elapsed

    assert _run(main()) < 2.5  # far below the 5 s wait: a full batch goes at once


def test_batcher_sends_a_lone_request_after_max_wait():
    async def main():
        b = MicroBatcher(lambda xs: [x + 1 for x in xs], max_batch=8, max_wait_ms=30)
        t0 = time.perf_counter()
        out = await b.submit(41)
        elapsed = time.perf_counter() - t0
        await b.aclose()
        return out, elapsed

    out, elapsed = _run(main())
    assert out == 42 and elapsed >= 0.025


def test_batcher_isolates_a_failing_request():
    def strict(xs: list[int]) -> list[int]:
        if any(x < 0 for x in xs):
            raise ValueError(f"negative in {xs}")
        return xs

    async def main():
        b = MicroBatcher(strict, max_batch=8, max_wait_ms=20)
        out = await asyncio.gather(b.submit(1), b.submit(-1), b.submit(2), return_exceptions=True)
        await b.aclose()
        return out, b.stats

    out, stats = _run(main())
    assert out[0] == 1 and out[2] == 2 and isinstance(out[1], ValueError)
    assert stats.fallbacks == 1


def test_batcher_rejects_bad_settings_and_use_after_close():
    with pytest.raises(ValueError):
        MicroBatcher(lambda xs: xs, max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda xs: xs, max_wait_ms=-1)

    async def main():
        b = MicroBatcher(lambda xs: xs[:-1], max_batch=2, max_wait_ms=1)
        with pytest.raises(RuntimeError, match="returned 0 results for 1"):
            await b.submit(1)
        await b.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await b.submit(1)

    _run(main())


# ------------------------------------------------------------------------------------------ service
@pytest.fixture(scope="module")
def rec(tiny_run):  # noqa: F811
    return peapod.load(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def client(rec):
    with TestClient(create_app(rec, max_batch=8, max_wait_ms=2)) as c:
        yield c


def test_health(client, rec):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"]["n_users"] == rec.n_users
    assert set(body["batching"]) == {"recommend", "rank", "explain"}


def test_recommend_rank_explain_answer_as_the_api(client, rec):
    user = rec.dataset.users[0]
    r = client.post("/recommend", json={"user": user, "k": 5})
    assert r.status_code == 200
    expected = rec.recommend(user, k=5)
    assert r.json()["user"] == user
    assert [x["item"] for x in r.json()["items"]] == [x.item for x in expected]
    assert [x["rank"] for x in r.json()["items"]] == [1, 2, 3, 4, 5]

    history = rec.dataset.train_items(user)
    r = client.post("/recommend", json={"history": history, "k": 3, "exclude_history": True})
    assert r.status_code == 200 and r.json()["user"] is None
    assert [x["item"] for x in r.json()["items"]] == [
        x.item for x in rec.recommend(history=history, k=3, exclude_history=True)
    ]

    cands = rec.dataset.items[:7]
    r = client.post("/rank", json={"user": user, "candidates": cands})
    assert r.status_code == 200
    assert [x["item"] for x in r.json()["items"]] == rec.rank(user, cands).order

    item = rec.dataset.sequences[user][-1]
    r = client.post("/explain", json={"user": user, "item": item})
    assert r.status_code == 200
    e = rec.explain(user, item)
    assert r.json()["explanation"] == e.text and r.json()["num_beams"] == e.num_beams


def test_bad_requests_get_4xx_with_a_json_message(client, rec):
    user = rec.dataset.users[0]
    many = rec.dataset.items[:40]  # leaves fewer than MAX_K items once excluded
    cases = [
        ("/recommend", {"user": "nobody"}, 404, "unknown user id 'nobody'"),
        ("/recommend", {"history": ["1", "999999"]}, 404, "unknown item id"),
        ("/recommend", {"user": user, "k": 0}, 422, "k"),
        ("/recommend", {"user": user, "k": MAX_K + 1}, 422, "k"),
        ("/recommend", {"user": user, "k": "ten"}, 422, "k"),
        ("/recommend", {"history": []}, 422, "history"),
        ("/recommend", {}, 422, "exactly one of 'user' or 'history'"),
        ("/recommend", {"user": user, "history": ["1"]}, 422, "exactly one"),
        ("/recommend", {"user": user, "colour": "red"}, 422, "colour"),
        ("/recommend", {"history": many, "k": rec.n_items - 39, "exclude_history": True}, 400, "remain after excluding"),
        ("/rank", {"user": user, "candidates": []}, 422, "candidates"),
        ("/rank", {"user": user, "candidates": ["1", "1"]}, 422, "distinct"),
        ("/rank", {"user": user, "candidates": [str(i) for i in range(MAX_CANDIDATES + 1)]}, 422, "candidates"),
        ("/rank", {"user": user, "candidates": ["1", "nope"]}, 404, "'nope'"),
        ("/rank", {"user": "nobody", "candidates": ["1"]}, 404, "unknown user"),
        ("/explain", {"user": user, "item": "nope"}, 404, "'nope'"),
        ("/explain", {"user": user}, 422, "item"),
    ]
    for path, body, status, message in cases:
        r = client.post(path, json=body)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert message in r.json()["error"], (path, body, r.json())
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_openapi_schema_states_the_bounds(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    k = schemas["RecommendRequest"]["properties"]["k"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, MAX_K, 10)
    history = next(s for s in schemas["RecommendRequest"]["properties"]["history"]["anyOf"] if s.get("type") == "array")
    assert history["minItems"] == 1
    candidates = schemas["RankRequest"]["properties"]["candidates"]
    assert (candidates["minItems"], candidates["maxItems"]) == (1, MAX_CANDIDATES)


def test_concurrent_requests_are_batched_and_answer_as_unbatched(rec):
    users = rec.dataset.users[:8]
    app = create_app(rec, max_batch=8, max_wait_ms=200)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            recs = await asyncio.gather(*(c.post("/recommend", json={"user": u, "k": 4}) for u in users))
            ranks = await asyncio.gather(
                *(c.post("/rank", json={"user": u, "candidates": rec.dataset.items[i:i + 6]}) for i, u in enumerate(users))
            )
        for b in app.state.batchers.values():
            await b.aclose()
        return recs, ranks

    recs, ranks = asyncio.run(main())
    assert all(r.status_code == 200 for r in recs + ranks)
    stats = app.state.batchers["recommend"].stats
    assert stats.requests == 8 and stats.batches < 8  # at least two requests shared a model call
    assert app.state.batchers["rank"].stats.batches < 8
    for u, r in zip(users, recs):
        single = rec.recommend(u, k=4)
        assert [x["item"] for x in r.json()["items"]] == [x.item for x in single]
        np.testing.assert_allclose([x["score"] for x in r.json()["items"]], [x.score for x in single], atol=1e-4)
    for i, (u, r) in enumerate(zip(users, ranks)):
        assert [x["item"] for x in r.json()["items"]] == rec.rank(u, rec.dataset.items[i:i + 6]).order


# ------------------------------------------------------------------------------------------ fuzzing
def _with_known_ids(body, users, items, pick):
    """The fuzzed body with its user / item ids swapped for ids of the run, so that requests also reach
    the model (random strings are almost never known ids); shapes, k and flags stay as generated."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if isinstance(body.get("user"), str):
        body["user"] = users[pick(len(users))]
    for key in ("history", "candidates"):
        if isinstance(body.get(key), list):
            body[key] = [items[pick(len(items))] if isinstance(x, str) else x for x in body[key]]
    if isinstance(body.get("item"), str):
        body["item"] = items[pick(len(items))]
    return body


def test_schemathesis_fuzz_finds_no_server_error(rec):
    """Requests generated from the OpenAPI schema (valid and invalid, with random and with known ids):
    never a 5xx, and every answer matches the documented status codes, content type and response schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    app = create_app(rec, max_batch=4, max_wait_ms=1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    users, items = rec.dataset.users, rec.dataset.items
    seen: list[int] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(), known=st.booleans(), data=st.data())
        def fuzz(case, known, data):
            if known:
                case.body = _with_known_ids(case.body, users, items,
                                            lambda n: data.draw(st.integers(0, n - 1)))
            response = case.call()
            seen.append(response.status_code)
            case.validate_response(response, checks=checks)

        fuzz()
    assert seen and all(s < 500 for s in seen)
    assert any(400 <= s < 500 for s in seen)  # the fuzzer reached the validation paths
    assert sum(s == 200 for s in seen) > 5  # ... and the model
