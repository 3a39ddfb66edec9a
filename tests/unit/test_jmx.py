"""JMX credentials: the cluster block's fields, and how the password reaches nodetool (stdin, an
owner-only file removed after the call) without being in argv, a message or the registry backup."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.errors import InputError, failure_line
from dmf.core.secrets import MASK, mask_document
from dmf.node import PASSWORD_FILE_SHOWN, Node, jmx_password_command, jmx_password_file, with_java_options
from dmf.ssh import CommandResult, RemoteError, RemoteHost, redact

PASSWORD = "s3cr3t-Jmx!$`\"'pw"
HOSTS = [{"address": "10.0.0.1"}]


def cluster(**fields) -> CassandraCluster:
    return CassandraCluster(hosts=HOSTS, **fields)


def test_jmx_credentials_come_in_pairs_in_one_line():
    with pytest.raises(InputError, match="sets jmx_password without jmx_username") as raised:
        cluster(jmx_password=SecretStr(PASSWORD))
    assert "\n" not in str(raised.value) and PASSWORD not in str(raised.value)
    with pytest.raises(InputError, match="sets jmx_username without jmx_password"):
        cluster(jmx_username="admin")
    assert cluster().jmx_username is None and cluster().jmx_password is None
    assert cluster(jmx_username="admin", jmx_password=SecretStr(PASSWORD)).jmx_username == "admin"


@pytest.mark.parametrize("username, password", [
    ("ad\nmin", "pw"), ("ad min", "pw"), ("", "pw"), ("admin", "p\nw"), ("admin", "p w"), ("admin", "p\tw"),
    ("admin", ""),
])
def test_what_nodetools_password_file_cannot_carry_is_refused(username, password):
    with pytest.raises(InputError, match="nodetool's password file format cannot carry") as raised:
        cluster(jmx_username=username, jmx_password=SecretStr(password))
    message = str(raised.value)
    assert "\n" not in message and (not password or password not in message)


def test_the_registry_backup_masks_the_jmx_password_and_keeps_the_user():
    block = cluster(jmx_username="admin", jmx_password=SecretStr(PASSWORD))
    document = mask_document(json.loads(block.model_dump_json()))
    assert document["jmx_password"] == MASK and document["jmx_username"] == "admin"
    # The raw value too, as another block type might hold it as a plain string.
    assert mask_document({"jmx_password": PASSWORD, "jmx_username": "admin"}) == \
        {"jmx_password": MASK, "jmx_username": "admin"}
    assert PASSWORD not in json.dumps(document)


# --- the command built ------------------------------------------------------------------------------

class RecordingRemote:
    """A RemoteHost stand-in that records what run() is asked."""

    def __init__(self, block: CassandraCluster):
        self.cluster, self.host, self.calls = block, block.hosts[0], []

    def run(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        return CommandResult(tuple(argv), 0, "", "")


def test_without_credentials_nodetool_runs_as_before():
    remote = RecordingRemote(cluster())
    Node(remote).nodetool("status", timeout=60)
    plain = ["nodetool", "-h", "127.0.0.1", "-p", "7199", "status"]
    assert remote.calls == [(with_java_options(plain), {"timeout": 60, "shown": plain})]


def test_with_credentials_the_password_goes_on_stdin_never_in_argv():
    remote = RecordingRemote(cluster(jmx_username="admin", jmx_password=SecretStr(PASSWORD)))
    Node(remote).nodetool("snapshot", "-t", "dmf-1", "ks", timeout=60)
    [(argv, kwargs)] = remote.calls
    assert argv[:2] == ["sh", "-c"] and len(argv) == 3  # one remote command, no extra round trip
    assert PASSWORD not in shlex.join(argv) and PASSWORD not in json.dumps(kwargs["shown"])
    assert kwargs["stdin"] == f"admin {PASSWORD}\n".encode()
    assert kwargs["secrets"] == [PASSWORD] and kwargs["timeout"] == 60
    assert kwargs["shown"] == ["nodetool", "-h", "127.0.0.1", "-p", "7199", "-u", "admin", "-pwf",
                               PASSWORD_FILE_SHOWN, "snapshot", "-t", "dmf-1", "ks"]
    script = argv[2]
    # Owner-only file in a fresh private directory, removed by a trap on every exit of the shell.
    assert script.index("umask 077") < script.index('mktemp -d "${TMPDIR:-/tmp}/dmf-jmx.XXXXXXXXXX"')
    assert script.index("""trap '[ -z "$d" ] || rm -rf -- "$d"' EXIT""") < script.index("mktemp")
    for name, status in (("HUP", 129), ("INT", 130), ("TERM", 143), ("PIPE", 141)):
        assert f"trap 'exit {status}' {name}" in script
    assert 'cat > "$f"' in script
    last = script.rstrip("\n").splitlines()[-1]
    assert last == (f'{shlex.join(with_java_options(["nodetool", "-h", "127.0.0.1", "-p", "7199"]))} '
                    '-u admin -pwf "$f" snapshot -t dmf-1 ks </dev/null')


def test_a_hostile_username_is_one_quoted_word():
    hostile = "a'; rm -rf /"
    argv = jmx_password_command(["/opt/c/bin/nodetool", "-h", "127.0.0.1", "-p", "7199"], hostile, ["status"])
    # The remote login shell runs shlex.join(argv): sh gets the script back as one word, whole.
    assert shlex.split(shlex.join(argv)) == argv
    last = argv[2].rstrip("\n").splitlines()[-1]
    assert shlex.split(last) == ["/opt/c/bin/nodetool", "-h", "127.0.0.1", "-p", "7199", "-u", hostile, "-pwf",
                                 "$f", "status", "</dev/null"]
    assert f"-u {shlex.quote(hostile)} -pwf" in last


def test_a_block_copy_that_skipped_validation_is_still_refused():
    block = cluster().model_copy(update={"jmx_username": "admin"})  # model_copy does not validate
    with pytest.raises(InputError, match="sets jmx_username without jmx_password"):
        Node(RecordingRemote(block)).nodetool("status")
    block = cluster().model_copy(update={"jmx_username": "admin", "jmx_password": SecretStr("a\nb")})
    with pytest.raises(InputError, match="cannot carry"):
        Node(RecordingRemote(block)).nodetool("status")


def test_remote_errors_mask_the_password_and_keep_the_user():
    message = redact(f"`nodetool -u admin -pwf x` exited 1: bad {PASSWORD} and {PASSWORD[:4]}", [PASSWORD])
    assert PASSWORD not in message and f"bad {MASK} and {PASSWORD[:4]}" in message
    assert redact("ab abc", ["ab", "abc"]) == f"{MASK} {MASK}"  # the longer first, none left half shown
    assert redact("text", [""]) == "text"


# --- the real shell snippet, run here by RemoteHost.run over a local `sh -c` -----------------------

class LocalChannel:
    """The part of a paramiko channel RemoteHost.run uses, over a local process run as the node's
    login shell runs an exec request: `sh -c <the command line>`."""

    def __init__(self, command: str):
        self.process = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self._out, self._err, self._lock = bytearray(), bytearray(), threading.Lock()
        self._readers = [threading.Thread(target=self._drain, args=(stream, buffer), daemon=True)
                         for stream, buffer in ((self.process.stdout, self._out), (self.process.stderr, self._err))]
        for reader in self._readers:
            reader.start()
        self._idle = os.pipe()  # select() on it waits its timeout; the loop polls recv_ready

    def _drain(self, stream, buffer: bytearray) -> None:
        while data := stream.read1(65536):
            with self._lock:
                buffer += data

    def fileno(self) -> int:
        return self._idle[0]

    def sendall(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def shutdown_write(self) -> None:
        self.process.stdin.close()

    @property
    def eof_received(self) -> bool:
        return not any(reader.is_alive() for reader in self._readers)

    def recv_ready(self) -> bool:
        return bool(self._out)

    def recv_stderr_ready(self) -> bool:
        return bool(self._err)

    def _take(self, buffer: bytearray, size: int) -> bytes:
        with self._lock:
            data = bytes(buffer[:size])
            del buffer[:size]
            return data

    def recv(self, size: int) -> bytes:
        return self._take(self._out, size)

    def recv_stderr(self, size: int) -> bytes:
        return self._take(self._err, size)

    def recv_exit_status(self) -> int:
        return self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for fd in self._idle:
            os.close(fd)


# Stands for nodetool: records its argv, the -pwf file's and directory's modes, what `ps` shows of
# it and of its shell (cmdline and environment), and checks the file holds exactly the expected line.
FAKE_NODETOOL = """\
#!/bin/sh
pwf= prev=
for a do [ "$prev" = -pwf ] && pwf=$a; prev=$a; done
printf '%s\\n' "$pwf" > "$FAKE_DIR/pwf-path"
printf '%s\\n' "$@" > "$FAKE_DIR/argv"
cat /proc/$$/cmdline /proc/$$/environ /proc/$PPID/cmdline /proc/$PPID/environ > "$FAKE_DIR/proc"
stat -c '%a' "$pwf"
stat -c '%a' "${pwf%/*}"
[ -z "$(cat)" ] || { echo 'stdin is not empty' >&2; exit 8; }
cmp -s "$pwf" "$FAKE_DIR/expected" || { echo "wrong password file: $(cat "$pwf")" >&2; exit 9; }
[ -z "$FAKE_SLEEP" ] || { touch "$FAKE_DIR/started"; sleep "$FAKE_SLEEP"; }
echo "$FAKE_MESSAGE" >&2
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture()
def node_env(tmp_path, monkeypatch):
    """A fake nodetool on PATH, TMPDIR of our own (to see what is left in it), and a Node over
    RemoteHost whose channels are local `sh -c` processes."""
    bin_dir, tmp_dir, fake_dir = tmp_path / "bin", tmp_path / "tmp", tmp_path / "fake"
    for folder in (bin_dir, tmp_dir, fake_dir):
        folder.mkdir()
    (bin_dir / "nodetool").write_text(FAKE_NODETOOL)
    (bin_dir / "nodetool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TMPDIR", str(tmp_dir))
    monkeypatch.setenv("FAKE_DIR", str(fake_dir))

    def make(username: str, password: str) -> Node:
        (fake_dir / "expected").write_text(f"{username} {password}\n")
        block = cluster(jmx_username=username, jmx_password=SecretStr(password))
        remote = RemoteHost(block, block.hosts[0])
        remote.start = lambda argv, timeout=None: LocalChannel(shlex.join(argv))
        return Node(remote)
    return SimpleNamespace(make=make, tmp=tmp_dir, fake=fake_dir)


