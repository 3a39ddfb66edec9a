"""dmf.stream_cipher, the format-2 stream shared by the worker (dmf.encryption) and the node fetch agent,
which receives its source: it stands alone, says when a python cannot decrypt, and its errors become
dmf's on the worker. The format itself is tested through dmf.encryption (test_encryption)."""
import base64
import subprocess
import sys
from pathlib import Path

import pytest

from dmf import stream_cipher
from dmf.core.errors import PermanentError
from dmf.encryption import EncryptionError, decrypt_chunks, encrypt_chunks

KEY = bytes(range(32))
STORED_AT = "20250101120000/10.0.0.1/snapshots/ks/tbl-0/nb-1-big-Data.db"


def test_it_loads_alone_in_a_python_without_cryptography_and_says_it_cannot_decrypt(tmp_path):
    # -S: no site-packages (no cryptography, no dmf); run where no dmf source is either.
    source = Path(stream_cipher.__file__).read_text()
    loader = ("import sys,types;m=types.ModuleType('stream_cipher');exec(sys.stdin.read(),m.__dict__);"
              "print(m.unavailable())")
    out = subprocess.run([sys.executable, "-S", "-c", loader], input=source, capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, check=True)
    assert out.stdout.startswith("no cryptography package (No module named 'cryptography")


def test_this_python_can_decrypt():
    assert stream_cipher.unavailable() is None


def test_a_damaged_stream_is_a_stream_error_there_and_an_encryption_error_on_the_worker():
    stored = bytearray(b"".join(encrypt_chunks([b"x" * 5000], KEY, 1024, bound_to=STORED_AT)))
    stored[-1] ^= 1
    with pytest.raises(stream_cipher.StreamError) as raw:
        b"".join(stream_cipher.decrypt_chunks([bytes(stored)], KEY, "the-file", STORED_AT))
    assert not isinstance(raw.value, PermanentError)  # no dmf class: the agent has none
    with pytest.raises(EncryptionError) as wrapped:
        b"".join(decrypt_chunks([bytes(stored)], KEY, name="the-file", bound_to=STORED_AT))
    assert str(wrapped.value) == str(raw.value) == (
        "the-file: authentication failed (corrupted, truncated, another encryption key, or copied from another "
        "object)")
    assert wrapped.value.__cause__ is None and wrapped.value.__suppress_context__


def test_what_it_writes_dmf_reads_and_errors_name_no_key():
    data = b"plaintext " * 300
    stored = b"".join(stream_cipher.encrypt_chunks([data], KEY, 1024, STORED_AT))
    assert b"".join(decrypt_chunks([stored], KEY, name="f", bound_to=STORED_AT)) == data
    with pytest.raises(stream_cipher.StreamError) as failure:
        b"".join(stream_cipher.decrypt_chunks([stored], KEY, "f", "another/object/key"))
    message = str(failure.value)
    assert message.startswith("f: authentication failed")
    assert base64.b64encode(KEY).decode() not in message and KEY.hex() not in message
