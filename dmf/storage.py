"""S3 operations the product needs, over the repository's settings (an `S3Repository` block, or its
plain twin): streamed, verified transfers.

Every object is verified after it is written, by its size and the strongest check the store
allows: its SHA-256 additional checksum where the store keeps one (checksum_mode: when_supported);
else its ETag, computed locally while the bytes stream (MD5 for a single PUT, MD5 of the part MD5s
for multipart), where the ETag is an MD5, i.e. the object is not encrypted with SSE-KMS or SSE-C;
else by reading the object back and comparing its SHA-256. The SHA-256 of the whole file goes into
the set's manifest for the restore to check.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from dmf.core.errors import DmfError
from dmf.s3_settings import S3Settings

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PARTS = 10_000
SHA256_META = "sha256"


class StorageError(DmfError):
    pass


class VerificationError(StorageError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def part_size_for(size: int, preferred: int) -> int:
    """The preferred part size, grown when needed to keep a file within S3's 10,000 parts."""
    return max(preferred, math.ceil(size / MAX_PARTS), 5 * MIB)


def multipart_etag(part_md5s: list[bytes]) -> str:
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def sha256_checksum(part_sha256s: list[bytes], multipart: bool) -> str:
    """The object's x-amz-checksum-sha256 as S3 reports it: the bytes' SHA-256, or for multipart the
    SHA-256 of the parts' SHA-256s with the part count."""
    if not multipart:
        return base64.b64encode(part_sha256s[0]).decode()
    return f"{base64.b64encode(hashlib.sha256(b''.join(part_sha256s)).digest()).decode()}-{len(part_sha256s)}"


def etag_is_md5(head: dict) -> bool:
    """Whether the object's ETag is an MD5 of its bytes: not under SSE-KMS (or DSSE-KMS) nor SSE-C."""
    return not (str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or head.get("SSECustomerAlgorithm"))


class _Rechunker:
    """Turns an iterator of arbitrary chunks into parts of exactly `size` bytes (last one shorter),
    holding at most one part plus one chunk."""

    def __init__(self, chunks: Iterable[bytes], size: int):
        self._chunks = iter(chunks)
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        pending: list[bytes] = []
        held = 0
        for chunk in self._chunks:
            while chunk:
                take = min(len(chunk), self._size - held)
                pending.append(chunk[:take] if take < len(chunk) else chunk)
                held += take
                chunk = chunk[take:]
                if held == self._size:
                    # Popped, so the suspended generator keeps no reference to the part it hands out.
                    joined, pending, held = [b"".join(pending)], [], 0
                    yield joined.pop()
        if held:
            yield b"".join(pending)


class PartPool:
    """Uploads parts on `workers` threads, shared by every file of a transfer. A slot is taken
    before a part is read and given back when its upload ends, so at most `workers` parts are in
    memory however many files stream at once. `inline` runs each upload in the caller instead."""

    def __init__(self, workers: int, inline: bool = False):
        self._slots = threading.BoundedSemaphore(workers)
        self._executor = None if inline else ThreadPoolExecutor(workers, thread_name_prefix="part")

    def read_part(self, parts: Iterator[bytes]) -> bytes | None:
        """The next of `parts` (None at the end), read once a slot is free; the slot passes to its submit."""
        self._slots.acquire()
        try:
            part = next(parts, None)
        except BaseException:
            self._slots.release()
            raise
        if part is None:
            self._slots.release()
        return part

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._executor is None:
            future: Future = Future()
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 — delivered through the future, as from a thread
                future.set_exception(exc)
        else:
            future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


