from dmf.node_agent import _s3_code
from dmf.node_upload import MAX_URL_EXPIRY_S, url_expiry_s
from dmf.storage import MIB


def test_presigned_urls_outlive_the_transfer_but_not_sigv4s_limit():
    assert url_expiry_s(0) == 3600
    assert url_expiry_s(10 * 1024 * MIB) == 3600 + 10 * 1024  # a second per MiB: 10 GiB at >= 1 MiB/s
    assert url_expiry_s(10**15) == MAX_URL_EXPIRY_S == 7 * 24 * 3600


def test_s3_error_code_is_read_from_the_body():
    assert _s3_code(b"<?xml version='1.0'?><Error><Code>NoSuchUpload</Code><Message>m</Message></Error>") \
        == "NoSuchUpload"
    assert _s3_code(b"upstream timed out") == ""
