"""Copying sets from a repository to one of its copies (dmf.core.copies decides which), as a backup
writes them: every data object first, each verified by the SHA-256 its manifest gives (the bytes as
stored), then the snapshot's schema, then the manifest, byte for byte, last.

Server-side (CopyObject, UploadPartCopy) when both repositories are on one store under one identity,
the copy then read back and hashed; streamed through the manager otherwise, hashed on the way.

What a copy killed at any point leaves on the copy:
  - before a set's manifest: objects of a set without a manifest, never listed complete there; the next
    copy run copies the set again (objects already there are read back and kept if their SHA-256 is the
    manifest's, copied over otherwise), and a purge or cleanup of the copy removes them if the run never
    comes;
  - after a set's manifest: the set is complete there, whole, and the next run skips it.
Nothing is ever deleted from the primary.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from dmf.core.catalog import Catalog, resolve_chain
from dmf.core.copies import copies_line, copy_lag, sets_to_copy
from dmf.core.errors import DmfError, InputError, LayoutError, PermanentError
from dmf.core.targets import DbTarget
from dmf.core.keys import SetRef, schema_key
from dmf.core.lifecycle import RetentionPolicy
from dmf.core.manifest import FileEntry, Manifest, unconfirmed
from dmf.core.timestamps import format_ts, utcnow
from dmf.lease import check_lease
from dmf.repository import Repository
from dmf.s3_settings import S3Settings
from dmf.storage import SHA256_META, Storage, StorageError, VerificationError

log = logging.getLogger(__name__)


class SourceDamaged(PermanentError):
    """An object of the primary does not match its manifest: the copy would carry the damage."""


def check_copyable(primary: S3Settings, copy: S3Settings, name: str) -> None:
    """A copy holds the bytes as stored, so it must open them as the primary does: same client-side
    encryption and key (SSE settings may differ: the store decrypts and encrypts)."""
    if primary.encryption != copy.encryption or primary.client_key() != copy.client_key():
        raise InputError(f"copy {name!r} must have the primary's encryption setting and encryption_key: "
                         "a copy holds the objects as stored, and restores open them with its own block's key")


def one_store(primary: S3Settings, copy: S3Settings) -> bool:
    """Whether the copy's store can read the primary's objects itself: one endpoint, region and identity
    (and no SSE-C, whose key a server-side copy would have to send twice)."""
    def where(repo: S3Settings) -> tuple:
        params = repo.credentials.aws_client_parameters
        return (params.endpoint_url, repo.region or repo.credentials.region_name,
                repo.credentials.aws_access_key_id)
    return where(primary) == where(copy) and "SSE-C" not in (primary.sse, copy.sse)


def policy_of(repo: S3Settings) -> RetentionPolicy | None:
    return RetentionPolicy(repo.keep_fulls, repo.keep_days) if repo.keep_fulls or repo.keep_days else None


@dataclass
class CopyResult:
    copy: str
    mode: str                     # server-side or streamed
    sets: list[str]               # prefixes sealed on the copy
    bytes: int
    failed: list[str]             # one line per set not copied


class Copier:
    def __init__(self, primary: Repository, copy: Repository):
        self.primary, self.copy = primary, copy
        self.server_side = one_store(primary.storage.repository, copy.storage.repository)

    def plan(self, now=None) -> list[SetRef]:
        """The sets to copy now: complete on the primary, not on the copy, kept by the copy's retention."""
        now = now or utcnow()
        return sets_to_copy(self.primary.listing_catalog(), self.copy.listing_catalog(),
                            policy_of(self.copy.storage.repository), now)

    def copy_set(self, ref: SetRef) -> int:
        """Copies one set (data, schema, manifest last); returns its bytes."""
        raw = self.primary.storage.get_bytes(ref.manifest_key, missing_ok=True)
        if raw is None:
            raise StorageError(f"{ref.prefix}: its manifest is gone from the primary (purged since the listing?)")
        manifest = Manifest.from_json(raw, expected=ref)
        workers = self.copy.storage.repository.max_concurrency
        with ThreadPoolExecutor(workers, thread_name_prefix="copy") as pool:
            list(pool.map(lambda entry: self._copy_object(ref.file_key(entry.path), entry), manifest.files))
        self._copy_schema(ref)
        missing = unconfirmed(manifest.files, self.copy.stored_sizes(ref))
        if missing:  # a purge or cleanup of the copy removed some meanwhile: never a manifest over a gap
            raise StorageError(f"{ref.prefix}: not sealed on the copy: {'; '.join(missing[:3])}")
        check_lease(f"sealing {ref.prefix} on the copy")
        self.copy.seal(ref, raw)
        return manifest.total_bytes

    def _copy_schema(self, ref: SetRef) -> None:
        key = schema_key(ref.snapshot_ts)
        if self.copy.storage.head(key) is not None:
            return
        data = self.primary.storage.get_bytes(key, missing_ok=True)
        if data is not None:
            self.copy.storage.put_bytes(key, data, "text/plain")

    def _copy_object(self, key: str, entry: FileEntry) -> None:
        dest = self.copy.storage
        head = dest.head(key)
        # Left by a killed run: kept only once read back, since its metadata may lie (a server-side
        # copy carries the manifest's SHA-256 before it is read back), and locked (it may have died before).
        if head is not None and head["ContentLength"] == entry.size and self.copy.storage.read_back(key) == (entry.size, entry.sha256):
            dest.lock(key)
            return
        if self.server_side:
            self._server_side(key, entry)
        else:
            # upload_stream hashes the bytes on their way through, and verifies what the copy stored.
            stored = dest.upload_stream(key, self.primary.storage.iter_object(key), entry.size)
            if stored.sha256 != entry.sha256:
                raise SourceDamaged(f"s3://{self.primary.storage.bucket}/{key} does not match its manifest's "
                                    "SHA-256 on the primary: not copied (`dmf backup verify --deep` there)")

    def _server_side(self, key: str, entry: FileEntry) -> None:
        dest, source = self.copy.storage, self.primary.storage
        # The lock goes on after the copy (PutObjectRetention): a CopyObject carrying it needs a Content-MD5,
        # which a request without a body cannot give (moto refuses it).
        extra = {**{k: v for k, v in dest.repository.write_params().items() if not k.startswith("ObjectLock")},
                 "Metadata": {SHA256_META: entry.sha256}, "MetadataDirective": "REPLACE"}
        try:
            dest.s3.copy({"Bucket": source.bucket, "Key": key}, dest.bucket, key, ExtraArgs=extra,
                         SourceClient=source.s3)
        except Exception as exc:  # noqa: BLE001 — botocore and s3transfer errors alike, named by key
            raise StorageError(f"S3 copy of {key} from s3://{source.bucket} to s3://{dest.bucket} failed: "
                               f"{str(exc).splitlines()[0]}") from None
        if self.copy.storage.read_back(key) != (entry.size, entry.sha256):
            # Never leave damaged bytes labelled with the manifest's SHA-256 (their metadata).
            dest.delete_keys([key])
            raise SourceDamaged(f"s3://{dest.bucket}/{key} as copied does not match its manifest's SHA-256 "
                                f"(the primary's object is damaged, or the copy is): not sealed")
        dest.lock(key)


