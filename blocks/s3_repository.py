"""The S3 repository a cluster is backed up to: bucket, endpoint and credentials, plus transfer tuning."""
from __future__ import annotations

from typing import Any

from botocore.config import Config
from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field


class S3Repository(Block):
    """Where backups live. Credentials are a prefect-aws `AwsCredentials` block (secret key kept secret)."""

    _block_type_name = "dmf S3 Repository"
    _block_type_slug = "dmf-s3-repository"
    _description = "Bucket, endpoint and credentials of the dmf backup repository."

    bucket: str = Field(description="Bucket that holds the backups.")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials,
                                        description="Access key, secret, region and endpoint (aws_client_parameters).")
    part_size_mib: int = Field(default=16, ge=5, le=5120,
                               description="Multipart part size in MiB; one part per transfer is held in memory, "
                                           "so memory is about part size x max_concurrency whatever the data size.")
    max_concurrency: int = Field(default=8, ge=1, le=64,
                                 description="Parallel object transfers per host.")

    upload_from_nodes: bool = Field(
        default=True,
        description="Nodes upload their files straight to S3 through presigned URLs (needs the host's "
                    "python, and S3 reachable from the node); the manager still orchestrates and verifies. "
                    "Off, or where a node cannot, bytes stream through the manager over SSH.")
    node_endpoint_url: str | None = Field(
        default=None, description="The S3 endpoint as the nodes reach it, when it differs from the manager's.")

    def client(self, endpoint_url: str | None = None) -> Any:
        """A boto3 S3 client sized for `max_concurrency` transfers (boto3 clients are thread-safe)."""
        params = self.credentials.aws_client_parameters.get_params_override()
        if endpoint_url:
            params["endpoint_url"] = endpoint_url
        extra = params.pop("config", None)
        # dmf verifies every object itself (size, and MD5 against the ETag), so botocore's extra CRC32
        # on every request is only sent when an operation requires it: it cost the S3 server (moto
        # here) ~40% more CPU per uploaded part, and older S3-compatible stores reject the headers.
        config = Config(max_pool_connections=self.max_concurrency * 2 + 4,
                        retries={"max_attempts": 8, "mode": "adaptive"},
                        request_checksum_calculation="when_required")
        if extra is not None:
            config = config.merge(extra if isinstance(extra, Config) else Config(**extra))
        return self.credentials.get_boto3_session().client("s3", config=config, **params)
