"""A repository on moto's in-process S3, for the storage tests."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto import mock_aws
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.repository import Repository
from dmf.storage import Storage


@contextmanager
def moto_repository(bucket: str, **settings: Any) -> Iterator[Repository]:
    """A repository on an empty bucket, for as long as the context lasts; `settings` are block fields."""
    with mock_aws():
        block = S3Repository(bucket=bucket, credentials=AwsCredentials(
            aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1"),
            **settings)
        storage = Storage(block)
        storage.s3.create_bucket(Bucket=bucket)
        yield Repository(storage)
