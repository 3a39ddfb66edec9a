"""Bandwidth limits (the repository's max_upload_mib_s / max_download_mib_s): one token bucket per
host's transfer, shared by all of its threads, taken from chunk by chunk (1 MiB at most) so the
limit costs no memory. dmf.node_agent repeats it for uploads sent from the node itself."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator


MIB = 1024 * 1024
# Credit an idle bucket builds: a pause is followed by at most this much time's worth at full speed.
BURST_S = 0.1


class TokenBucket:
    """Lets `rate` bytes a second through, on average, to all the threads that take from it.

    A take is granted at once and may leave the bucket in debt; the taker then sleeps the debt off
    outside the lock, so threads are served in the order they asked, each after the bytes before it.
    Idle time refills the bucket up to `burst` bytes only."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of bytes a second, not {rate}")
        self.rate = rate
        self.burst = rate * BURST_S if burst is None else burst
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()

    def take(self, nbytes: int) -> None:
        """Returns once `nbytes` may go."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - nbytes
            self._updated = now
            wait = -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)


def bucket_for(mib_s: float | None) -> TokenBucket | None:
    """The bucket of a limit in MiB/s; None (no limit) for None."""
    return None if mib_s is None else TokenBucket(mib_s * MIB)


def throttled(chunks: Iterable[bytes], bucket: TokenBucket | None) -> Iterator[bytes]:
    """`chunks`, each handed on once `bucket` lets it through (at once without a bucket)."""
    if bucket is None:
        yield from chunks
        return
    for chunk in chunks:
        bucket.take(len(chunk))
        yield chunk
