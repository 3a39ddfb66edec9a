"""bucket_lease over a fake store and a fake clock: the store stamps LastModified (whole seconds)
from the same time line the runs' monotonic clocks read; sleeping only advances it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from dmf.core.keys import leases_prefix
from dmf.core.lease import SKEW_S, Lease
from dmf.core.timestamps import parse_ts
from dmf.lease import ClusterBusy, Clocks, LeaseLost, bucket_lease, check_lease
from dmf.storage import StorageError

T0 = parse_ts("20260101120000")
TTL = 60


class TimeLine:
    def __init__(self):
        self.t = 0.0

    def clocks(self, wall_skew: timedelta = timedelta(0)) -> Clocks:
        """A run's clocks: its wall clock may be off by `wall_skew`; its monotonic clock is the time line."""
        return Clocks(monotonic=lambda: self.t, sleep=self.advance,
                      utcnow=lambda: T0 + timedelta(seconds=self.t) + wall_skew)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def store_now(self):
        return T0 + timedelta(seconds=int(self.t))


class FakeStore:
    def __init__(self, time: TimeLine):
        self.time, self.objects, self.failing = time, {}, False
        self.lock = threading.Lock()

    def put_bytes(self, key, data, content_type=None, lockable=True):
        if self.failing:
            raise StorageError(f"S3 put s3://b/{key} failed: 503: Slow Down")
        with self.lock:
            self.objects[key] = (data, self.time.store_now())

    def get_bytes(self, key, missing_ok=False):
        with self.lock:
            found = self.objects.get(key)
        return found[0] if found else None

    def list_objects(self, prefix):
        with self.lock:
            return [{"Key": k, "LastModified": at} for k, (_, at) in sorted(self.objects.items())
                    if k.startswith(prefix)]

    def delete_keys(self, keys):
        with self.lock:
            for key in keys:
                self.objects.pop(key, None)

    def lease(self, key) -> Lease:
        data, at = self.objects[key]
        return Lease.from_json(key, data, at)


@pytest.fixture
def time():
    return TimeLine()


@pytest.fixture
def store(time):
    return FakeStore(time)


def crashed_holder(store, time) -> str:
    """A lease written now by a run that then dies: never renewed, never released."""
    lease = Lease.new("prod", "flow run killed-fox", "dead", time.clocks().utcnow(), TTL)
    store.put_bytes(lease.key, lease.to_json())
    return lease.key


def test_a_run_that_waited_past_the_ttl_holds_a_fresh_lease_and_keeps_a_third_out(store, time):
    dead = crashed_holder(store, time)
    with bucket_lease(store, "prod", "second run", wait_s=600, ttl_s=TTL, clocks=time.clocks()) as held:
        assert dead not in store.objects
        # The killed holder is recognised TTL + SKEW_S after its last write, on the store's clock.
        assert TTL + SKEW_S <= time.t < TTL + SKEW_S + 4
        mine = store.lease(held.lease.key)
        assert mine.expires_at >= T0 + timedelta(seconds=time.t + TTL - 1)
        assert mine.stored_at == time.store_now()
        # A third run, right away and later (after renewals), finds the second holding the cluster.
        with pytest.raises(ClusterBusy, match="second run holds it"):
            with bucket_lease(store, "prod", "third run", wait_s=0, ttl_s=TTL, clocks=time.clocks()):
                pass
        for _ in range(10):
            time.advance(TTL / 3)
            assert held.renew()
        with pytest.raises(ClusterBusy, match="second run holds it"):
            with bucket_lease(store, "prod", "third run", wait_s=0, ttl_s=TTL, clocks=time.clocks()):
                pass
        assert store.lease(held.lease.key).expires_at >= T0 + timedelta(seconds=time.t + TTL - 1)
        held.check("a delete")
    # The killed run's lapsed lease went when the second took the cluster; the second released its own.
    assert dead not in store.objects and store.objects == {}