def test_nodetool_reads_an_owner_only_file_that_is_gone_afterwards(node_env):
    hostile = "a';touch${IFS}pwned;'$(id)`id`"  # no whitespace, so the block takes it
    result = node_env.make(hostile, PASSWORD).nodetool("status")
    assert result.exit_status == 0
    assert result.stdout.split() == ["600", "700"]  # the file owner-only, in a private directory
    argv = (node_env.fake / "argv").read_text().splitlines()
    assert argv == ["-h", "127.0.0.1", "-p", "7199", "-u", hostile, "-pwf", argv[7], "status"]
    assert argv[7].startswith(f"{node_env.tmp}/dmf-jmx.") and argv[7].endswith("/jmxremote.password")
    # Never in argv or the environment of nodetool or its shell, what `ps e` would show.
    assert PASSWORD.encode() not in (node_env.fake / "proc").read_bytes()
    assert list(node_env.tmp.iterdir()) == [] and not os.path.exists("pwned")


def test_the_file_is_removed_when_nodetool_fails_and_the_error_masks_the_password(node_env, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "3")
    monkeypatch.setenv("FAKE_MESSAGE", f"error: Authentication failed for admin with {PASSWORD}")
    with pytest.raises(RemoteError) as raised:
        node_env.make("admin", PASSWORD).nodetool("status")
    message = str(raised.value)
    assert PASSWORD not in message
    assert message == (f"10.0.0.1: `nodetool -h 127.0.0.1 -p 7199 -u admin -pwf '{PASSWORD_FILE_SHOWN}' status` "
                       f"exited 3: error: Authentication failed for admin with {MASK}")
    assert list(node_env.tmp.iterdir()) == []
    assert (node_env.fake / "pwf-path").read_text().strip()  # nodetool did run, and its file went after


