"""The S3 repository a cluster is backed up to, as a Prefect block: bucket, endpoint and credentials, plus
transfer tuning. Its fields, checks and client are dmf.s3_settings' (read there without Prefect too)."""
from __future__ import annotations

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from dmf.core.errors import InputError
from dmf.s3_settings import S3Settings


class S3Repository(S3Settings, Block):
    """Where backups live. Credentials are a prefect-aws `AwsCredentials` block (secret key kept secret)."""

    _block_type_name = "dmf S3 Repository"
    _block_type_slug = "dmf-s3-repository"
    _description = "Bucket, endpoint and credentials of the dmf backup repository."

    credentials: AwsCredentials = Field(default_factory=AwsCredentials,
                                        description="Access key, secret, region and endpoint (aws_client_parameters).")

    def refuse_unsupported_lock(self) -> None:
        """object_lock on a bucket that cannot lock (a store without object lock, such as s3proxy, or a bucket
        created without it) is refused in one line when the block is saved, not at the first backup."""
        if self.object_lock == "none":
            return
        from dmf.storage import Storage
        reason = Storage(self).lock_refusal()
        if reason is not None:
            raise InputError(f"object_lock: {self.object_lock} refused for bucket {self.bucket!r}: {reason} "
                             "(object lock is enabled when a bucket is created, on stores that implement it)")

    def save(self, *args, **kwargs):
        self.refuse_unsupported_lock()
        return super().save(*args, **kwargs)

    async def asave(self, *args, **kwargs):
        self.refuse_unsupported_lock()
        return await super().asave(*args, **kwargs)
