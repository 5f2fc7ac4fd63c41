"""ObjectStoreCache (one JSON object per key on S3 or a folder) against a real S3 API (moto in server mode):
round trips, one concurrent batch per lookup, concurrent writer processes, errors never stored, pickling,
an outage costing misses and not the run, open_cache, and a LiteLLMRater served from it."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import pickle
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import fsspec
import pytest

from orthoselect.config import RatingConfig
from orthoselect.llm.cache import Cache, RequestCache, open_cache, request_key
from orthoselect.llm.object_cache import ObjectStoreCache
from orthoselect.scoring.llm import LiteLLMRater
from orthoselect.types import Document, Rule
from support.fake_llm_server import FakeLLMServer
from support.net import free_port
from support.s3 import s3_options
from support.tcp_proxy import TcpProxy

SECRET = "sk-test-SECRET-cache-store-13579"


def key(i: int) -> str:
    return request_key("openai/fake", [{"role": "user", "content": f"question {i}"}], {"temperature": 0.0})


def record(i: int, text: str | None = None) -> dict:
    return {
        "key": key(i),
        "model": "openai/fake",
        "text": text or f"0.{i % 10} naïve — 日本 {i}",
        "finish_reason": "stop",
        "tokens_in": 10 + i,
        "tokens_out": 2,
    }


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    return f"s3://test-bucket/cache-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.integration), "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ObjectStoreCache, str]]:
    """An ObjectStoreCache on S3 or on a local folder, and its location as a URL/path."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        url = request.getfixturevalue("s3_url")
        cache = ObjectStoreCache(url, s3_options(endpoint))
    else:
        url = str(tmp_path / "cache")
        cache = ObjectStoreCache(url)
    yield cache, url
    cache.close()


# --- round trip ----------------------------------------------------------------------------------------------
def test_round_trip_matches_request_cache(store: tuple[ObjectStoreCache, str], tmp_path: Path) -> None:
    cache, url = store
    assert isinstance(cache, Cache) and len(cache) == 0 and cache.get_many([key(1)]) == {}
    records = [record(i) for i in range(20)]
    assert cache.put_many(records) == 20
    sqlite = RequestCache(str(tmp_path / "ref.sqlite"))
    sqlite.put_many(records)
    keys = [key(i) for i in range(25)]  # 5 never stored: misses
    got = cache.get_many(keys)
    assert got == sqlite.get_many(keys) and len(got) == 20 and len(cache) == 20
    assert got[key(3)] == record(3)
    # layout: <url>/<key[:2]>/<key>.json, one whole JSON object holding no more than the record
    fs, root = fsspec.core.url_to_fs(url, **cache.storage_options)
    stored = json.loads(fs.cat_file(f"{root}/{key(3)[:2]}/{key(3)}.json"))
    assert {k: v for k, v in stored.items() if k not in ("v", "created")} == record(3)
    # a key already stored keeps its first answer, as in RequestCache (INSERT OR IGNORE)
    cache.put_many([record(3, text="a different later answer")])
    sqlite.put_many([record(3, text="a different later answer")])
    assert cache.get_many([key(3)]) == sqlite.get_many([key(3)]) == {key(3): record(3)}
    # an object that is not a valid record for its key reads as a miss
    for i in (30, 31):
        fs.makedirs(f"{root}/{key(i)[:2]}", exist_ok=True)
    fs.pipe_file(f"{root}/{key(30)[:2]}/{key(30)}.json", b'{"key": "trunc')
    fs.pipe_file(f"{root}/{key(31)[:2]}/{key(31)}.json", json.dumps(record(32)).encode())  # wrong key
    assert cache.get_many([key(30), key(31), key(4)]) == {key(4): record(4)}
    if not url.startswith("s3://"):  # no temporary files left beside the objects
        assert not [f for _, _, files in os.walk(url) for f in files if ".tmp-" in f]
    sqlite.close()


