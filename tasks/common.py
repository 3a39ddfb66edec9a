"""Settings shared by every task: no result persistence or input hashing (inputs hold blocks)."""
from __future__ import annotations

from prefect.cache_policies import NO_CACHE

TASK_DEFAULTS = dict(cache_policy=NO_CACHE, persist_result=False)
# A dropped SSH connection or an S3 hiccup is retried with backoff; the retry resumes.
RETRY = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_jitter_factor=0.2)