def copy_lags(primary: Catalog, copies: dict[str, S3Settings]) -> list[dict]:
    """`backup status`'s line per copy: how far it lags behind the primary (dmf.core.copies.copy_lag)."""
    now = utcnow()
    lags = []
    for name, settings in copies.items():
        try:
            lag = copy_lag(name, primary, Repository(Storage(settings)).listing_catalog(), policy_of(settings), now)
        except StorageError as exc:
            lags.append({"copy": name, "missing": None, "lag_seconds": None,
                         "line": f"copy {name}: unreadable ({exc})"})
            continue
        lags.append({"copy": name, "missing": lag.missing, "lag_seconds": lag.lag(now).total_seconds(),
                     "line": lag.describe(now)})
    return lags


def copies_holding(copies: dict[str, S3Settings], target: DbTarget, at: datetime) -> list[str]:
    """The copies from which a restore of `target` to `at` would get the same chain as the primary's (its
    full and increments complete there); a copy that cannot be read holds nothing."""
    held = []
    for name, settings in copies.items():
        try:
            if resolve_chain(Repository(Storage(settings)).listing_catalog(), target, at) is not None:
                held.append(name)
        except DmfError as exc:
            log.warning("copy %s not read (%s)", name, exc)
    return held


@contextmanager
def naming_copies(primary: S3Settings, name: str, target: DbTarget, at: datetime,
                  load: Callable[[str], S3Settings]) -> Iterator[None]:
    """A restore's reads of the primary: when it cannot be read, or a set fails verification, one line that
    says so and names the copies holding the restore point. No silent fallback: the operator chooses."""
    try:
        yield
    except StorageError as exc:
        if not primary.copy_to:
            raise
        what = (f"a set of repository {name!r} fails verification ({exc})" if isinstance(exc, VerificationError)
                else f"repository {name!r} cannot be read ({exc})")
        holding = copies_holding({c: load(c) for c in primary.copy_to}, target, at)
        raise type(exc)(copies_line(what, holding)) from None


def copy_all(copier: Copier, name: str, refs: list[SetRef]) -> CopyResult:
    """Copies `refs` in order; a set that fails is named and the rest go on (a later full is worth having
    even if an old increment is damaged)."""
    result = CopyResult(name, "server-side" if copier.server_side else "streamed", [], 0, [])
    for ref in refs:
        try:
            result.bytes += copier.copy_set(ref)
            result.sets.append(ref.prefix)
        except (StorageError, SourceDamaged, LayoutError) as exc:
            result.failed.append(f"{ref.prefix} ({format_ts(ref.time)}): {exc}")
            log.error("not copied to %s: %s", name, result.failed[-1])
    return result