# --- one concurrent batch ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_batch_of_500_is_one_concurrent_round(s3_endpoint, s3_url):
    """Through a proxy adding 0.1 s to each request, 500 one-at-a-time GETs take at least 50 s (and 100
    PUTs 10 s); a batch takes moto's own time (~7 ms a request on two cores) plus a few round trips."""
    delay, stored, n = 0.1, 100, 500
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]), delay)
    cache = ObjectStoreCache(s3_url, s3_options(proxy.url))
    try:
        start = time.monotonic()
        assert cache.put_many(record(i) for i in range(stored)) == stored
        write = time.monotonic() - start
        start = time.monotonic()
        got = cache.get_many(key(i) for i in range(n))  # 100 hits, 400 misses: 500 GETs
        lookup = time.monotonic() - start
    finally:
        cache.close()
        proxy.close()
    assert len(got) == stored and got[key(7)] == record(7)
    assert write < stored * delay / 4 and lookup < n * delay / 5, (write, lookup)
    assert proxy.peak >= 16  # many requests in flight at once, not one connection after another


@pytest.mark.integration
def test_a_store_refusing_conditional_writes_gets_plain_puts(s3_endpoint, s3_url, monkeypatch):
    cache = ObjectStoreCache(s3_url, {**s3_options(s3_endpoint), "default_block_size": 5 * 2**20 + 1})
    fs, _ = cache._filesystem()  # an s3fs instance of its own (options differ from the other tests')
    plain = fs._pipe_file

    async def no_conditions(path, data, mode="overwrite", **kw):
        if mode == "create":
            raise OSError(errno.ENOSYS, "NotImplemented: If-None-Match")
        return await plain(path, data, **kw)

    monkeypatch.setattr(fs, "_pipe_file", no_conditions)
    assert cache.put_many([record(1), record(2)]) == 2 and not cache._exclusive
    assert cache.put_many([record(3)]) == 1
    assert cache.get_many([key(1), key(2), key(3)]) == {key(i): record(i) for i in (1, 2, 3)}


# --- concurrent writer processes ---------------------------------------------------------------------------
def _writer(locations: list[tuple[str, dict]], who: str, order: list[int], barrier) -> None:
    caches = [ObjectStoreCache(url, opts) for url, opts in locations]
    barrier.wait(timeout=60)
    for start in range(0, len(order), 20):
        batch = [record(i, text=f"{who} {i}") for i in order[start : start + 20]]
        for cache in caches:
            assert cache.put_many(batch) == len(batch)


@pytest.mark.integration
def test_two_processes_writing_overlapping_keys(s3_endpoint, s3_url, tmp_path):
    locations = [(s3_url, s3_options(s3_endpoint)), (str(tmp_path / "cache"), {})]
    overlap = list(range(20, 80))  # both write these first, in the same order: the most contention
    orders = {"A": overlap + list(range(20)), "B": overlap + list(range(80, 100))}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(locations, who, order, barrier)) for who, order in orders.items()]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert [p.exitcode for p in procs] == [0, 0]
    for url, opts in locations:
        cache = ObjectStoreCache(url, opts)
        got = cache.get_many(key(i) for i in range(100))
        assert len(got) == 100 and len(cache) == 100  # every key readable as a whole, valid record
        for rec in got.values():
            assert rec["text"] in (f"A {int(rec['tokens_in']) - 10}", f"B {int(rec['tokens_in']) - 10}")
        assert {got[key(i)]["text"][0] for i in range(20)} == {"A"}
        assert {got[key(i)]["text"][0] for i in range(80, 100)} == {"B"}
        fs, root = fsspec.core.url_to_fs(url, **opts)
        for path in fs.find(root):
            assert ".tmp-" not in path
            json.loads(fs.cat_file(path))


# --- only valid answers are stored -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"text": None}, {"finish_reason": None}, {"model": None}])
def test_a_record_with_a_null_field_is_skipped_as_in_request_cache(store, tmp_path, bad):
    cache, _ = store
    sqlite = RequestCache(str(tmp_path / "ref.sqlite"))  # NOT NULL + INSERT OR IGNORE: the row is skipped
    for c in (sqlite, cache):
        c.put_many([record(1), dict(record(2), **bad)])
        assert len(c) == 1 and c.get_many([key(1), key(2)]) == {key(1): record(1)}
    sqlite.close()


