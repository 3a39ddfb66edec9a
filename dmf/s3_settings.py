"""The S3 repository's configuration without Prefect: the `dmf-s3-repository` block's fields, checks and
S3 client (blocks/s3_repository.py adds Prefect), and plain credentials for reads that skip Prefect."""
from __future__ import annotations

import base64
import hashlib
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from pydantic import BaseModel, Field, FilePath, SecretStr, ValidationError, field_validator, model_validator

from dmf.core.errors import DmfError, InputError
from dmf.core.secrets import settings_digest
from dmf.core.lifecycle import FullEvery
from dmf.core.object_lock import lock_span, retain_until
from dmf.encryption import EncryptionError, parse_key
from dmf.core.limits import check_limit


class S3Settings(BaseModel):
    """Where backups live: the fields, checks and S3 client of the `dmf-s3-repository` block, without
    Prefect (the block adds it; the CLI's direct reads use `DirectS3Repository`)."""

    bucket: str = Field(description="Bucket that holds the backups.")
    credentials: Any = Field(description="Access key, secret, region and endpoint (aws_client_parameters).")
    part_size_mib: int = Field(default=16, ge=5, le=5120,
                               description="Multipart part size in MiB; one part per transfer is held in memory, "
                                           "so memory is about part size x max_concurrency whatever the data size.")
    max_concurrency: int = Field(default=8, ge=1, le=64,
                                 description="Parallel object transfers per host.")
    # A backup must not saturate a production node's network: one limit per host, shared by its threads.
    max_upload_mib_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Upload limit per host in MiB/s, all of its parallel transfers together (none when "
                    "empty): the node's own PUTs to S3, or its bytes read over SSH when they stream "
                    "through the manager. A run may set its own (--max-upload-mib-s).")
    max_download_mib_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Download limit of a restore in MiB/s, in total (none when empty): every file the "
                    "restore fetches from S3 into PATH, on the machine running it, whatever the hosts "
                    "restored into. A run may set its own (--max-download-mib-s).")

    upload_from_nodes: bool = Field(
        default=True,
        description="Nodes upload their files straight to S3 through presigned URLs (needs the host's "
                    "python, and S3 reachable from the node); the manager still orchestrates and verifies. "
                    "Off, or where a node cannot, bytes stream through the manager over SSH.")
    node_endpoint_url: str | None = Field(
        default=None, description="The S3 endpoint as the nodes reach it, when it differs from the manager's.")

    # S3-compatible stores (Ceph RGW, MinIO, StorageGRID, s3proxy) implement different subsets of
    # the S3 API: by default dmf sends only what plain S3 has always had.
    checksum_mode: Literal["when_required", "when_supported"] = Field(
        default="when_required",
        description="when_required: plain requests only (dmf checks sizes and hashes itself); works everywhere. "
                    "when_supported: also botocore's additional checksums (CRC32 headers, x-amz-checksum-mode "
                    "on reads), for AWS S3 and stores that implement them.")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="Bucket in the path (path: most on-premises stores) or in the host name "
                                    "(virtual: AWS S3); auto lets botocore choose.")
    region: str | None = Field(default=None, description="Region to sign for; defaults to the credentials' "
                                                         "region_name.")
    signature_version: Literal["s3v4", "s3"] = Field(
        default="s3v4", description="Request signing: s3v4 (SigV4, every current store); s3 (SigV2) for old ones.")

    commitlog_compression: Literal["gzip", "none"] = Field(
        default="gzip",
        description="Commit-log segments are shipped gzip-compressed (gzip -1 on the node; restores give back "
                    "the segment as Cassandra wrote it, checked by its SHA-256), or as they are.")

    # Encryption at rest by the store, applied to every object dmf writes (presigned node uploads too).
    sse: Literal["none", "AES256", "aws:kms", "SSE-C"] = Field(
        default="none",
        description="Server-side encryption: none (the bucket's default applies), AES256 (SSE-S3), aws:kms "
                    "(SSE-KMS, with kms_key_id or the account's S3 key), SSE-C (sse_customer_key; S3 keeps no "
                    "copy of the key, so losing it loses the backups).")
    kms_key_id: str | None = Field(default=None, description="KMS key (id, ARN or alias) for sse: aws:kms.")
    sse_c_key_on_nodes: bool = Field(
        default=False,
        description="With sse: SSE-C, let nodes upload their own files: each node is then sent the bucket-wide "
                    "customer key, so root or the SSH user on any one node could read every backup. Off: "
                    "SSE-C uploads stream through the manager and the key never reaches a node.")
    sse_customer_key: SecretStr | None = Field(
        default=None, description="For sse: SSE-C, the 256-bit key, base64-encoded. Sent with every request; "
                                  "never logged.")

    # Encryption by dmf before anything leaves the manager (dmf.encryption): the store sees ciphertext.
    encryption: Literal["none", "client"] = Field(
        default="none",
        description="client: SSTables and commit logs are encrypted with AES-256-GCM by the manager (the Prefect "
                    "worker) with encryption_key before upload, and authenticated before a restore loads them. "
                    "Files then stream through the manager (the key never reaches a node).")
    encryption_key: SecretStr | None = Field(
        default=None, description="For encryption: client, 32 random bytes in base64 (`dmf key generate`). "
                                  "Kept nowhere else by dmf: losing it loses the backups it encrypted.")
    decrypt_on_nodes: bool = Field(
        default=False,
        description="With encryption: client, let restores take the node path: each restoring node fetches "
                    "and decrypts its own files, so it is handed the master key (over SSH, in memory) for the "
                    "restore's duration, and root or the SSH user on any one of them could read every backup. "
                    "A node whose python lacks the cryptography package takes the worker path. Off: restores "
                    "stream through the worker and the key never reaches a node. Backups are not affected.")

    # The lifecycle (dmf.core.lifecycle): chains end, old ones are purged.
    full_every: str = Field(
        default="7d",
        description="When the scheduled backup starts a new full instead of an increment: at the first of a "
                    "full's age (7d, 12h), a number of increments (500 increments), their bytes (64GiB), "
                    "comma-separated; 'never' to extend one chain for ever. Bounds restore time and what a "
                    "restore downloads.")
    keep_fulls: int | None = Field(
        default=None, ge=1, description="`backup purge` keeps the newest N complete fulls of each target and host "
                                        "set, with their increments and the commit logs since the oldest kept.")
    keep_days: float | None = Field(
        default=None, gt=0, description="`backup purge` keeps every restore point of the last D days (the full "
                                        "serving the window's start and everything after it).")

    # Copies and immutability (dmf.core.copies, dmf.core.object_lock).
    copy_to: list[str] = Field(
        default_factory=list,
        description="Names of other dmf-s3-repository blocks that hold a copy of this repository (another region, "
                    "store or account): `dmf backup copy` and its schedule bring every complete set there. Each "
                    "keeps its own retention (keep_fulls, keep_days) and needs the same encryption settings.")
    object_lock: Literal["none", "governance", "compliance"] = Field(
        default="none",
        description="S3 Object Lock on every object dmf writes, until a purge could remove it (full_every's age "
                    "plus keep_days after it is written): governance (users with s3:BypassGovernanceRetention "
                    "may still delete) or compliance (nobody can, not even the account's root, until the date). "
                    "The bucket must have been created with object lock enabled.")

    @field_validator("full_every")
    @classmethod
    def _valid_full_every(cls, value: str) -> str:
        try:
            FullEvery.parse(value)
        except InputError as exc:  # a ValueError reports it as the field's, as pydantic reports the others
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _valid_sse(self) -> "S3Settings":
        if self.sse == "SSE-C":
            if self.sse_customer_key is None:
                raise ValueError("sse: SSE-C needs sse_customer_key (a base64-encoded 256-bit key)")
            try:
                key = base64.b64decode(self.sse_customer_key.get_secret_value(), validate=True)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ValueError("sse_customer_key must be 32 bytes, base64-encoded")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id is only used with sse: aws:kms")
        try:
            lock_span(self.object_lock, self.full_every, self.keep_days)
        except InputError as exc:  # as a ValueError, pydantic reports it as the block's, with the others
            raise ValueError(str(exc)) from None
        if self.encryption == "client":
            if self.encryption_key is None:
                raise ValueError("encryption: client needs encryption_key (`dmf key generate` makes one)")
            try:
                self.client_key()
            except EncryptionError as exc:  # its message never holds the key
                raise ValueError(str(exc)) from None
        return self

    def client_key(self) -> bytes | None:
        """The master key of client-side encryption, or None when it is off."""
        if self.encryption != "client" or self.encryption_key is None:
            return None
        return parse_key(self.encryption_key.get_secret_value())

    def node_upload_refusal(self) -> str | None:
        """Why nodes must not upload their own files even where they could, if they must not: a
        node would need a key that opens every backup (client-side encryption's, or SSE-C's unless
        the operator accepted that with sse_c_key_on_nodes)."""
        if not self.upload_from_nodes:
            return "upload_from_nodes is off"
        if self.encryption == "client":
            return "encryption: client keeps the key on the manager"
        if self.sse == "SSE-C" and not self.sse_c_key_on_nodes:
            return "sse: SSE-C keeps the customer key on the manager (sse_c_key_on_nodes is off)"
        return None

    def _customer_key(self) -> bytes:
        return base64.b64decode(self.sse_customer_key.get_secret_value())  # type: ignore[union-attr]

    def write_params(self, now: datetime | None = None) -> dict:
        """boto3 parameters of a request that creates an object (PutObject, CreateMultipartUpload, CopyObject)
        at `now` (default: the current time): encryption, and under object_lock the lock until its date."""
        return {**self._sse_write_params(), **self.lock_params(now)}

    def _sse_write_params(self) -> dict:
        if self.sse == "AES256":
            return {"ServerSideEncryption": "AES256"}
        if self.sse == "aws:kms":
            return {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {})}
        return self.key_params()

    def lock_span(self) -> timedelta | None:
        return lock_span(self.object_lock, self.full_every, self.keep_days)

    def lock_params(self, now: datetime | None = None) -> dict:
        """Object Lock of an object written at `now`: its mode and retain-until date (dmf.core.object_lock)."""
        span = self.lock_span()
        if span is None:
            return {}
        return {"ObjectLockMode": self.object_lock.upper(),
                "ObjectLockRetainUntilDate": retain_until(now or datetime.now(timezone.utc), span)}

    def key_params(self) -> dict:
        """boto3 parameters of every request that reads an object or sends a part: SSE-C's key."""
        if self.sse != "SSE-C":
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self._customer_key()}

    def write_headers(self, now: datetime | None = None) -> dict[str, str]:
        """write_params(now) as HTTP headers, for a node's presigned PUT (they are signed into the URL)."""
        return _as_headers(self.write_params(now))

    def key_headers(self) -> dict[str, str]:
        """key_params as HTTP headers, for a node's presigned part upload."""
        return _as_headers(self.key_params())

    def with_limits(self, max_upload_mib_s: float | None = None,
                    max_download_mib_s: float | None = None) -> S3Settings:
        """This repository with a run's own bandwidth limits in place of the block's (None keeps the block's)."""
        update = {name: check_limit(value, name)
                  for name, value in (("max_upload_mib_s", max_upload_mib_s),
                                      ("max_download_mib_s", max_download_mib_s)) if value is not None}
        return self.model_copy(update=update) if update else self

    def client(self, endpoint_url: str | None = None) -> Any:
        """A boto3 S3 client sized for `max_concurrency` transfers, one per process for equal settings:
        boto3 clients are thread-safe, and each new one loads S3's service model again (~1 s when a run's
        tasks built theirs at once on two cores)."""
        key = self._client_key(endpoint_url)
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._new_client(endpoint_url)
        return client

    def _client_key(self, endpoint_url: str | None) -> str:
        """A digest of everything the client is built from, secrets included (two repositories differing
        only in their key must not share a client), kept only as a digest."""
        fields = self.model_dump(include={"credentials", "region", "max_concurrency", "checksum_mode",
                                          "signature_version", "addressing_style"})
        return settings_digest({**fields, "endpoint_url": endpoint_url})

    def _new_client(self, endpoint_url: str | None) -> Any:
        params = self.credentials.aws_client_parameters.get_params_override()
        if endpoint_url:
            params["endpoint_url"] = endpoint_url
        if self.region:
            params["region_name"] = self.region
        extra = params.pop("config", None)
        # dmf verifies every object itself (size, and MD5 against the ETag), so botocore's extra CRC32
        # on every request is only sent when asked for: it cost the S3 server (moto) ~40% more CPU per
        # uploaded part, and S3-compatible stores refuse the headers with NotImplemented.
        config = Config(max_pool_connections=self.max_concurrency * 2 + 4,
                        retries={"max_attempts": 8, "mode": "adaptive"},
                        request_checksum_calculation=self.checksum_mode,
                        response_checksum_validation=self.checksum_mode,
                        signature_version=self.signature_version,
                        s3={"addressing_style": self.addressing_style})
        if extra is not None:
            config = config.merge(extra if isinstance(extra, Config) else Config(**extra))
        client = self.credentials.get_boto3_session().client("s3", config=config, **params)
        if self.checksum_mode == "when_required":
            client.meta.events.register("before-sign.s3.DeleteObjects", _content_md5_instead_of_crc32)
        return client

    def features_sent(self) -> str:
        """The optional S3 features this repository's requests use: what a store may refuse."""
        features = []
        if self.checksum_mode == "when_supported":
            features.append("additional checksums (checksum_mode: when_supported)")
        if self.sse != "none":
            features.append(f"server-side encryption (sse: {self.sse})")
        if self.object_lock != "none":
            features.append(f"object lock (object_lock: {self.object_lock})")
        return ", ".join(features) or "none beyond plain S3"


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


