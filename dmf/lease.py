"""One writing run at a time per cluster: a Prefect global concurrency limit (runs of one Prefect
server wait their turn) and a lease in the bucket (runs from another Prefect server, or none, are
refused too). See dmf.core.lease for the bucket protocol."""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from dmf.core.errors import DmfError, LayoutError
from dmf.core.lease import Lease, blocking, cluster_slug, leases_prefix
from dmf.core.timestamps import utcnow
from dmf.storage import Storage

log = logging.getLogger(__name__)
# How long a crashed holder blocks the cluster: both leases expire this long after their last renewal
# (Prefect takes 60 s at the least).
LEASE_TTL_S = max(60, int(os.environ.get("DMF_LEASE_TTL_SECONDS", "900")))


class ClusterBusy(DmfError):
    """Another run holds the cluster: this one did nothing."""


def _read_leases(storage: Storage, cluster_name: str) -> list[Lease]:
    leases = []
    for obj in storage.list_objects(leases_prefix(cluster_name)):
        data = storage.get_bytes(obj["Key"], missing_ok=True)
        if data is None:
            continue  # released between the listing and the read
        try:
            leases.append(Lease.from_json(obj["Key"], data))
        except LayoutError as exc:
            log.warning("%s; ignored", exc)
    return leases


@contextmanager
def bucket_lease(storage: Storage, cluster_name: str, holder: str, wait_s: float,
                 ttl_s: int = LEASE_TTL_S) -> Iterator[Lease]:
    """Holds the cluster's lease in the bucket for the duration, renewed every third of its TTL."""
    deadline = time.monotonic() + wait_s
    mine = Lease.new(cluster_name, holder, uuid.uuid4().hex[:12], utcnow(), ttl_s)
    while True:
        storage.put_bytes(mine.key, mine.to_json(), "application/json")
        others = blocking(_read_leases(storage, cluster_name), mine.key, utcnow())
        if not others:
            break
        # Dies here: our lease stays until it expires, and only delays the next run by its TTL.
        storage.delete_keys([mine.key])
        if time.monotonic() >= deadline:
            raise ClusterBusy(f"cluster {cluster_name!r} is busy: {others[0].describe()}; nothing was done, "
                              "try again when it finishes")
        time.sleep(min(random.uniform(1, 3), max(0.0, deadline - time.monotonic())))
    stop = threading.Event()

    def renew() -> None:
        nonlocal mine
        while not stop.wait(ttl_s / 3):
            mine = mine.renewed(utcnow(), ttl_s)
            try:
                storage.put_bytes(mine.key, mine.to_json(), "application/json")
            except DmfError as exc:  # the next renewal tries again; the TTL leaves room for two misses
                log.warning("could not renew the lease %s: %s", mine.key, exc)
    renewer = threading.Thread(target=renew, name="dmf-lease", daemon=True)
    renewer.start()
    try:
        yield mine
    finally:
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
def cluster_lease(storage: Storage, cluster_name: str, holder: str, wait_s: float) -> Iterator[Lease]:
    """Waits up to `wait_s` for the cluster, then holds it: first the Prefect slot (queued fairly by the
    server), then the bucket lease. Refuses with ClusterBusy when the wait runs out."""
    from prefect.concurrency.sync import concurrency

    limit = f"dmf-cluster-{cluster_slug(cluster_name)}"
    _ensure_prefect_limit(limit)
    started = time.monotonic()
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(limit, occupy=1, timeout_seconds=max(wait_s, 1), strict=True,
                                           lease_duration=LEASE_TTL_S))
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
