"""Settings shared by every task: no result persistence or input hashing (inputs hold blocks)."""
from __future__ import annotations

import os

from prefect.cache_policies import NO_CACHE

from dmf.core.errors import PermanentError

TASK_DEFAULTS = dict(cache_policy=NO_CACHE, persist_result=False)
# A dropped SSH connection or an S3 hiccup is retried with backoff; the retry resumes.
# DMF_TASK_RETRY_DELAYS (seconds, comma-separated) tunes the backoff, e.g. for the test suite.
_DELAYS = [float(d) for d in os.environ.get("DMF_TASK_RETRY_DELAYS", "2,10,30").split(",")]


def retry_unless_permanent(task, task_run, state) -> bool:
    """Retrying cannot fix bad input, a key outside the layout or a refused permission: fail at once."""
    return not isinstance(state.result(raise_on_failure=False), PermanentError)


RETRY = dict(retries=len(_DELAYS), retry_delay_seconds=_DELAYS, retry_jitter_factor=0.2,
             retry_condition_fn=retry_unless_permanent)
