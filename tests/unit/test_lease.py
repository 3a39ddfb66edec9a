"""The bucket lease's pure rules: key layout, what blocks (on the store's clock), renewal, parsing."""
from __future__ import annotations

from datetime import timedelta

import pytest

from dmf.core.errors import LayoutError
from dmf.core.keys import cluster_slug, leases_prefix
from dmf.core.lease import SKEW_S, Lease, blocking, holder_deadline, lapsed, renewal_delay
from dmf.core.timestamps import parse_ts

NOW = parse_ts("20260101120000")


def stored(lease: Lease, at) -> Lease:
    """The lease as a listing reads it back: the store's LastModified attached."""
    return Lease.from_json(lease.key, lease.to_json(), at)


def test_cluster_names_become_safe_distinct_key_parts():
    assert cluster_slug("Test Cluster").startswith("Test_Cluster-")
    assert cluster_slug("Test Cluster") != cluster_slug("Test_Cluster")
    assert "/" not in cluster_slug("a/../b") and ".." in cluster_slug("a/../b")  # '..' inside a name is inert
    assert leases_prefix("c1").startswith("leases/c1-") and leases_prefix("c1").endswith("/")


def test_new_lease_key_and_round_trip():
    lease = Lease.new("prod", "flow run x", "tok", NOW, 60)
    assert lease.key == f"{leases_prefix('prod')}20260101120000-tok.json"
    assert lease.expires_at == NOW + timedelta(seconds=60) and lease.ttl_s == 60
    assert Lease.from_json(lease.key, lease.to_json()) == lease


def test_every_write_carries_a_fresh_expiry():
    lease = Lease.new("prod", "me", "a", NOW, 60)
    later = lease.renewed(NOW + timedelta(minutes=30))
    assert later.expires_at == NOW + timedelta(minutes=31)
    assert (later.key, later.acquired_at) == (lease.key, lease.acquired_at)


def test_others_are_judged_on_the_store_clock_with_a_skew_margin():
    mine = stored(Lease.new("prod", "me", "a", NOW, 60), NOW)
    live = stored(Lease.new("prod", "other", "b", NOW - timedelta(hours=1), 60), NOW - timedelta(seconds=30))
    # Lapsed TTL seconds ago by the store's clock, but not yet SKEW_S past it: still respected.
    edge = stored(Lease.new("prod", "slow", "c", NOW, 60), NOW - timedelta(seconds=60 + SKEW_S - 1))
    gone = stored(Lease.new("prod", "crashed", "d", NOW, 60), NOW - timedelta(seconds=60 + SKEW_S))
    assert blocking([mine, live, edge, gone], mine.key) == [live, edge]
    assert lapsed([mine, live, edge, gone], mine.key) == [gone]
    # What a writer put in expires_at (its own clock, maybe hours off) decides nothing.
    skewed = stored(Lease.new("prod", "skewed", "e", NOW - timedelta(hours=5), 60), NOW)
    assert blocking([mine, skewed], mine.key) == [skewed]


def test_nothing_is_judged_when_our_own_lease_is_not_listed():
    other = stored(Lease.new("prod", "other", "b", NOW, 60), NOW - timedelta(hours=1))
    assert blocking([other], "leases/prod/mine.json") is None
    assert lapsed([other], "leases/prod/mine.json") == []


def test_a_lease_without_ttl_reads_its_span_as_the_ttl():
    old = b'{"holder": "x", "acquired_at": "20260101110000", "expires_at": "20260101111500"}'
    assert Lease.from_json("leases/x/y.json", old).ttl_s == 900


def test_the_holder_stops_before_any_waiter_may_take_over():
    assert holder_deadline(100.0, 60) == 100 + 60 - SKEW_S
    assert renewal_delay(60, last_failed=False) == 20 and renewal_delay(60, last_failed=True) < 20


def test_describe_names_holder_and_times():
    text = Lease.new("prod", "flow run nimble-fox", "a", NOW, 60).describe()
    assert "flow run nimble-fox" in text and "20260101120000" in text and "20260101120100" in text


@pytest.mark.parametrize("data", [b"not json", b"{}", b'{"holder": "x", "acquired_at": "soon", "expires_at": 1}',
                                  b'{"holder": "x", "acquired_at": "20260101110000", '
                                  b'"expires_at": "20260101111500", "ttl_s": "60"}', b"[]"])
def test_malformed_lease_is_a_layout_error(data):
    with pytest.raises(LayoutError):
        Lease.from_json("leases/x/y.json", data)
