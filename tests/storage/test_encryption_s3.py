"""Encryption at rest and verification that does not assume ETag = MD5 (moto's in-process S3).

Under SSE-KMS and SSE-C, AWS S3's ETag is not the MD5 of the bytes; moto still reports MD5s, so
a hook rewrites the ETags S3 answers with, as AWS would, to prove dmf does not rely on them there.
"""
from __future__ import annotations

import base64
import os
from collections import Counter

import boto3
import pytest
from moto import mock_aws

from dmf.blocks import S3Repository
from dmf.storage import MIB, Storage, VerificationError

from .helpers import moto_repository

PART = 5 * MIB
BIG = 2 * PART + 123


def count_calls(storage: Storage) -> Counter:
    calls: Counter = Counter()
    storage.s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    return calls


def opaque_etags(storage: Storage) -> None:
    """S3 answering as AWS does for KMS or SSE-C objects: ETags that are not MD5s of the bytes."""
    def rewrite(parsed: dict, **_: object) -> None:
        if "ETag" in parsed:
            parsed["ETag"] = '"%s"' % os.urandom(16).hex()
    for operation in ("HeadObject", "PutObject", "CompleteMultipartUpload"):
        storage.s3.meta.events.register(f"after-call.s3.{operation}", rewrite)


def round_trip(storage: Storage) -> None:
    small, big = os.urandom(1000), os.urandom(BIG)
    assert storage.put_bytes("t/small", small).size == 1000
    stored = storage.upload_stream("t/big", iter([big[:3 * MIB], big[3 * MIB:]]), BIG)
    assert stored.size == BIG
    assert storage.get_bytes("t/small") == small
    assert b"".join(storage.iter_object("t/big")) == big


def test_bucket_default_sse_s3_is_verified_by_etag():
    with moto_repository("dmf-sse-s3", part_size_mib=5) as repo:
        storage = repo.storage
        storage.s3.put_bucket_encryption(Bucket="dmf-sse-s3", ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        calls = count_calls(storage)
        round_trip(storage)
        assert storage.head("t/big")["ServerSideEncryption"] == "AES256"
        assert calls["GetObject"] == 2  # the two reads of round_trip: no read-back, the ETags are MD5s


@pytest.mark.parametrize("where", ["bucket default", "repository block"])
def test_kms_objects_whose_etags_are_not_md5_are_verified_by_reading_back(where):
    with mock_aws():
        key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        settings = {"sse": "aws:kms", "kms_key_id": key_id} if where == "repository block" else {}
        with moto_repository("dmf-kms", part_size_mib=5, **settings) as repo:
            storage = repo.storage
            if where == "bucket default":  # the case that makes ETag-checking tools fail every backup
                storage.s3.put_bucket_encryption(Bucket="dmf-kms", ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                                      "KMSMasterKeyID": key_id}}]})
            opaque_etags(storage)
            calls = count_calls(storage)
            round_trip(storage)
            head = storage.head("t/big")
            assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]
            assert calls["GetObject"] == 2 + 2  # each object read back once after upload
            with pytest.raises(VerificationError, match="t/big: the object read back does not match"):
                storage.verify("t/big", None, "", BIG, "0" * 64)


def test_sha256_checksums_verify_without_reading_back_and_catch_a_mismatch():
    with moto_repository("dmf-checksums", part_size_mib=5, checksum_mode="when_supported") as repo:
        storage = repo.storage
        opaque_etags(storage)  # so an ETag check would fail: the checksum must be what is compared
        calls = count_calls(storage)
        round_trip(storage)
        assert calls["GetObject"] == 2
        assert storage.head("t/big")["ChecksumSHA256"]
        wrong = base64.b64encode(b"\0" * 32).decode()
        with pytest.raises(VerificationError, match="t/big: SHA-256 checksum does not match"):
            storage.verify("t/big", None, "", BIG, "", wrong + "-3")


def test_sse_c_key_goes_with_every_request_and_never_into_errors():
    key = os.urandom(32)
    with moto_repository("dmf-sse-c", part_size_mib=5, sse="SSE-C",
                         sse_customer_key=base64.b64encode(key).decode()) as repo:
        storage = repo.storage
        sent: dict[str, set[str]] = {}

        def record(request: object, operation_name: str, **_: object) -> None:
            headers = {h.lower() for h in request.headers}  # type: ignore[attr-defined]
            sent.setdefault(operation_name, set()).update(headers)
        storage.s3.meta.events.register("before-sign.s3", record)
        round_trip(storage)
        customer_key = "x-amz-server-side-encryption-customer-key"
        for operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                          "HeadObject", "GetObject"):
            assert customer_key in sent[operation], operation
        with pytest.raises(Exception) as failure:
            Storage(storage.repository.model_copy(update={"bucket": "no-such-bucket"})).get_bytes("t/small")
        assert base64.b64encode(key).decode() not in str(failure.value)


def test_presigned_node_uploads_carry_the_encryption_headers_signed_into_them():
    with mock_aws():
        block = S3Repository(bucket="dmf-presigned", sse="aws:kms", kms_key_id="alias/dmf")
        storage = Storage(block)
        url = storage.presign_put("k", 60)
        signed = url.split("X-Amz-SignedHeaders=")[1].split("&")[0]
        assert "x-amz-server-side-encryption" in signed and "x-amz-server-side-encryption-aws-kms-key-id" in signed
        assert block.write_headers() == {"x-amz-server-side-encryption": "aws:kms",
                                         "x-amz-server-side-encryption-aws-kms-key-id": "alias/dmf"}
        assert block.key_headers() == {}  # parts inherit KMS from their multipart upload


@pytest.mark.parametrize("settings, error", [
    ({"sse": "SSE-C"}, "needs sse_customer_key"),
    ({"sse": "SSE-C", "sse_customer_key": base64.b64encode(b"short").decode()}, "32 bytes"),
    ({"sse": "AES256", "kms_key_id": "k"}, "only used with sse: aws:kms"),
])
def test_encryption_settings_are_checked_when_the_block_is_made(settings, error):
    with pytest.raises(ValueError, match=error):
        S3Repository(bucket="b", **settings)


def test_no_bucket_wide_key_reaches_a_node_unless_the_operator_allows_it():
    """SSE-C's customer key opens every backup: nodes upload themselves only with sse_c_key_on_nodes."""
    key = base64.b64encode(os.urandom(32)).decode()
    sse_c = S3Repository(bucket="b", sse="SSE-C", sse_customer_key=key)
    assert "SSE-C" in sse_c.node_upload_refusal()
    assert sse_c.model_copy(update={"sse_c_key_on_nodes": True}).node_upload_refusal() is None
    client = S3Repository(bucket="b", encryption="client", encryption_key=base64.b64encode(os.urandom(32)).decode())
    assert "encryption: client" in client.node_upload_refusal()
    assert "encryption: client" in client.model_copy(update={"sse_c_key_on_nodes": True}).node_upload_refusal()
    for sse in ("none", "AES256", "aws:kms"):
        assert S3Repository(bucket="b", sse=sse).node_upload_refusal() is None
    assert S3Repository(bucket="b", upload_from_nodes=False).node_upload_refusal() == "upload_from_nodes is off"
