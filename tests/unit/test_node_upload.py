from dmf.node_agent import _s3_code
from dmf.node_upload import MAX_URL_EXPIRY_S, MIN_NODE_RATE, URL_MARGIN_S, url_expiry_s
from dmf.storage import MIB


def test_presigned_urls_live_for_what_their_part_needs():
    # A small file's URL, or a first part's: minutes, not an hour.
    assert url_expiry_s(0, 8) == URL_MARGIN_S == 600
    assert url_expiry_s(16 * MIB, 8) == 600 + 16 * 8 // 2  # 16 MiB at an eighth of 2 MiB/s: 64 s
    assert url_expiry_s(16 * MIB, 8) < 15 * 60
    # A later part waits for the parts before it: its life grows with its end, at the file's share of the rate.
    assert url_expiry_s(1024 * MIB, 8) == 600 + 1024 * MIB * 8 // MIN_NODE_RATE
    assert url_expiry_s(1024 * MIB, 1) < url_expiry_s(1024 * MIB, 8)
    assert url_expiry_s(1, 1) == 601  # rounded up, never short
    assert url_expiry_s(10**15, 8) == MAX_URL_EXPIRY_S == 7 * 24 * 3600  # SigV4's limit


def test_s3_error_code_is_read_from_the_body():
    assert _s3_code(b"<?xml version='1.0'?><Error><Code>NoSuchUpload</Code><Message>m</Message></Error>") \
        == "NoSuchUpload"
    assert _s3_code(b"upstream timed out") == ""