# What nodetool 5.0 prints on a refused JMX login (tabs as in the original, the frames cut short).
REFUSED_LOGIN = """error: Invalid username or password
-- StackTrace --
javax.security.auth.login.FailedLoginException: Invalid username or password
\tat java.management/com.sun.jmx.remote.security.FileLoginModule.attemptAuthentication(FileLoginModule.java:460)
\tat java.base/java.lang.Thread.run(Thread.java:840)
"""


def test_a_refused_jmx_login_is_nodetools_error_line_not_its_stack_trace(node_env, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "2")
    monkeypatch.setenv("FAKE_MESSAGE", REFUSED_LOGIN)
    with pytest.raises(RemoteError) as raised:
        node_env.make("admin", PASSWORD).nodetool("status")
    assert str(raised.value).endswith("` exited 2: error: Invalid username or password")


@pytest.mark.parametrize("output, line", [
    (REFUSED_LOGIN, "error: Invalid username or password"),
    ("Exception in thread \"main\" java.lang.RuntimeException: boom\n\tat a.B.c(B.java:1)\n"
     "Caused by: java.io.IOException: disk full\n\tat x.Y.z(Y.java:2)\n\t... 3 more\n",
     "Caused by: java.io.IOException: disk full"),
    ("first\nat the end of the line\n\n", "at the end of the line"),
    ("-- StackTrace --\n", "-- StackTrace --"),
    (" \n", ""),
])
def test_the_failure_line_is_what_says_why(output, line):
    assert failure_line(output) == line


