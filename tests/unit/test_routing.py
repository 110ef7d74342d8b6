"""Routing strategies' order() and Multiplexer.ranked() tiers (contract §4). No network.

Endpoints are built from configs pointing at an unused port: an Endpoint makes no connection
until it is used, and these tests never send anything.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from s3kit import ConfigError, Multiplexer
from s3kit._clock import FakeClock
from s3kit._config import make_config
from s3kit._endpoint import Endpoint
from s3kit._ops import get_object
from s3kit._routing import STRATEGIES, make_router

URL = "http://127.0.0.1:1"


def endpoint(name: str, **options: Any) -> Endpoint:
    return Endpoint(make_config(URL, "a", "b", name=name, **options))


def endpoints(*names: str, **options: Any) -> list[Endpoint]:
    return [endpoint(name, **options) for name in names]


def names(order: list[Endpoint]) -> list[str]:
    return [ep.name for ep in order]


@pytest.fixture(autouse=True)
def _seeded_random() -> Iterator[None]:
    state = random.getstate()
    random.seed(12345)
    try:
        yield
    finally:
        random.setstate(state)


# ------------------------------------------------------------------- round-robin
def test_round_robin_rotates_in_added_order() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("round-robin")
    firsts = [router.order(eps, None)[0].name for _ in range(10)]
    assert firsts == ["a", "b", "c", "d", "a", "b", "c", "d", "a", "b"]
    counts = Counter(firsts)
    assert [counts[n] for n in "abcd"] == [3, 3, 2, 2]


def test_round_robin_order_is_a_rotation_of_all_candidates() -> None:
    eps = endpoints("a", "b", "c")
    router = make_router("round-robin")
    assert names(router.order(eps, None)) == ["a", "b", "c"]
    assert names(router.order(eps, None)) == ["b", "c", "a"]
    assert names(router.order(eps, None)) == ["c", "a", "b"]
    assert router.order([], None) == []


# ------------------------------------------------------------------ least-loaded
def test_least_loaded_prefers_fewest_in_flight() -> None:
    a, b, c = eps = endpoints("a", "b", "c")
    a.limiter.in_flight = 3
    b.limiter.in_flight = 1
    c.limiter.in_flight = 2
    router = make_router("least-loaded")
    for _ in range(6):  # whatever the rotation, load decides
        assert names(router.order(eps, None)) == ["b", "c", "a"]


def test_least_loaded_counts_slots_taken_with_try_acquire() -> None:
    a, b = eps = endpoints("a", "b")
    router = make_router("least-loaded")
    assert a.limiter.try_acquire()
    assert a.limiter.try_acquire()
    assert b.limiter.try_acquire()
    assert router.order(eps, None)[0] is b
    b.limiter.try_acquire()
    b.limiter.try_acquire()
    assert router.order(eps, None)[0] is a
    for ep in eps:
        while ep.limiter.in_flight:
            ep.limiter.release()


def test_least_loaded_ties_broken_by_legs_then_rotation() -> None:
    a, b, c = eps = endpoints("a", "b", "c")
    router = make_router("least-loaded")
    a.legs, b.legs, c.legs = 5, 2, 3
    assert all(router.order(eps, None)[0] is b for _ in range(6))  # fewest legs so far
    c.legs = 2
    firsts = Counter(router.order(eps, None)[0].name for _ in range(6))
    assert set(firsts) == {"b", "c"}  # a has served most; b and c take turns
    a.limiter.in_flight = 0
    b.limiter.in_flight = 1  # in flight beats legs
    assert all(router.order(eps, None)[0] is c for _ in range(6))


def test_least_loaded_spreads_sequential_calls_on_idle_endpoints() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("least-loaded")
    picks: Counter[str] = Counter()
    for _ in range(100):
        first = router.order(eps, None)[0]
        first.legs += 1  # what a call sent to it would count
        picks[first.name] += 1
    assert picks == {"a": 25, "b": 25, "c": 25, "d": 25}
    # and without any legs recorded, rotation alone spreads evenly
    fresh = endpoints("w", "x", "y", "z")
    alone = Counter(router.order(fresh, None)[0].name for _ in range(40))
    assert alone == {"w": 10, "x": 10, "y": 10, "z": 10}


# --------------------------------------------------------------------- weighted
def test_weighted_first_pick_share_follows_weights() -> None:
    heavy = endpoint("heavy", weight=3.0)
    light = endpoint("light", weight=1.0)
    router = make_router("weighted")
    n = 4000
    firsts = Counter(router.order([heavy, light], None)[0].name for _ in range(n))
    share = firsts["heavy"] / n
    print(f"\nweighted 3:1 -> heavy first in {share:.3f} of {n} orders")
    assert 0.70 <= share <= 0.80


def test_weighted_order_contains_every_candidate_once() -> None:
    eps = [endpoint(f"e{i}", weight=float(i + 1)) for i in range(5)]
    router = make_router("weighted")
    for _ in range(50):
        assert sorted(names(router.order(eps, None))) == sorted(names(eps))


# ---------------------------------------------------------------------- latency
def test_latency_picks_the_slow_endpoint_first_far_less_often() -> None:
    fast = endpoints("f1", "f2", "f3")
    slow = endpoint("slow")
    now = time.monotonic()  # the endpoints' clock: the routing cost decays from the sample time
    for ep in fast:
        ep._latency.add(0.010, now)
    slow._latency.add(0.050, now)  # 5x the others
    eps = [slow, *fast]
    router = make_router("latency")
    n = 2000
    firsts = Counter(router.order(eps, None)[0].name for _ in range(n))
    print(f"\nlatency P2C firsts over {n}: {dict(firsts)}")
    assert firsts["slow"] / n < 0.10
    assert all(firsts[ep.name] > n / 6 for ep in fast)
    # the slow one sorts last in every order
    assert all(router.order(eps, None)[-1] is slow for _ in range(50))


def test_latency_a_little_load_does_not_send_traffic_to_a_slow_endpoint() -> None:
    fast, slow = endpoints("fast", "slow")
    fast._latency.add(0.010, time.monotonic())
    slow._latency.add(0.050, time.monotonic())
    fast.limiter.in_flight = 3  # 0.010 * (1 + 3/5) < 0.050: Finagle's (3 + 1) would pick slow
    router = make_router("latency")
    for _ in range(20):
        assert router.order([slow, fast], None)[0] is fast


def test_latency_unmeasured_endpoints_go_first() -> None:
    measured = endpoint("measured")
    measured._latency.add(0.010, time.monotonic())
    new = endpoint("new")
    router = make_router("latency")
    for _ in range(20):
        assert router.order([measured, new], None)[0] is new


def test_latency_counts_in_flight_load() -> None:
    a, b = endpoints("a", "b")
    a._latency.add(0.010, time.monotonic())
    b._latency.add(0.015, time.monotonic())
    a.limiter.in_flight = 4  # 0.010 * (1 + 4/5) > 0.015 * (1 + 0/5)
    router = make_router("latency")
    for _ in range(20):
        assert router.order([a, b], None)[0] is b


# --------------------------------------------------------------------- priority
def test_priority_lowest_value_first_both_members_of_a_tier_used() -> None:
    p1a = endpoint("p1a", priority=1)
    p0 = endpoint("p0", priority=0)
    p2 = endpoint("p2", priority=2)
    p1b = endpoint("p1b", priority=1)
    router = make_router("priority")
    orders = [names(router.order([p1a, p0, p2, p1b], None)) for _ in range(8)]
    for order in orders:
        assert order[0] == "p0"
        assert set(order[1:3]) == {"p1a", "p1b"}
        assert order[3] == "p2"
    assert set(order[1] for order in orders) == {"p1a", "p1b"}


def test_priority_rotation_within_a_tier_is_even() -> None:
    eps = [
        endpoint("primary-1", priority=0),
        endpoint("primary-2", priority=0),
        endpoint("secondary-1", priority=1),
        endpoint("secondary-2", priority=1),
    ]
    router = make_router("priority")
    firsts = Counter(router.order(eps, None)[0].name for _ in range(100))
    print(f"\npriority firsts over 100 calls: {dict(firsts)}")
    assert firsts == {"primary-1": 50, "primary-2": 50}


# --------------------------------------------------------------------- key-hash
def test_key_hash_same_key_same_order_always() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("key-hash")
    op = get_object("bucket", "some/key.txt")
    first = names(router.order(eps, op))
    for _ in range(20):
        assert names(router.order(eps, op)) == first
        assert names(router.order(list(reversed(eps)), op)) == first  # input order is irrelevant


def test_key_hash_spreads_keys_over_endpoints() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("key-hash")
    owners = Counter(router.order(eps, get_object("bk", f"key-{i}"))[0].name for i in range(2000))
    print(f"\nkey-hash owners of 2000 keys: {dict(owners)}")
    assert set(owners) == {"a", "b", "c", "d"}
    assert all(350 <= n <= 650 for n in owners.values())


def test_key_hash_removing_an_endpoint_moves_only_its_keys() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("key-hash")
    keys = [f"obj/{i}" for i in range(1000)]
    before = {k: names(router.order(eps, get_object("bk", k))) for k in keys}
    remaining = [ep for ep in eps if ep.name != "c"]
    moved = 0
    for k in keys:
        after = names(router.order(remaining, get_object("bk", k)))
        # rendezvous: the remaining endpoints keep their relative order for every key
        assert after == [n for n in before[k] if n != "c"]
        if before[k][0] != after[0]:
            moved += 1
            assert before[k][0] == "c"
    owned_by_c = sum(1 for k in keys if before[k][0] == "c")
    assert moved == owned_by_c > 0


def test_key_hash_bucket_is_part_of_the_key() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("key-hash")
    differ = sum(
        names(router.order(eps, get_object("b1", f"k{i}")))
        != names(router.order(eps, get_object("b2", f"k{i}")))
        for i in range(100)
    )
    assert differ > 50


def test_key_hash_without_a_key_rotates() -> None:
    eps = endpoints("a", "b", "c")
    router = make_router("key-hash")
    firsts = [router.order(eps, None)[0].name for _ in range(6)]
    assert Counter(firsts) == {"a": 2, "b": 2, "c": 2}


# ---------------------------------------------------------------- strategy names
def test_unknown_strategy_is_a_config_error_listing_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        make_router("fastest")
    message = str(err.value)
    assert "fastest" in message
    for name in STRATEGIES:
        assert name in message
    with pytest.raises(ConfigError, match="round-robin"):
        Multiplexer(strategy="nope")


def test_every_documented_strategy_exists() -> None:
    assert set(STRATEGIES) == {
        "round-robin",
        "least-loaded",
        "random",
        "weighted",
        "latency",
        "priority",
        "key-hash",
    }
    for name in STRATEGIES:
        router = make_router(name)
        assert router.name == name
        eps = endpoints("a", "b", "c")
        assert sorted(names(router.order(eps, get_object("b", "k")))) == ["a", "b", "c"]


def test_random_is_a_uniform_shuffle() -> None:
    eps = endpoints("a", "b", "c", "d")
    router = make_router("random")
    firsts = Counter(router.order(eps, None)[0].name for _ in range(4000))
    assert all(850 <= n <= 1150 for n in firsts.values())


# ------------------------------------------------------------- Multiplexer.ranked
def mux_of(*endpoint_names: str, **kwargs: Any) -> Multiplexer:
    mux = Multiplexer(clock=kwargs.pop("clock", FakeClock()), **kwargs)
    for name in endpoint_names:
        mux.add_endpoint(name, URL, "a", "b")
    return mux


def test_ranked_open_breaker_goes_last() -> None:
    mux = mux_of("a", "b", "c")
    mux.endpoint("a").breaker.force_open(30)
    for _ in range(6):
        order = names(mux.ranked())
        assert order[-1] == "a"
        assert set(order[:2]) == {"b", "c"}


def test_ranked_open_endpoints_soonest_retry_first() -> None:
    mux = mux_of("a", "b", "c")
    mux.endpoint("a").breaker.force_open(30)
    mux.endpoint("b").breaker.force_open(10)
    assert names(mux.ranked())[1:] == ["b", "a"]


def test_ranked_half_open_endpoint_is_back_among_the_healthy() -> None:
    clock = FakeClock()
    mux = mux_of("a", "b", clock=clock)
    mux.endpoint("a").breaker.force_open(5)
    assert names(mux.ranked())[-1] == "a"
    clock.advance(5)
    assert mux.endpoint("a").breaker.state == "half_open"
    firsts = Counter(mux.ranked()[0].name for _ in range(4))
    assert firsts == {"a": 2, "b": 2}


def test_ranked_misconfigured_after_healthy_before_open() -> None:
    mux = mux_of("a", "b", "c", "d")
    mux.endpoint("a").misconfigured = True
    mux.endpoint("b").breaker.force_open(30)
    for _ in range(4):
        order = names(mux.ranked())
        assert set(order[:2]) == {"c", "d"}
        assert order[2:] == ["a", "b"]


def test_ranked_throttled_demoted_under_round_robin() -> None:
    clock = FakeClock()
    mux = mux_of("a", "b", "c", clock=clock)
    mux.endpoint("a").limiter.on_throttle()
    for _ in range(6):
        assert names(mux.ranked())[-1] == "a"
    clock.advance(60)  # the throttle memory has passed
    firsts = Counter(mux.ranked()[0].name for _ in range(6))
    assert firsts == {"a": 2, "b": 2, "c": 2}


def test_ranked_round_robin_still_rotates_while_one_is_throttled() -> None:
    mux = mux_of("a", "b", "c")
    mux.endpoint("c").limiter.on_throttle()
    firsts = Counter(mux.ranked()[0].name for _ in range(10))
    print(f"\nround-robin firsts with c throttled: {dict(firsts)}")
    assert firsts == {"a": 5, "b": 5}


def test_ranked_throttled_not_demoted_under_priority() -> None:
    mux = Multiplexer(strategy="priority", clock=FakeClock())
    mux.add_endpoint("primary", URL, "a", "b", priority=0)
    mux.add_endpoint("secondary", URL, "a", "b", priority=1)
    mux.endpoint("primary").limiter.on_throttle()
    assert names(mux.ranked()) == ["primary", "secondary"]
    # but an open primary hands everything to the secondary
    mux.endpoint("primary").breaker.force_open(30)
    assert names(mux.ranked()) == ["secondary", "primary"]
    # and round-robin, asked per call, does demote it
    mux.endpoint("primary").breaker.reset()
    assert names(mux.ranked(strategy="round-robin"))[-1] == "primary"


def test_ranked_with_no_endpoints_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Multiplexer().ranked()


def test_ranked_uses_the_per_call_strategy_and_keeps_its_rotation() -> None:
    mux = mux_of("a", "b", "c", "d")
    firsts = [mux.ranked(strategy="round-robin")[0].name for _ in range(10)]
    assert Counter(firsts) == {"a": 3, "b": 3, "c": 2, "d": 2}
    op = get_object("bk", "k")
    kh = names(mux.ranked(op, strategy="key-hash"))
    assert all(names(mux.ranked(op, strategy="key-hash")) == kh for _ in range(5))
