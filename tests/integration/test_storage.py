"""dmf's storage layer against two independent S3 implementations (the bed's s3proxy, and moto):
streamed and verified transfers, resumption, listings, deletes, aborts, and a refused feature."""
from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from dmf.storage import MIB, Storage, StorageError

pytestmark = pytest.mark.integration


@pytest.fixture()
def storage(any_s3):
    # 5 MiB parts (S3's minimum) so that a few MiB make a multipart upload.
    return Storage(any_s3.model_copy(update={"part_size_mib": 5}))


@pytest.fixture()
def prefix():
    return f"storage-test/{uuid.uuid4().hex}/"


def chunks_of(data: bytes, size: int = 1 << 20):
    return (data[i:i + size] for i in range(0, len(data), size))


def test_small_object_with_cassandra5_name_round_trips(storage, prefix):
    key = f"{prefix}ks/t-{'0' * 32}/nb-1-big-SAI+aa+by_name+TermsData.db"
    stored = storage.put_bytes(key, b"sai bytes")
    assert stored.sha256 == hashlib.sha256(b"sai bytes").hexdigest()
    assert storage.get_bytes(key) == b"sai bytes"
    assert [o["Key"] for o in storage.list_objects(prefix)] == [key]
    assert storage.get_bytes(f"{prefix}missing", missing_ok=True) is None


def test_multipart_upload_is_verified_and_resumable(storage, prefix):
    data = os.urandom(11 * MIB + 7)
    key = f"{prefix}big"
    stored = storage.upload_stream(key, chunks_of(data), len(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(storage.iter_object(key)) == data
    # A rerun recognises the verified object (whatever ETag form the store reports on HEAD) ...
    assert storage.match_existing(key, len(data), lambda: chunks_of(data)) == stored
    # ... and never a different one of the same size.
    changed = bytearray(data)
    changed[MIB] ^= 1
    assert storage.match_existing(key, len(data), lambda: chunks_of(bytes(changed))) is None


def test_ranged_reads(storage, prefix):
    data = os.urandom(3 * MIB)
    storage.put_bytes(f"{prefix}r", data)
    assert b"".join(storage.iter_object(f"{prefix}r", byte_range=(MIB - 5, 2 * MIB + 5))) == data[MIB - 5:2 * MIB + 5]


def test_delimiter_listing_starts_after(storage, prefix):
    for ts in ("20250101000000", "20250102000000", "20250103000000"):
        storage.put_bytes(f"{prefix}{ts}/manifest.json", b"{}")
    assert storage.list_prefixes(prefix) == [f"{prefix}{t}/" for t in ("20250101000000", "20250102000000",
                                                                          "20250103000000")]
    assert storage.list_prefixes(prefix, start_after=f"{prefix}20250102000000/") == [f"{prefix}20250103000000/"]


def test_delete_many_keys_in_one_request(storage, prefix):
    keys = [f"{prefix}d/{i}+x" for i in range(5)]
    for key in keys:
        storage.put_bytes(key, b"x")
    storage.delete_keys(keys)
    assert list(storage.list_objects(prefix)) == []


def test_aborted_multipart_upload_is_gone(storage, prefix):
    key = f"{prefix}aborted"
    upload_id = storage.create_multipart(key)
    storage.abort_multipart(key, upload_id)
    uploads = storage.s3.list_multipart_uploads(Bucket=storage.bucket, Prefix=prefix).get("Uploads", [])
    assert [u for u in uploads if u["UploadId"] == upload_id] == []


def test_optional_checksums_work_or_fail_in_one_line_naming_the_setting(any_s3, prefix):
    """checksum_mode when_supported sends botocore's CRC32 headers: moto implements them, s3proxy
    refuses them with NotImplemented, which dmf reports in one line naming the setting to change."""
    storage = Storage(any_s3.model_copy(update={"checksum_mode": "when_supported"}))
    if any_s3.bucket == "dmf-moto":
        storage.put_bytes(f"{prefix}c", b"checked")
        assert storage.get_bytes(f"{prefix}c") == b"checked"
        return
    with pytest.raises(StorageError) as refused:
        storage.put_bytes(f"{prefix}c", b"checked")
    message = str(refused.value)
    assert "does not implement" in message and "checksum_mode: when_supported" in message
    assert "\n" not in message
