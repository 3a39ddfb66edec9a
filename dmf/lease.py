"""One writing run at a time per cluster: a Prefect global concurrency limit (runs of one Prefect
server wait their turn) and a lease in the bucket (runs from another Prefect server, or none, are
refused too). See dmf.core.lease for the bucket protocol and its clocks.

A holder that cannot renew its lease in time (the store failing, its object removed) has lost it:
every destructive step calls `check_lease` first, so such a run stops before its next delete."""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from dmf.core.errors import DmfError, LayoutError, PermanentError
from dmf.core.keys import cluster_slug, leases_prefix
from dmf.core.lease import DEFAULT_TTL_S, SKEW_S, Lease, blocking, holder_deadline, lapsed, renewal_delay
from dmf.core.timestamps import utcnow
from dmf.storage import Storage

log = logging.getLogger(__name__)
# How long a crashed holder blocks the bucket: its lease lapses this long after its last renewal (plus
# SKEW_S). No shorter than 3 x SKEW_S: a holder renews every third of it and must land each renewal
# within TTL - SKEW_S of the last. Prefect's slot, held by backups, purges and cleanups with it, takes
# 60 s at the least; a copy holds only the bucket's lease.
LEASE_TTL_S = max(3 * SKEW_S, int(os.environ.get("DMF_LEASE_TTL_SECONDS", str(DEFAULT_TTL_S))))
SLOT_LEASE_S = max(60, LEASE_TTL_S)


class ClusterBusy(DmfError):
    """Another run holds the cluster: this one did nothing."""


class LeaseLost(PermanentError):
    """This run no longer holds the cluster: it stopped before a destructive step."""


@dataclass(frozen=True)
class Clocks:
    """What the lease reads time from and waits with (tests pass fakes)."""
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    utcnow: Callable[[], datetime] = utcnow


class HeldLease:
    """The lease a run holds. `check(step)` before each destructive step; `renew()` from the renewer."""

    def __init__(self, storage: Storage, lease: Lease, deadline: float, clocks: Clocks):
        self.storage, self.lease, self.deadline, self.clocks = storage, lease, deadline, clocks
        self.lost: str | None = None

    def check(self, step: str) -> None:
        if self.lost is None and self.clocks.monotonic() >= self.deadline:
            self.lost = "lapsed: no renewal succeeded in time"
        if self.lost is not None:
            raise LeaseLost(f"the cluster's lease {self.lease.key} {self.lost}; stopped before {step} "
                            "(another run may hold the cluster now); a rerun goes on from here")

    def renew(self) -> bool:
        """One renewal, True if written. Once the deadline has passed, or our object is gone (removed
        by hand, or by a run that judged it lapsed), the lease is lost for good: never written again,
        since another run may hold the cluster by now."""
        if self.lost is not None:
            return False
        started = self.clocks.monotonic()
        if started >= self.deadline:
            self.lost = "lapsed: no renewal succeeded in time"
            return False
        try:
            if self.storage.get_bytes(self.lease.key, missing_ok=True) is None:
                self.lost = "was removed from the bucket"
                return False
            lease = self.lease.renewed(self.clocks.utcnow())
            self.storage.put_bytes(lease.key, lease.to_json(), "application/json", lockable=False)
        except DmfError as exc:  # tried again soon: the deadline leaves room for a few misses
            log.warning("could not renew the lease %s: %s", self.lease.key, exc)
            return False
        if self.clocks.monotonic() >= self.deadline:  # a write that stalled past the deadline
            self.lost = "lapsed: its renewal landed too late"
            return False
        self.lease, self.deadline = lease, holder_deadline(started, lease.ttl_s)
        return True


_HELD: ContextVar[HeldLease | None] = ContextVar("dmf_held_lease", default=None)


def check_lease(step: str) -> None:
    """Raises LeaseLost unless this run (its flow, or a task it submitted: Prefect copies the
    context) still holds the cluster's lease. Call before every destructive step done under it."""
    held = _HELD.get()
    if held is None:
        raise LeaseLost(f"{step} runs only under the cluster's lease, and this run holds none")
    held.check(step)