def test_a_truncated_stdin_runs_no_nodetool_and_leaves_nothing(node_env):
    node_env.make("admin", PASSWORD)
    argv = jmx_password_command(["nodetool"], "admin", ["drain"])
    channel = LocalChannel(shlex.join(argv))
    channel.sendall(b"admin s3cr")  # the connection dropped mid-write: no newline
    channel.shutdown_write()
    assert channel.recv_exit_status() == 125
    channel.close()
    assert not (node_env.fake / "argv").exists() and list(node_env.tmp.iterdir()) == []


def test_a_cut_stdin_with_the_connection_gone_leaves_nothing(node_env):
    """The dropped connection closed stderr too: the shell's message raises SIGPIPE, which must
    exit through the EXIT trap, not kill the shell with the partial password file left."""
    node_env.make("admin", PASSWORD)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run(jmx_password_command(["nodetool"], "admin", ["drain"]), input=b"admin s3c",
                                 stdout=subprocess.DEVNULL, stderr=write_end, timeout=30)
    finally:
        os.close(write_end)
    assert process.returncode == 141
    assert not (node_env.fake / "argv").exists() and list(node_env.tmp.iterdir()) == []


def test_a_terminated_shell_still_removes_the_file(node_env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "1")
    node_env.make("admin", PASSWORD)
    process = subprocess.Popen(jmx_password_command(["nodetool"], "admin", ["status"]), stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.stdin.write(jmx_password_file("admin", PASSWORD))
    process.stdin.close()
    deadline = time.monotonic() + 10
    while not (node_env.fake / "started").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    assert len(list(node_env.tmp.iterdir())) == 1  # the file exists while nodetool runs
    # SIGTERM to the script's shell alone: its trap waits for nodetool, then exits 143 through
    # the EXIT trap, which removes the directory.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 143
    assert list(node_env.tmp.iterdir()) == []

