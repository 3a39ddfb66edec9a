"""The bucket lease's pure rules: key layout, what blocks, renewal, and parsing."""
from __future__ import annotations

from datetime import timedelta

import pytest

from dmf.core.errors import LayoutError
from dmf.core.lease import Lease, blocking, cluster_slug, leases_prefix
from dmf.core.timestamps import parse_ts

NOW = parse_ts("20260101120000")


def test_cluster_names_become_safe_distinct_key_parts():
    assert cluster_slug("Test Cluster").startswith("Test_Cluster-")
    assert cluster_slug("Test Cluster") != cluster_slug("Test_Cluster")
    assert "/" not in cluster_slug("a/../b") and ".." in cluster_slug("a/../b")  # '..' inside a name is inert
    assert leases_prefix("c1").startswith("leases/c1-") and leases_prefix("c1").endswith("/")


def test_new_lease_key_and_round_trip():
    lease = Lease.new("prod", "flow run x", "tok", NOW, 900)
    assert lease.key == f"{leases_prefix('prod')}20260101120000-tok.json"
    assert lease.expires_at == NOW + timedelta(seconds=900)
    assert Lease.from_json(lease.key, lease.to_json()) == lease


def test_only_other_unexpired_leases_block():
    mine = Lease.new("prod", "me", "a", NOW, 900)
    live = Lease.new("prod", "other", "b", NOW - timedelta(seconds=60), 900)
    expired = Lease.new("prod", "crashed", "c", NOW - timedelta(hours=2), 900)
    assert blocking([mine, live, expired], mine.key, NOW) == [live]
    assert blocking([mine, expired], mine.key, NOW) == []
    # A lease that was renewed is in force again.
    assert blocking([expired.renewed(NOW, 900)], mine.key, NOW) == [expired.renewed(NOW, 900)]


def test_describe_names_holder_and_times():
    text = Lease.new("prod", "flow run nimble-fox", "a", NOW, 60).describe()
    assert "flow run nimble-fox" in text and "20260101120000" in text and "20260101120100" in text


@pytest.mark.parametrize("data", [b"not json", b"{}", b'{"holder": "x", "acquired_at": "soon", "expires_at": 1}'])
def test_malformed_lease_is_a_layout_error(data):
    with pytest.raises(LayoutError):
        Lease.from_json("leases/x/y.json", data)