def _read_leases(storage: Storage, cluster_name: str) -> list[Lease]:
    leases = []
    for obj in storage.list_objects(leases_prefix(cluster_name)):
        data = storage.get_bytes(obj["Key"], missing_ok=True)
        if data is None:
            continue  # released between the listing and the read
        try:
            leases.append(Lease.from_json(obj["Key"], data, obj["LastModified"]))
        except LayoutError as exc:
            log.warning("%s; ignored", exc)
    return leases


@contextmanager
def bucket_lease(storage: Storage, cluster_name: str, holder: str, wait_s: float, ttl_s: int = LEASE_TTL_S,
                 clocks: Clocks = Clocks()) -> Iterator[HeldLease]:
    """Holds the cluster's lease in the bucket for the duration, renewed every third of its TTL."""
    deadline = clocks.monotonic() + wait_s
    token = uuid.uuid4().hex[:12]
    while True:
        started = clocks.monotonic()
        mine = Lease.new(cluster_name, holder, token, clocks.utcnow(), ttl_s)  # a fresh expiry every attempt
        storage.put_bytes(mine.key, mine.to_json(), "application/json", lockable=False)
        leases = _read_leases(storage, cluster_name)
        others = blocking(leases, mine.key)
        if others == []:
            storage.delete_keys([lease.key for lease in lapsed(leases, mine.key)])
            break
        # Dies here: our lease stays until it lapses, and only delays the next run by its TTL.
        storage.delete_keys([mine.key])
        if clocks.monotonic() >= deadline:
            who = others[0].describe() if others else "the store does not list our lease to judge by"
            raise ClusterBusy(f"cluster {cluster_name!r} is busy: {who}; nothing was done, "
                              "try again when it finishes")
        clocks.sleep(min(random.uniform(1, 3), max(0.0, deadline - clocks.monotonic())))
    held = HeldLease(storage, mine, holder_deadline(started, ttl_s), clocks)
    stop = threading.Event()

    def renew() -> None:
        failed = False
        while not stop.wait(renewal_delay(ttl_s, failed)):
            failed = not held.renew()
            if held.lost is not None:
                log.error("the cluster's lease %s %s: this run stops before its next destructive step",
                          held.lease.key, held.lost)
                return
    renewer = threading.Thread(target=renew, name="dmf-lease", daemon=True)
    renewer.start()
    in_context = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(in_context)
        stop.set()
        renewer.join()
        storage.delete_keys([mine.key])


def _ensure_prefect_limit(name: str) -> None:
    """A global concurrency limit of one slot for the cluster, created on first use."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another run created it first


@contextmanager
def cluster_lease(storage: Storage, cluster_name: str, holder: str, wait_s: float) -> Iterator[HeldLease]:
    """Waits up to `wait_s` for the cluster, then holds it: first the Prefect slot (queued fairly by the
    server; its lease lapses SLOT_LEASE_S after a killed holder's last renewal), then
    the bucket lease. Refuses with ClusterBusy when the wait runs out."""
    from prefect.concurrency.sync import concurrency

    limit = f"dmf-cluster-{cluster_slug(cluster_name)}"
    _ensure_prefect_limit(limit)
    started = time.monotonic()
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(limit, occupy=1, timeout_seconds=max(wait_s, 1), strict=True,
                                           lease_duration=SLOT_LEASE_S))
        except TimeoutError:
            raise ClusterBusy(f"cluster {cluster_name!r} is busy: another run of this Prefect server has held "
                              f"it for over {wait_s:.0f}s; nothing was done, try again when it finishes") from None
        yield held.enter_context(
            bucket_lease(storage, cluster_name, holder, max(0.0, wait_s - (time.monotonic() - started))))


def run_holder() -> str:
    """Names the holder in a refusal: the Prefect flow run, and the process that runs it."""
    import socket

    from prefect.runtime import flow_run
    where = f"pid {os.getpid()} on {socket.gethostname()}"
    return f"flow run {flow_run.name} ({flow_run.id}), {where}" if flow_run.id else where