_SSE_HEADERS = {"ServerSideEncryption": "x-amz-server-side-encryption",
                "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
                "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm"}


def _as_headers(params: dict) -> dict[str, str]:
    """Encryption and lock parameters as the HTTP headers botocore would send: an SSE-C key base64-encoded,
    with its MD5 beside it; the retain-until date in ISO 8601, as botocore writes it."""
    headers = {_SSE_HEADERS[name]: value for name, value in params.items() if name in _SSE_HEADERS}
    if "ObjectLockMode" in params:
        headers["x-amz-object-lock-mode"] = params["ObjectLockMode"]
        headers["x-amz-object-lock-retain-until-date"] = params["ObjectLockRetainUntilDate"].strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    key = params.get("SSECustomerKey")
    if key is not None:
        headers["x-amz-server-side-encryption-customer-key"] = base64.b64encode(key).decode()
        headers["x-amz-server-side-encryption-customer-key-md5"] = base64.b64encode(hashlib.md5(key).digest()).decode()
    return headers


def _content_md5_instead_of_crc32(request: Any, **_: Any) -> None:
    """DeleteObjects must carry a checksum; botocore now sends CRC32, which S3-compatible stores
    refuse (NotImplemented), while Content-MD5 is what S3 has always accepted there."""
    for header in [h for h in request.headers if h.lower().startswith(("x-amz-checksum-", "x-amz-sdk-checksum"))]:
        del request.headers[header]
    body = request.body if isinstance(request.body, bytes) else (request.body or b"")
    request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


