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