@pytest.mark.parametrize("bad", ["no text", "no key", {"tokens_in": "many"}])
def test_an_incomplete_record_stores_nothing_as_in_request_cache(store, tmp_path, bad):
    cache, _ = store
    broken = record(2)
    if isinstance(bad, str):
        del broken[bad.split()[1]]
    else:
        broken.update(bad)
    sqlite = RequestCache(str(tmp_path / "ref.sqlite"))
    for c in (sqlite, cache):
        with pytest.raises((ValueError, KeyError)):
            c.put_many([record(1), broken])
        assert len(c) == 0 and c.get_many([key(1), key(2)]) == {}
    with pytest.raises(ValueError, match="plain name"):
        cache.put_many([dict(record(1), key="../../escape")])
    sqlite.close()


@pytest.mark.integration
def test_failed_and_unparseable_answers_are_never_stored(s3_endpoint, s3_url):
    cache = ObjectStoreCache(s3_url, s3_options(s3_endpoint))
    pairs = [
        (Document(f"d{i}", f"Document {i}: some text."), Rule("r1", "Clarity: the text is clear.")) for i in range(6)
    ]
    faulty = (  # in the server's dialect: negotiating it is tested in test_dialects.py
        (partial(FakeLLMServer, rate_500=1.0), {"max_retries": 0, "structured_output": "json_schema"}),
        (partial(FakeLLMServer, rate_garbage=1.0), {"parse_retries": 1, "structured_output": "json_schema"}),
    )
    for server, over in faulty:
        with (
            server() as srv,
            LiteLLMRater(RatingConfig(model="openai/fake", api_base=srv.url, **over), cache=cache) as r,
        ):
            out = r.rate(pairs)
        assert all(x.score is None and x.status in ("error", "parse_error", "unavailable") for x in out)
        assert srv.requests == len(pairs) * (2 if "parse_retries" in over else 1)
    # no answer is stored; the unparseable ones are remembered as failures (scoring/failures.py), the 500s not
    assert len(cache) == len(pairs)


# --- pickling -----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_caches_pickle_without_connections(s3_endpoint, s3_url, tmp_path):
    options = {"key": "testing", "secret": SECRET, **s3_options(s3_endpoint)}
    cache = ObjectStoreCache(s3_url, options, retries=1, concurrency=8)
    cache.put_many([record(1)])
    assert cache._fs is not None and SECRET not in repr(cache)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._fs is None and (copy.url, copy.retries, copy.concurrency) == (s3_url, 1, 8)
    assert copy.get_many([key(1)]) == {key(1): record(1)}
    copy.close()
    assert copy._fs is None and copy.get_many([key(1)]) == {key(1): record(1)}  # reopened after close
    sqlite = RequestCache(str(tmp_path / "c.sqlite"))
    sqlite.put_many([record(1)])
    again = pickle.loads(pickle.dumps(sqlite))
    assert again.get_many([key(1)]) == {key(1): record(1)}
    sqlite.close()
    again.close()


# --- an outage costs requests, not the run ------------------------------------------------------------------
@pytest.mark.integration
def test_endpoint_down_gives_misses_and_a_warning(s3_endpoint, s3_url, caplog):
    closed = free_port()  # a port nothing listens on
    caplog.set_level(logging.WARNING, logger="orthoselect")
    dead = ObjectStoreCache(s3_url, s3_options(f"http://127.0.0.1:{closed}"))  # default retries and timeouts
    start = time.monotonic()
    assert dead.get_many(key(i) for i in range(256)) == {}
    assert dead.put_many([record(1)]) == 0
    assert time.monotonic() - start < 10
    assert any("lookup failed" in r.message and "256 of 256 keys are misses" in r.message for r in caplog.records)
    assert any("1 answers not stored" in r.message for r in caplog.records)


