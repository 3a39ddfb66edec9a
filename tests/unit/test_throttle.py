"""Bandwidth limits: the manager's token bucket and the node agent's copy of it hold their rate within
10% over many chunks, alone or shared by threads, and an idle bucket's burst stays bounded."""
from __future__ import annotations

import hashlib
import threading

import pytest

from dmf import node_agent, throttle
from dmf.core.errors import InputError
from dmf.core.limits import check_limit
from dmf.storage import MIB

BUCKETS = [pytest.param(throttle.TokenBucket, id="manager"), pytest.param(node_agent.TokenBucket, id="node_agent")]


class FakeTime:
    """A clock that moves only when a thread sleeps. Threads sleep at the same time, so a sleep
    moves it to the sleeper's wake-up time (its last reading plus the sleep), if that is later."""

    def __init__(self):
        self.now = 1000.0
        self._lock = threading.Lock()
        self._seen = threading.local()

    def clock(self) -> float:
        with self._lock:
            self._seen.at = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now = max(self.now, self._seen.at + seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.mark.parametrize("bucket_class", BUCKETS)
def test_one_taker_is_held_to_the_rate_within_10_percent(bucket_class):
    fake = FakeTime()
    bucket = bucket_class(5 * MIB, clock=fake.clock, sleep=fake.sleep)
    start = fake.clock()
    for _ in range(200):
        bucket.take(MIB)
        fake.advance(0.01)  # the work of sending a chunk
    rate = 200 * MIB / (fake.clock() - start)
    assert 0.9 * 5 * MIB <= rate <= 1.1 * 5 * MIB


@pytest.mark.parametrize("bucket_class", BUCKETS)
def test_threads_sharing_one_bucket_get_the_rate_between_them(bucket_class):
    fake = FakeTime()
    bucket = bucket_class(20 * MIB, clock=fake.clock, sleep=fake.sleep)
    start = fake.clock()

    def send() -> None:
        for _ in range(100):
            bucket.take(MIB)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = 8 * 100 * MIB / (fake.clock() - start)
    assert 0.9 * 20 * MIB <= rate <= 1.1 * 20 * MIB


@pytest.mark.parametrize("bucket_class", BUCKETS)
def test_an_idle_bucket_lets_at_most_its_burst_through_at_once(bucket_class):
    fake = FakeTime()
    bucket = bucket_class(10 * MIB, clock=fake.clock, sleep=fake.sleep)
    fake.advance(3600)  # an hour idle builds no more than the burst
    before, granted = fake.clock(), 0
    while fake.clock() == before:
        bucket.take(64 * 1024)
        granted += 64 * 1024
    assert bucket.burst == MIB  # 0.1 s at 10 MiB/s
    assert granted - 64 * 1024 <= bucket.burst  # all but the take that had to wait came at once


def test_a_take_larger_than_the_burst_waits_for_its_bytes():
    slept = []
    bucket = throttle.TokenBucket(MIB, clock=lambda: 0.0, sleep=slept.append)
    bucket.take(4 * MIB)
    bucket.take(MIB)
    assert slept == pytest.approx([3.9, 4.9])  # 0.1 s of credit, then a second per MiB, queued in order


def test_throttled_passes_chunks_through_the_bucket_or_untouched_without_one():
    taken = []

    class Counting:
        def take(self, nbytes):
            taken.append(nbytes)

    assert list(throttle.throttled([b"ab", b"cde"], Counting())) == [b"ab", b"cde"] and taken == [2, 3]
    assert list(throttle.throttled([b"x"], None)) == [b"x"]
    assert throttle.bucket_for(None) is None and throttle.bucket_for(2.5).rate == 2.5 * MIB


def test_the_agent_sends_a_part_in_1_mib_slices_through_its_bucket():
    taken = []

    class Counting:
        def take(self, nbytes):
            taken.append(nbytes)

    data = bytes(range(256)) * (10 * 1024 + 3)  # 2.5 MiB and a bit
    body = list(node_agent.throttled(data, Counting()))
    assert b"".join(body) == data and taken == [len(c) for c in body] == [MIB, MIB, len(data) - 2 * MIB]
    assert list(node_agent.throttled(b"", Counting())) == []  # an empty file's PUT has no body


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf")])
def test_a_limit_must_be_a_positive_number(value):
    with pytest.raises(InputError, match="--max-upload-mib-s must be a positive number of MiB/s"):
        check_limit(value, "--max-upload-mib-s")
    with pytest.raises(ValueError):
        throttle.TokenBucket(value)


def test_a_run_overrides_the_blocks_limits_only_where_it_gives_one():
    from pydantic import ValidationError

    from dmf.blocks import S3Repository

    block = S3Repository(bucket="b", max_upload_mib_s=40)
    assert block.with_limits() is block
    run = block.with_limits(max_download_mib_s=10)
    assert (run.max_upload_mib_s, run.max_download_mib_s) == (40, 10)
    assert block.with_limits(max_upload_mib_s=5).max_upload_mib_s == 5
    with pytest.raises(InputError, match="max_download_mib_s must be a positive number"):
        block.with_limits(max_download_mib_s=0)
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValidationError):
            S3Repository(bucket="b", max_download_mib_s=bad)


def test_a_restores_download_takes_every_byte_from_one_bucket(tmp_path, monkeypatch):
    from moto import mock_aws
    from prefect_aws import AwsCredentials
    from pydantic import SecretStr

    import dmf.download
    from dmf.blocks import S3Repository
    from dmf.download import Fetch, fetch_all
    from dmf.storage import Storage

    buckets = []

    class Recording(throttle.TokenBucket):
        def __init__(self, rate):
            super().__init__(rate)
            self.taken = []
            buckets.append(self)

        def take(self, nbytes):
            self.taken.append((threading.get_ident(), nbytes))

    monkeypatch.setattr(dmf.download, "bucket_for", lambda mib_s: None if mib_s is None else Recording(mib_s * MIB))
    files = {"a": bytes(range(256)) * (4096 * 12), "b": b"small"}  # 12 MiB: three 5 MiB ranges in parallel
    with mock_aws():
        repository = S3Repository(bucket="dmf-unit", part_size_mib=5, max_download_mib_s=48, credentials=AwsCredentials(
            aws_access_key_id="k", aws_secret_access_key=SecretStr("s"), region_name="us-east-1"))
        storage = Storage(repository)
        storage.s3.create_bucket(Bucket=repository.bucket)
        for key, data in files.items():
            storage.s3.put_object(Bucket=repository.bucket, Key=key, Body=data)
        fetch_all(storage, tmp_path, [Fetch(k, tmp_path / "r" / k, len(d), hashlib.sha256(d).hexdigest())
                                      for k, d in files.items()], parallel=4)
    (bucket,) = buckets
    assert bucket.rate == 48 * MIB
    assert sum(n for _, n in bucket.taken) == 12 * MIB + 5 and max(n for _, n in bucket.taken) <= MIB
    assert len({thread for thread, _ in bucket.taken}) > 1  # the ranges' threads share it