class ClientParameters(BaseModel):
    """prefect-aws's `AwsClientParameters` (0.5), the part a client is built from: its fields and
    get_params_override (tests/unit/test_direct_reads.py checks both give the same parameters)."""

    api_version: str | None = None
    use_ssl: bool = True
    verify: bool | FilePath | None = None
    verify_cert_path: FilePath | None = None
    endpoint_url: str | None = None
    config: dict[str, Any] | None = None

    def get_params_override(self) -> dict[str, Any]:
        params = {key: value for key, value in self.model_dump().items() if value is not None}
        if params.get("verify_cert_path") and not (self.verify is False):
            params["verify"] = params.pop("verify_cert_path")
        params.pop("verify_cert_path", None)
        if "config" in params:
            config = Config(**params["config"])
            if config.signature_version == "unsigned":
                config.signature_version = UNSIGNED
            params["config"] = config
        return params


class Credentials(BaseModel):
    """prefect-aws's `AwsCredentials` block as plain data (the document the API stores for it)."""

    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: str | None = None
    profile_name: str | None = None
    region_name: str | None = None
    aws_client_parameters: ClientParameters = Field(default_factory=ClientParameters)

    def get_boto3_session(self) -> boto3.Session:
        secret = self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None
        return boto3.Session(aws_access_key_id=self.aws_access_key_id, aws_secret_access_key=secret,
                             aws_session_token=self.aws_session_token, profile_name=self.profile_name,
                             region_name=self.region_name)


class DirectS3Repository(S3Settings):
    """The repository built from its block document without Prefect (the CLI's read-only commands)."""

    credentials: Credentials = Field(default_factory=Credentials)


def direct_repository(data: dict, name: str) -> DirectS3Repository:
    """The repository from its block document's data, checked as the block checks it; an invalid one is
    refused by field and reason only (the values may be secrets)."""
    try:
        return DirectS3Repository.model_validate(data)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'block'}: {e['msg']}"
                            for e in exc.errors(include_url=False, include_input=False, include_context=False))
        raise DmfError(f"repository block {name!r} is invalid: {reasons}") from None