def test_a_waiter_with_a_wrong_wall_clock_still_respects_a_live_holder(store, time):
    with bucket_lease(store, "prod", "holder", wait_s=0, ttl_s=TTL, clocks=time.clocks()) as held:
        for skew in (timedelta(hours=3), timedelta(hours=-3)):
            with pytest.raises(ClusterBusy, match="holder holds it"):
                with bucket_lease(store, "prod", "skewed", wait_s=0, ttl_s=TTL, clocks=time.clocks(skew)):
                    pass
        time.advance(TTL / 3)
        assert held.renew()
        time.advance(TTL / 3 + SKEW_S)  # past the first write's TTL: the renewal is what counts
        with pytest.raises(ClusterBusy):
            with bucket_lease(store, "prod", "later", wait_s=0, ttl_s=TTL, clocks=time.clocks()):
                pass


def test_renewals_failing_past_the_deadline_stop_the_run_before_its_next_delete(store, time):
    with bucket_lease(store, "prod", "holder", wait_s=0, ttl_s=TTL, clocks=time.clocks()) as held:
        written = store.objects[held.lease.key]
        store.failing = True
        for _ in range(9):  # the renewer's retries, every 5 s: the holder still holds until TTL - SKEW_S
            time.advance(5)
            assert not held.renew()
            check_lease("a delete")
        time.advance(TTL - SKEW_S - time.t)
        with pytest.raises(LeaseLost, match="lapsed.*stopped before purge's deletes"):
            check_lease("purge's deletes")
        # The store is back, but another run may hold the cluster by now: never written again.
        store.failing = False
        assert not held.renew() and store.objects[held.lease.key] == written
        with pytest.raises(LeaseLost):
            held.check("a delete")


def test_a_lease_removed_from_the_bucket_is_lost_at_the_next_renewal(store, time):
    with bucket_lease(store, "prod", "holder", wait_s=0, ttl_s=TTL, clocks=time.clocks()) as held:
        store.delete_keys([held.lease.key])
        time.advance(TTL / 3)
        assert not held.renew() and held.lease.key not in store.objects
        with pytest.raises(LeaseLost, match="was removed from the bucket"):
            check_lease("clearsnapshot")


def test_a_renewal_that_lands_after_the_deadline_loses_the_lease(store, time):
    with bucket_lease(store, "prod", "holder", wait_s=0, ttl_s=TTL, clocks=time.clocks()) as held:
        put = store.put_bytes

        def stalled(key, data, content_type=None, lockable=True):
            time.advance(TTL)
            put(key, data, content_type, lockable)
        store.put_bytes = stalled
        time.advance(TTL / 3)
        assert not held.renew()
        with pytest.raises(LeaseLost, match="landed too late"):
            held.check("a delete")


def test_destructive_steps_outside_a_lease_are_refused(store, time):
    with pytest.raises(LeaseLost, match="holds none"):
        check_lease("a delete")
    with bucket_lease(store, "prod", "holder", wait_s=0, ttl_s=TTL, clocks=time.clocks()):
        check_lease("a delete")
    with pytest.raises(LeaseLost, match="holds none"):
        check_lease("a delete")
    assert list(store.list_objects(leases_prefix("prod"))) == []


def test_a_waiter_gives_up_after_its_wait_naming_the_holder(store, time):
    with bucket_lease(store, "prod", "flow run nimble-fox", wait_s=0, ttl_s=TTL, clocks=time.clocks()) as held:
        started = time.t
        with pytest.raises(ClusterBusy, match="flow run nimble-fox holds it since .*nothing was done"):
            with bucket_lease(store, "prod", "waiter", wait_s=30, ttl_s=TTL, clocks=time.clocks()):
                pass
        assert 30 <= time.t - started < 31
        assert [o["Key"] for o in store.list_objects(leases_prefix("prod"))] == [held.lease.key]


@pytest.mark.parametrize("configured, bucket, slot", [(None, 60, 60), ("5", 3 * SKEW_S, 60), ("45", 45, 60),
                                                      ("90", 90, 90)])
def test_the_bucket_lease_ttl_is_no_shorter_than_a_holder_can_renew_in_and_prefects_slot_no_shorter_than_60(
        configured, bucket, slot):
    env = {k: v for k, v in os.environ.items() if k != "DMF_LEASE_TTL_SECONDS"}
    if configured is not None:
        env["DMF_LEASE_TTL_SECONDS"] = configured
    out = subprocess.run([sys.executable, "-c", "from dmf.lease import LEASE_TTL_S, SLOT_LEASE_S; "
                          "print(LEASE_TTL_S, SLOT_LEASE_S)"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(bucket), str(slot)]
