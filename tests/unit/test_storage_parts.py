import hashlib

from dmf.storage import MIB, _Rechunker, multipart_etag, part_size_for


def test_rechunker_gives_exact_parts_whatever_the_chunking():
    data = bytes(range(256)) * 1000
    for chunk in (1, 7, 1000, 4096, len(data)):
        chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        parts = list(_Rechunker(chunks, 10_000))
        assert b"".join(parts) == data
        assert all(len(p) == 10_000 for p in parts[:-1]) and 0 < len(parts[-1]) <= 10_000


def test_part_size_grows_to_stay_within_10000_parts():
    assert part_size_for(1 * MIB, 16 * MIB) == 16 * MIB
    assert part_size_for(500_000 * MIB, 16 * MIB) >= 50 * MIB


def test_multipart_etag_matches_s3_rule():
    md5s = [hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()]
    assert multipart_etag(md5s) == hashlib.md5(md5s[0] + md5s[1]).hexdigest() + "-2"


def test_part_pool_bounds_parts_held_and_reads_only_with_a_free_slot():
    import threading
    import time

    from dmf.storage import PartPool

    pool, lock = PartPool(3), threading.Lock()
    held = peak = 0

    def parts():
        nonlocal held, peak
        for i in range(12):
            with lock:
                held += 1
                peak = max(peak, held)
            yield bytes([i])

    def upload(part: bytes) -> int:
        nonlocal held
        time.sleep(0.01)
        with lock:
            held -= 1
        return part[0]

    source, futures = parts(), []
    while (part := pool.read_part(source)) is not None:
        futures.append(pool.submit(upload, part))
    pool.shutdown()
    assert [f.result() for f in futures] == list(range(12))
    assert peak <= 3


def test_inline_part_pool_delivers_errors_through_the_future():
    from dmf.storage import PartPool

    pool = PartPool(1, inline=True)
    assert pool.read_part(iter([b"x"])) == b"x"
    future = pool.submit(lambda part: 1 / 0, b"x")
    assert isinstance(future.exception(), ZeroDivisionError)
    assert pool.read_part(iter([b"y"])) == b"y"  # the failed upload gave its slot back
