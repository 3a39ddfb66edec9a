"""The S3 repository a cluster is backed up to, as a Prefect block: bucket, endpoint and credentials, plus
transfer tuning. Its fields, checks and client are dmf.s3_settings' (read there without Prefect too)."""
from __future__ import annotations

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from dmf.s3_settings import S3Settings


class S3Repository(S3Settings, Block):
    """Where backups live. Credentials are a prefect-aws `AwsCredentials` block (secret key kept secret)."""

    _block_type_name = "dmf S3 Repository"
    _block_type_slug = "dmf-s3-repository"
    _description = "Bucket, endpoint and credentials of the dmf backup repository."

    credentials: AwsCredentials = Field(default_factory=AwsCredentials,
                                        description="Access key, secret, region and endpoint (aws_client_parameters).")