@pytest.mark.integration
def test_a_store_that_goes_away_is_skipped_then_used_again(s3_endpoint, s3_url, caplog):
    caplog.set_level(logging.WARNING, logger="orthoselect")
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    cache = ObjectStoreCache(s3_url, s3_options(proxy.url), retries=1, outage_cooldown_s=0.5)
    try:
        assert cache.put_many([record(1)]) == 1 and cache.get_many([key(1)]) == {key(1): record(1)}
        proxy.down()  # open connections cut, new ones refused
        start = time.monotonic()
        assert cache.put_many([record(2)]) == 0
        assert cache.get_many([key(1), key(2)]) == {}  # skipped while cooling down: no waiting
        assert time.monotonic() - start < 5
        assert any("write failed" in r.message and "1 of 1 answers not stored" in r.message for r in caplog.records)
        proxy.up()
        time.sleep(0.5)
        assert cache.get_many([key(1), key(2)]) == {key(1): record(1)}
        assert cache.put_many([record(2)]) == 1 and len(cache) == 2
    finally:
        cache.close()
        proxy.close()


# --- open_cache ---------------------------------------------------------------------------------------------
def test_open_cache_picks_the_store(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    cases = {
        str(tmp_path / "requests.sqlite"): RequestCache,
        str(tmp_path / "new" / "c.db"): RequestCache,
        str(tmp_path / "plain-file"): RequestCache,
        f"file://{tmp_path}/x.sqlite": RequestCache,
        str(folder): ObjectStoreCache,
        f"file://{folder}": ObjectStoreCache,
        str(tmp_path / "to-be-made") + "/": ObjectStoreCache,
        "s3://bucket/prefix": ObjectStoreCache,
    }
    for location, kind in cases.items():
        cache = open_cache(location)
        assert type(cache) is kind, location
        cache.close()
    assert (tmp_path / "x.sqlite").exists()  # file:// stripped
    s3 = open_cache("s3://bucket/prefix", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    assert isinstance(s3, ObjectStoreCache)
    assert s3.storage_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}}
    local = open_cache(str(folder))
    local.put_many([record(5)])
    assert (folder / key(5)[:2] / f"{key(5)}.json").exists() and len(local) == 1


# --- a rater served from the object store -------------------------------------------------------------------
@pytest.mark.integration
def test_rater_second_run_is_served_from_s3_with_zero_requests(s3_endpoint, s3_url, monkeypatch):
    monkeypatch.setenv("TEST_CACHE_STORE_KEY", SECRET)
    rules = [
        Rule("r1", "Clarity: the text is clear and well organised."),
        Rule("r2", "Code: the text contains working source code."),
    ]
    docs = [
        Document(f"d{i}", f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * (1 + i % 4))
        for i in range(15)
    ]
    pairs = [(d, r) for d in docs for r in rules]
    with FakeLLMServer(api_key=SECRET) as server:
        cfg = RatingConfig(model="openai/fake", api_base=server.url, api_key_env="TEST_CACHE_STORE_KEY")
        cache = ObjectStoreCache(s3_url, s3_options(s3_endpoint))
        with LiteLLMRater(cfg, cache=cache) as rater:
            first = rater.rate(pairs)
        assert server.requests == len(pairs) and all(x.status == "ok" and not x.cached for x in first)
        assert len(cache) == len(pairs)
        rater = pickle.loads(pickle.dumps(LiteLLMRater(cfg, cache=cache)))  # as on a Dask worker
        with rater:
            second = rater.rate(pairs)
        assert server.requests == len(pairs)  # zero new requests
        port = str(server.port)
    assert all(x.cached for x in second) and rater.stats.cache_hits == len(pairs)
    assert [x.score for x in second] == [x.score for x in first]
    fs, root = fsspec.core.url_to_fs(s3_url, **s3_options(s3_endpoint))
    blob = b"".join(fs.cat_file(p) for p in fs.find(root))
    assert SECRET.encode() not in blob and f"127.0.0.1:{port}".encode() not in blob