class Storage:
    def __init__(self, repository: S3Settings, client: Any | None = None):
        self.repository = repository
        self.bucket = repository.bucket
        self.s3 = client or repository.client()
        self._checksums = repository.checksum_mode == "when_supported"
        self._key = repository.key_params()

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            if err.get("Code") == "NotImplemented":
                return StorageError(
                    f"S3 {action} s3://{self.bucket}/{key}: the store does not implement a feature of the "
                    f"request ({err.get('Message', '').strip()}); optional features in use: "
                    f"{self.repository.features_sent()} (see the repository block's checksum_mode and sse)")
            detail = f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
        else:
            detail = str(exc)
        return StorageError(f"S3 {action} s3://{self.bucket}/{key} failed: {detail}")

    # ---- listing -------------------------------------------------------------------------
    def list_prefixes(self, prefix: str = "", start_after: str = "") -> list[str]:
        """Common prefixes one level below `prefix` (delimiter listing: cost follows folders, not files),
        those sorting after `start_after` only when it is given."""
        return self.list_level(prefix, start_after)[0]

    def list_level(self, prefix: str = "", start_after: str = "") -> tuple[list[str], list[str]]:
        """One level below `prefix`, as a '/' delimiter listing shows it: the common prefixes, and the
        keys of the objects right at that level."""
        prefixes: list[str] = []
        keys: list[str] = []
        after = {"StartAfter": start_after} if start_after else {}
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/", **after):
                prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
                keys.extend(o["Key"] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from None
        return prefixes, keys

    def list_objects(self, prefix: str) -> Iterator[dict]:
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from None

    def open_uploads(self) -> Iterator[tuple[str, str, Any]]:
        """(key, upload_id, initiated) of every multipart upload begun and neither completed nor aborted."""
        try:
            for page in self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
                for upload in page.get("Uploads", []):
                    yield upload["Key"], upload["UploadId"], upload["Initiated"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list multipart uploads", "", exc) from None

    def head(self, key: str) -> dict | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key, **self._key,
                                       **({"ChecksumMode": "ENABLED"} if self._checksums else {}))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("head", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("head", key, exc) from None

    def match_existing(self, key: str, size: int, chunks: Callable[[], Iterable[bytes]]) -> StoredObject | None:
        """The object already at `key`, if it is a verified copy of the file (a retried run resumes).

        A single PUT from this process carries its SHA-256 as metadata; other objects (multipart, or
        put by a node) are checked by re-reading the source (`chunks()`, hashed, not uploaded) and
        comparing the ETag with the MD5 of the bytes or, for multipart, the MD5 of the part MD5s
        (AWS S3, moto) or of the whole object (what s3proxy's filesystem store reports on HEAD).
        """
        head = self.head(key)
        if head is None or head["ContentLength"] != size:
            return None
        stored = head.get("Metadata", {}).get(SHA256_META)
        if stored is not None:
            return StoredObject(key, size, stored)
        sha256, whole_md5, md5s = hashlib.sha256(), hashlib.md5(), []
        for part in _Rechunker(chunks(), part_size_for(size, self.repository.part_size_mib * MIB)):
            sha256.update(part)
            whole_md5.update(part)
            md5s.append(hashlib.md5(part).digest())
        if not etag_is_md5(head):
            return None  # not comparable without reading the object back: upload it again
        etag = head["ETag"].strip('"')
        matches = etag == whole_md5.hexdigest() or (len(md5s) > 1 and etag == multipart_etag(md5s))
        return StoredObject(key, size, sha256.hexdigest()) if matches else None

    # ---- small objects ------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  lockable: bool = True) -> StoredObject:
        """`lockable`: False for objects rewritten and deleted by design (leases, the catalog index), which
        never carry the repository's object lock."""
        digest = hashlib.sha256(data)
        params = self.repository.write_params()
        if not lockable:
            params = {k: v for k, v in params.items() if not k.startswith("ObjectLock")}
        try:
            response = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                          Metadata={SHA256_META: digest.hexdigest()}, **params,
                                          **self._checksum_request(digest.digest()), **self._lock_md5(data))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("put", key, exc) from None
        self.verify(key, response.get("ETag"), hashlib.md5(data).hexdigest(), len(data), digest.hexdigest(),
                    sha256_checksum([digest.digest()], multipart=False))
        return StoredObject(key, len(data), digest.hexdigest())

    def _lock_md5(self, data: bytes) -> dict:
        """S3 refuses a locked PUT without a checksum of its body: Content-MD5, which every store takes."""
        if self.repository.object_lock == "none" or self._checksums:
            return {}
        return {"ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode()}

    def _checksum_request(self, sha256: bytes) -> dict:
        if not self._checksums:
            return {}
        return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": base64.b64encode(sha256).decode()}

    def get_bytes(self, key: str, missing_ok: bool = False) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key, **self._key)["Body"].read()
        except ClientError as exc:
            if missing_ok and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail("get", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("get", key, exc) from None

    # ---- streamed upload ----------------------------------------------------------------
    def upload_stream(self, key: str, chunks: Iterable[bytes], size: int,
                      progress: Callable[[int], None] | None = None,
                      parts: PartPool | None = None) -> StoredObject:
        """Uploads a stream of known `size`, verified by size and ETag, its SHA-256 computed on the way.

        A multipart upload sends its parts on `parts` (in parallel with this thread reading the next
        one), else one after another; either way a part is read only when it can be held.
        """
        part_size = part_size_for(size, self.repository.part_size_mib * MIB)
        sha256 = hashlib.sha256()
        if size <= part_size:
            data = b"".join(chunks)
            if len(data) != size:
                raise VerificationError(f"{key}: read {len(data)} bytes, expected {size} (file changed?)")
            stored = self.put_bytes(key, data)
            if progress:
                progress(size)
            return stored
        parts = parts or PartPool(1, inline=True)
        upload_id = self.create_multipart(key)

        def send(number: int, part: bytes, part_sha256: bytes) -> dict:
            response = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                           Body=part, **self._key, **self._checksum_request(part_sha256))
            if progress:
                progress(len(part))
            checksum = {"ChecksumSHA256": base64.b64encode(part_sha256).decode()} if self._checksums else {}
            return {"PartNumber": number, "ETag": response["ETag"], **checksum}

        futures: list[Future] = []
        failed = threading.Event()
        try:
            md5s, part_sha256s, total = [], [], 0
            source, number = iter(_Rechunker(chunks, part_size)), 0
            while (part := parts.read_part(source)) is not None:
                number += 1
                sha256.update(part)
                md5s.append(hashlib.md5(part).digest())
                part_sha256s.append(hashlib.sha256(part).digest() if self._checksums else b"")
                total += len(part)
                futures.append(parts.submit(send, number, part, part_sha256s[-1]))
                futures[-1].add_done_callback(lambda f: f.cancelled() or f.exception() is None or failed.set())
                del part  # held by the upload now; this thread must not keep it alive while reading on
                if failed.is_set():
                    break  # stop reading; result() below raises the part's error
            uploaded = [f.result() for f in futures]
            if total != size:
                raise VerificationError(f"{key}: read {total} bytes, expected {size} (file changed?)")
            self.complete_multipart(key, upload_id, uploaded, md5s, size, sha256.hexdigest(),
                                    sha256_checksum(part_sha256s, multipart=True) if self._checksums else None)
        except BaseException as exc:
            for future in futures:
                future.cancel()
            wait(futures)
            self.abort_multipart(key, upload_id)
            if isinstance(exc, (ClientError, BotoCoreError)):
                raise self._fail("upload", key, exc) from None
            raise
        return StoredObject(key, size, sha256.hexdigest())

    # ---- multipart, for parts sent by this process or by a node ---------------------------
    def create_multipart(self, key: str, checksums: bool = True) -> str:
        """`checksums`: every part will carry its SHA-256 (when the repository sends checksums at all);
        a node's presigned parts cannot, since a URL is signed before its part is read."""
        try:
            return self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self.repository.write_params(),
                **({"ChecksumAlgorithm": "SHA256"} if checksums and self._checksums else {}))["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("create multipart upload", key, exc) from None

    def presign_put(self, key: str, expires_s: int, client: Any | None = None, now: datetime | None = None) -> str:
        """A URL that lets its holder (a node) PUT the object, until it expires: a credential, never logged.
        The holder sends the repository's write_headers(now) with it."""
        return (client or self.s3).generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key, **self.repository.write_params(now)},
            ExpiresIn=expires_s)

    def presign_get(self, key: str, expires_s: int, client: Any | None = None) -> str:
        """A URL that lets its holder (a node) GET the object; checked when the GET starts, never logged."""
        return (client or self.s3).generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key, **self._key}, ExpiresIn=expires_s)

    def presign_part(self, key: str, upload_id: str, number: int, expires_s: int, client: Any | None = None) -> str:
        """As presign_put, for one part of a multipart upload."""
        return (client or self.s3).generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                                   **self._key}, ExpiresIn=expires_s)

    def complete_multipart(self, key: str, upload_id: str, parts: list[dict], part_md5s: list[bytes],
                           size: int, sha256: str, checksum: str | None = None) -> None:
        """Completes the upload, then verifies the object (see `verify`)."""
        try:
            response = self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **self._key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("complete multipart upload", key, exc) from None
        self.verify(key, response.get("ETag"), multipart_etag(part_md5s), size, sha256, checksum)
        # CreateMultipartUpload carried the lock; set it again on the object, since not every store keeps a
        # lock given there (moto drops it): a later date only extends it.
        self.lock(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            log.warning("could not abort multipart upload of %s; the bucket's lifecycle rule should", key)

    def verify(self, key: str, etag: str | None, expected_etag: str, size: int, sha256: str,
               checksum: str | None = None) -> None:
        """Checks the stored object's size, then its SHA-256 checksum (`checksum`, when one was sent and
        the store kept it), else its ETag (`etag` if S3 just returned it) where that is an MD5, else
        the SHA-256 of the object read back."""
        head = self.head(key)
        if head is None or head["ContentLength"] != size:
            got = None if head is None else head["ContentLength"]
            raise VerificationError(f"s3://{self.bucket}/{key}: stored size {got}, expected {size}")
        if checksum is not None and head.get("ChecksumSHA256"):
            # Compared without the "-<parts>" suffix of a multipart checksum, which some stores omit.
            if head["ChecksumSHA256"].split("-")[0] != checksum.split("-")[0]:
                raise VerificationError(f"s3://{self.bucket}/{key}: SHA-256 checksum does not match the bytes sent")
        elif etag_is_md5(head):
            stored = (etag or head.get("ETag", "")).strip('"')
            if stored != expected_etag:
                raise VerificationError(f"s3://{self.bucket}/{key}: ETag {stored} does not match the bytes sent")
        else:
            if self.read_back(key)[1] != sha256:
                raise VerificationError(f"s3://{self.bucket}/{key}: the object read back does not match the bytes sent")

    # ---- streamed download --------------------------------------------------------------
    def read_back(self, key: str, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
        """The object re-read in chunks (memory: one chunk): its size and SHA-256."""
        digest, size = hashlib.sha256(), 0
        for chunk in self.iter_object(key):
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
        return size, digest.hexdigest()

    def iter_object(self, key: str, chunk: int = MIB, byte_range: tuple[int, int] | None = None) -> Iterator[bytes]:
        """The object's bytes, or those in [start, end) of it, in chunks."""
        ranged = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key, **ranged, **self._key)["Body"]
            yield from body.iter_chunks(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("get", key, exc) from None

    def lock_refusal(self) -> str | None:
        """Why this bucket cannot hold locked objects (object lock not enabled, or a store without it), or None."""
        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
        except ClientError as exc:
            err = exc.response.get("Error", {})
            return f"the store answers {err.get('Code', '?')} to GetObjectLockConfiguration"
        except BotoCoreError as exc:
            return f"GetObjectLockConfiguration failed ({exc})"
        return None if config.get("ObjectLockEnabled") == "Enabled" else "object lock is not enabled on the bucket"

    def lock(self, key: str) -> None:
        """Puts the repository's object lock on an object written without it (a server-side copy)."""
        params = self.repository.lock_params()
        if not params:
            return
        try:
            self.s3.put_object_retention(Bucket=self.bucket, Key=key, Retention={
                "Mode": params["ObjectLockMode"], "RetainUntilDate": params["ObjectLockRetainUntilDate"]})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("lock", key, exc) from None

    def lock_of(self, key: str) -> datetime | None:
        """The retain-until date of the object's current version, None when it carries no lock."""
        head = self.head(key)
        return None if head is None else head.get("ObjectLockRetainUntilDate")

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            try:
                response = self.s3.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail("delete", batch[0], exc) from None
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(f"S3 delete of {first.get('Key')} failed: {first.get('Message')}")
