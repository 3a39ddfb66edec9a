"""`backup verify`'s reads: the sets' manifests, one listing per set (key and size of every object:
no HEAD per object), and, for the deep check, every chosen object's bytes, streamed and hashed on a
bounded pool. What the reads mean is dmf.core.verify's.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from dmf.core.client_encryption import sort_authentic
from dmf.core.keys import SetRef
from dmf.core.manifest import Manifest
from dmf.core.object_lock import short_locks
from dmf.core.verify import LOCK, MANIFEST, MISSING, Expected, Finding, check_listing, check_read
from dmf.encryption import expected
from dmf.repository import Repository
from dmf.storage import Storage


def read_manifests(repo: Repository, refs: Sequence[SetRef]) -> tuple[list[Manifest], list[Finding]]:
    """The sets' manifests; one deleted since the catalog listed it is a finding (its set was complete),
    and so, under client-side encryption, is one that does not authenticate under the repository's
    key (plaintext, another key, rewritten): its entries are not checked, since they are not dmf's."""
    with ThreadPoolExecutor(repo.parallel) as pool:
        read = list(pool.map(repo.read_manifest, refs))
    found = [Finding(ref, ref.manifest_key, MISSING, "missing") for ref, m in zip(refs, read) if m is None]
    trusted, refused = sort_authentic([m for m in read if m is not None],
                                      expected(repo.storage.repository.client_key()))
    return trusted, found + [Finding(m.set, m.set.manifest_key, MANIFEST, problem) for m, problem in refused]


def check_listings(repo: Repository, manifests: Sequence[Manifest]) -> tuple[list[Finding], list[Expected]]:
    """Each set's prefix listed once (ListObjectsV2 pages hold key and size) against its manifest:
    the findings, and the objects whole by size."""
    def one(manifest: Manifest) -> tuple[list[Finding], list[Expected]]:
        listing = repo.storage.list_objects(manifest.set.prefix)
        return check_listing(manifest, ((o["Key"], o["Size"]) for o in listing))

    with ThreadPoolExecutor(repo.parallel) as pool:
        checked = list(pool.map(one, manifests))
    return [f for found, _ in checked for f in found], [o for _, whole in checked for o in whole]


def check_locks(repo: Repository, manifests: Sequence[Manifest], span: timedelta) -> list[Finding]:
    """Under object_lock: each object of the sets (manifest included) whose lock ends before the policy
    needs (dmf.core.object_lock), from one HEAD per object."""
    keys = [(m.set, key) for m in manifests for key in [m.set.manifest_key, *(m.set.file_key(f.path) for f in m.files)]]
    with ThreadPoolExecutor(repo.parallel) as pool:
        dates = list(pool.map(lambda item: repo.storage.lock_of(item[1]), keys))
    by_set: dict[SetRef, dict[str, datetime | None]] = {}
    for (ref, key), until in zip(keys, dates):
        by_set.setdefault(ref, {})[key] = until
    return [Finding(short.ref, short.key, LOCK, short.detail)
            for ref, locks in by_set.items() for short in short_locks(ref, locks, span)]


def rehash(storage: Storage, expected: Expected, progress: Callable[[int], None] | None = None) -> Finding | None:
    """Re-reads one object in chunks (memory: one chunk), hashing as it goes."""
    return check_read(expected, *storage.read_back(expected.key, progress))


def deep_check(storage: Storage, objects: Sequence[Expected], workers: int,
               progress: Callable[[int], None] | None = None) -> list[Finding]:
    """Every object re-read and its SHA-256 checked, `workers` at a time."""
    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        return [f for f in pool.map(lambda o: rehash(storage, o, progress), objects) if f is not None]
