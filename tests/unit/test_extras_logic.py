"""The logic of the §12 verbs without a network: lazy listings that change endpoints between
pages, batch deletes split and routed. Endpoints talk to an in-memory S3 emulator."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3kit import Multiplexer
from s3kit._clock import FakeClock
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._errors import ConnectionFailed, NoHealthyEndpoint
from s3kit._extras import batches, delete_batches, paged

URL = "http://emulated.invalid"


class Store:
    """ListObjectsV2 and DeleteObjects over a sorted set of keys (S3's semantics)."""

    name = "emulated"

    def __init__(self, keys: Sequence[str] = (), fail_after: int | None = None) -> None:
        self.keys = set(keys)
        self.pages: list[dict[str, Any]] = []  # the parameters of each list_page call
        self.deletes: list[int] = []  # the batch sizes of each delete_objects call
        self.fail_after = fail_after

    def list_page(
        self,
        bucket: str,
        prefix: str | None,
        delimiter: str | None,
        max_keys: int,
        start_after: str | None,
        token: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        self.pages.append({"start_after": start_after, "token": token})
        if self.fail_after is not None and len(self.pages) > self.fail_after:
            raise ConnectionFailed("emulated outage", endpoint="x", operation="iter_objects")
        after = token or start_after or ""
        entries: list[tuple[str, bool]] = []  # (name, is a common prefix)
        for key in sorted(self.keys):
            if prefix and not key.startswith(prefix):
                continue
            name, rolled = key, False
            if delimiter:
                cut = key.find(delimiter, len(prefix or ""))
                if cut >= 0:
                    name, rolled = key[: cut + len(delimiter)], True
            if key <= after or (entries and entries[-1][0] == name):
                continue
            entries.append((name, rolled))
        page, more = entries[:max_keys], len(entries) > max_keys
        result: dict[str, Any] = {
            "Contents": [{"Key": n, "Size": 1} for n, rolled in page if not rolled],
            "CommonPrefixes": [{"Prefix": n} for n, rolled in page if rolled],
            "IsTruncated": more,
        }
        if more:
            last = page[-1][0]
            # A token resumes past the last *key* under a common prefix, like a real one.
            result["NextContinuationToken"] = last + "\U0010ffff" if page[-1][1] else last
        return result

    def delete_objects(
        self, bucket: str, objects: Sequence[Mapping[str, str]], quiet: bool, timeout: Any
    ) -> dict[str, Any]:
        self.deletes.append(len(objects))
        for o in objects:
            self.keys.discard(o["Key"])
        return {"Deleted": [{"Key": o["Key"]} for o in objects], "Errors": []}

    def close(self) -> None:
        pass


def endpoint(name: str, store: Store, clock: FakeClock, priority: int = 0) -> Endpoint:
    cfg = make_config(URL, "ak", "sk", name=name, retries=0, backoff_base_s=0.01, priority=priority)
    return Endpoint(cfg, clock=clock, transport=store)  # type: ignore[arg-type]


def rig(stores: dict[str, Store], strategy: str = "round-robin") -> Multiplexer:
    clock = FakeClock()
    mux = Multiplexer(strategy=strategy, clock=clock)
    for i, (name, store) in enumerate(stores.items()):
        ep = endpoint(name, store, clock, priority=i)
        mux._endpoints[name] = ep
        mux._ordered = (*mux._ordered, ep)
    return mux


def expected(keys: Sequence[str], prefix: str, delimiter: str | None) -> list[str]:
    out: list[str] = []
    for key in sorted(k for k in keys if k.startswith(prefix)):
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        name = key[: cut + 1] if cut >= 0 else key
        if not out or out[-1] != name:
            out.append(name)
    return out


def names(entries: Any) -> list[str]:
    return [e.get("Key") or e["Prefix"] for e in entries]


KEYS = ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "c/3", "d", "e/", "e/x", "f"]


@pytest.mark.parametrize("delimiter", [None, "/"])
@pytest.mark.parametrize("page_size", [1, 2, 3, 1000])
def test_pages_alternating_endpoints_list_everything_once(
    delimiter: str | None, page_size: int
) -> None:
    """Round-robin sends every page to the other endpoint: each continues with StartAfter."""
    stores = {"a": Store(KEYS), "b": Store(KEYS)}
    mux = rig(stores)
    entries = mux.iter_objects("bk", delimiter=delimiter, page_size=page_size)
    assert names(entries) == expected(KEYS, "", delimiter)
    if page_size < len(KEYS):
        assert entries.endpoints == ["a", "b"]
        later = stores["a"].pages[1:] + stores["b"].pages
        assert later and all(p["token"] is None and p["start_after"] for p in later)


def test_the_same_endpoint_continues_with_its_token() -> None:
    store = Store(KEYS)
    mux = rig({"only": store})
    assert names(mux.iter_objects("bk", page_size=4)) == sorted(KEYS)
    assert [p["token"] is not None for p in store.pages] == [False, True, True]
    assert all(p["start_after"] is None for p in store.pages)


def test_a_failover_mid_listing_continues_after_the_last_name() -> None:
    stores = {"a": Store(KEYS, fail_after=2), "b": Store(KEYS)}
    mux = rig(stores, strategy="priority")
    entries = mux.iter_objects("bk", delimiter="/", page_size=2)
    assert names(entries) == expected(KEYS, "", "/")
    assert entries.endpoints == ["a", "b"]
    # "a" served "a/", "b", "c/", "d"; "b" starts after "d" (a key), not from the top
    assert stores["b"].pages[0] == {"start_after": "d", "token": None}


@settings(max_examples=60, deadline=None)
@given(
    keys=st.sets(st.text("ab/", min_size=1, max_size=5), max_size=25),
    page_size=st.integers(1, 4),
    delimiter=st.sampled_from([None, "/"]),
    prefix=st.sampled_from(["", "a", "a/"]),
)
def test_any_listing_survives_switching_endpoints(
    keys: set[str], page_size: int, delimiter: str | None, prefix: str
) -> None:
    stores = [Store(keys), Store(keys), Store(keys)]
    served = itertools.cycle(range(3))
    eps = [endpoint(f"e{i}", s, FakeClock()) for i, s in enumerate(stores)]
    items = paged(
        lambda op: op.attempt(eps[next(served)], None), "bk", prefix or None, delimiter, page_size
    )
    assert names(items) == expected(sorted(keys), prefix, delimiter)


def test_key_hash_merges_in_key_order_and_names_a_failed_endpoint() -> None:
    stores = {"a": Store(["k1", "k4", "k5"]), "b": Store(["k2", "k3", "k4"]), "c": Store()}
    stores["c"].fail_after = 0
    mux = rig(stores, strategy="key-hash")
    entries = mux.iter_objects("bk", page_size=2)
    assert names(entries) == ["k1", "k2", "k3", "k4", "k5"]
    assert sorted(entries.endpoints) == ["a", "b"]
    assert list(entries.incomplete) == ["c"]

    for store in stores.values():
        store.fail_after = 0
    with pytest.raises(NoHealthyEndpoint):
        list(mux.iter_objects("bk"))


def test_batches_of_at_most_1000() -> None:
    objects = [{"Key": f"k{i}"} for i in range(2500)]
    assert [len(b) for b in batches(objects)] == [1000, 1000, 500]
    seen: list[int] = []

    def run(op: Any, batch: list[dict[str, str]]) -> dict[str, Any]:
        seen.append(len(batch))
        return {"Deleted": batch, "Errors": [], "Endpoint": "x"}

    result = delete_batches(run, "bk", objects, quiet=True)
    assert seen == [1000, 1000, 500]
    assert result["Deleted"] == [] and result["Endpoints"] == ["x"]


def test_delete_batches_stay_on_the_first_endpoint() -> None:
    keys = [f"k{i:04d}" for i in range(2500)]
    stores = {name: Store(keys) for name in ("a", "b", "c")}
    mux = rig(stores)  # round-robin would rotate if each batch were routed anew
    result = mux.delete_objects("bk", keys)
    assert result["Endpoints"] == ["a"] and len(result["Deleted"]) == 2500
    assert stores["a"].deletes == [1000, 1000, 500]
    assert stores["b"].deletes == stores["c"].deletes == []


def test_delete_objects_under_key_hash_go_to_each_keys_owner() -> None:
    keys = [f"k{i:03d}" for i in range(300)]
    stores = {name: Store(keys) for name in ("a", "b", "c")}
    mux = rig(stores, strategy="key-hash")
    owners = {k: mux.locate("bk", k)[0]["endpoint"] for k in keys}
    result = mux.delete_objects("bk", keys)
    assert sorted(result["Endpoints"]) == sorted(set(owners.values()))
    for name, store in stores.items():
        assert sum(store.deletes) == sum(1 for o in owners.values() if o == name)
        assert store.keys == {k for k, o in owners.items() if o != name}


class LoopingStore(Store):
    """A server bug: every truncated page carries the first token again (or none at all)."""

    def __init__(self, keys: Sequence[str], token: str | None) -> None:
        super().__init__(keys)
        self.stuck_token = token

    def list_page(self, *args: Any, **kw: Any) -> dict[str, Any]:
        page = super().list_page(*args, **kw)
        if page["IsTruncated"]:
            if self.stuck_token is None:
                del page["NextContinuationToken"]
            else:
                page["NextContinuationToken"] = self.stuck_token
        return page


@pytest.mark.parametrize("token", ["a/1", None])
def test_a_listing_that_would_loop_fails_over_instead(token: str | None) -> None:
    stores = {"bad": LoopingStore(KEYS, token), "good": Store(KEYS)}
    mux = rig(stores, strategy="priority")
    entries = mux.iter_objects("bk", page_size=2)
    assert names(entries) == sorted(KEYS)  # every key once: nothing lost, nothing repeated
    assert entries.endpoints[-1] == "good"
    # priority asks "bad" first for each page until its breaker opens; a page it answers with a
    # looping token is an endpoint failure there, and "good" goes on from the last key
    bad = stores["bad"]
    pages = -(-len(KEYS) // 2)
    assert len(bad.pages) <= pages
    assert mux.stats()["bad"].endpoint_failures >= 1


def test_a_listing_that_would_loop_on_its_only_endpoint_raises() -> None:
    mux = rig({"only": LoopingStore(KEYS, "a/1")})
    with pytest.raises(NoHealthyEndpoint) as info:
        list(mux.iter_objects("bk", page_size=2))
    assert "the continuation token it was sent" in str(info.value.__cause__)
