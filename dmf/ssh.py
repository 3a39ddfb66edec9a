"""The remote layer: commands and file streams on a Cassandra host over SSH (paramiko).

Every argument is shell-quoted here, in one place; host keys are checked against known_hosts
and unknown keys are refused unless the cluster block says otherwise.
"""
from __future__ import annotations

import io
import logging
import select
import shlex
import socket
import threading
import time
import stat as stat_mode
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import paramiko

from dmf.blocks.cassandra_cluster import CassandraCluster, CassandraHost
from dmf.core.errors import DmfError, PermanentError, failure_line
from dmf.core.secrets import MASK, mask_text, settings_digest

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
TMP_SUFFIX = ".dmf-tmp"  # beside a file replace_file puts whole
# Larger SSH windows keep the pipe full on fast links (paramiko's default is 2 MiB); larger packets
# (OpenSSH sends up to 256 KiB) mean fewer trips through paramiko's per-packet Python code.
WINDOW = 4 * 1024 * 1024
MAX_PACKET = 256 * 1024
# Below this, a file is read over SFTP (no remote shell start); above, `cat` streams it faster.
SFTP_BELOW = 8 * 1024 * 1024
# AES-GCM first: one AEAD pass (AES-NI) instead of AES-CTR plus a separate HMAC, which halved the
# manager's CPU per byte streamed when measured on the test bed. The rest of paramiko's list follows.
_GCM_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class RemoteError(DmfError):
    """A host could not be reached or a remote command failed."""


class HostKeyRefused(RemoteError, PermanentError):
    pass


class RemotePermissionDenied(RemoteError, PermanentError):
    """The node refused access to a file or command: the block's user or paths need fixing."""


def remote_error(message: str) -> RemoteError:
    """The error for a failed remote step, permanent when the node said permission was denied."""
    return (RemotePermissionDenied if "Permission denied" in message else RemoteError)(message)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class RemoteFile:
    path: str      # relative to the listed directory
    size: int
    mtime: float


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every occurrence of each secret replaced by the mask (longest first, so a secret
    inside another is not left half shown)."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def command_argv(command: str, *args: str) -> list[str]:
    """A block's command string (`nodetool`, `/opt/c/bin/nodetool`, `sudo -u cassandra nodetool`) plus arguments."""
    return [*shlex.split(command), *args]


def _load_private_key(text: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise RemoteError("the cluster block's SSH private key is not a supported unencrypted OpenSSH/PEM key")


class _Transport(paramiko.Transport):
    _preferred_ciphers = (*_GCM_FIRST, *(c for c in paramiko.Transport._preferred_ciphers if c not in _GCM_FIRST))


class IdleConnections:
    """SSH connections that a closed RemoteHost left open for the next one to the same host under the
    same SSH settings: a run's steps on a node follow one another, and each paid a key exchange and a
    login otherwise (0.1-0.6 s on the test bed, more over a WAN). A connection serves one RemoteHost at
    a time, as before; one idle past `max_idle` seconds, or whose transport closed, is not reused."""

    def __init__(self, per_key: int = 4, max_idle: float = 60):
        self.per_key, self.max_idle = per_key, max_idle
        self._idle: dict[str, list[tuple[float, paramiko.SSHClient]]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> paramiko.SSHClient | None:
        stale = []
        try:
            with self._lock:
                idle = self._idle.get(key, [])
                while idle:
                    since, client = idle.pop()
                    transport = client.get_transport()
                    if time.monotonic() - since <= self.max_idle and transport is not None and transport.is_active():
                        return client
                    stale.append(client)
            return None
        finally:
            for client in stale:
                client.close()

    def give(self, key: str, client: paramiko.SSHClient) -> None:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            client.close()
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            idle.append((time.monotonic(), client))
            surplus = idle[:-self.per_key]
            del idle[:-self.per_key]
        for _, extra in surplus:
            extra.close()


_idle_connections = IdleConnections()


class RemoteHost:
    """One SSH connection to one host, taken from the idle ones where it can be and left there on
    close. Not thread-safe for commands; open one per worker."""

    def __init__(self, cluster: CassandraCluster, host: CassandraHost):
        self.cluster = cluster
        self.host = host
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._reused = False
        self._channels: list[paramiko.Channel] = []

    @property
    def label(self) -> str:
        return f"{self.cluster.ssh_user}@{self.host.ssh_address}:{self.host.ssh_port}"

    @property
    def _pool_key(self) -> str:
        """A digest of the host and of every setting the connection was made and checked under (its
        key, known_hosts and strictness), so that no block reuses a connection another one's rules let in."""
        fields = self.cluster.model_dump(include={"ssh_user", "ssh_private_key", "ssh_private_key_path",
                                                  "known_hosts", "known_hosts_path", "strict_host_key_checking"})
        return settings_digest({**fields, "host": (self.host.ssh_address, self.host.ssh_port)})

    def connect(self) -> RemoteHost:
        client = _idle_connections.take(self._pool_key)
        self._reused = client is not None
        self._client = client or self._new_client()
        return self

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.cluster.known_hosts_path:
            client.load_host_keys(self.cluster.known_hosts_path)
        if self.cluster.known_hosts:
            for line in self.cluster.known_hosts.splitlines():
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                if entry is not None:
                    for name in entry.hostnames:
                        client.get_host_keys().add(name, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(
            paramiko.RejectPolicy() if self.cluster.strict_host_key_checking else paramiko.WarningPolicy())
        pkey = (_load_private_key(self.cluster.ssh_private_key.get_secret_value())
                if self.cluster.ssh_private_key else None)
        try:
            client.connect(
                self.host.ssh_address, port=self.host.ssh_port, username=self.cluster.ssh_user,
                pkey=pkey, key_filename=self.cluster.ssh_private_key_path if pkey is None else None,
                timeout=self.cluster.ssh_connect_timeout, banner_timeout=self.cluster.ssh_connect_timeout,
                auth_timeout=self.cluster.ssh_connect_timeout, allow_agent=False, look_for_keys=False,
                transport_factory=_Transport)
        except paramiko.BadHostKeyException:
            raise HostKeyRefused(f"{self.label}: host key does not match known_hosts; refusing to connect") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyRefused(f"{self.label}: host key is not in known_hosts; refusing to connect "
                                     "(add it to the cluster block's known_hosts)") from None
            raise RemoteError(f"{self.label}: SSH failed: {exc}") from None
        except (OSError, socket.timeout) as exc:
            raise RemoteError(f"{self.label}: cannot connect: {exc.strerror or exc}") from None
        transport = client.get_transport()
        transport.set_keepalive(30)
        transport.default_window_size = WINDOW
        return client

    def close(self) -> None:
        """Ends this host's commands and streams (as closing the connection did: a node agent still
        attached sees its input end) and leaves the connection to the next RemoteHost."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self._sftp is not None:
            self._sftp.close()
        if self._client is not None:
            _idle_connections.give(self._pool_key, self._client)
        self._client = self._sftp = None

    def __enter__(self) -> RemoteHost:
        return self.connect() if self._client is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            self.connect()
        return self._client

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._on_live_connection(lambda client: client.open_sftp())
        return self._sftp

    def _on_live_connection(self, open_on):
        """`open_on(client)`, on a new connection if the idle one taken was dropped meanwhile (sshd
        restarted, a network blip)."""
        try:
            return open_on(self.client)
        except (paramiko.SSHException, EOFError, OSError):
            if not self._reused:
                raise
            self._client.close()
            self._client, self._reused = self._new_client(), False
            return open_on(self._client)

    def start(self, argv: Sequence[str], timeout: float | None = None) -> paramiko.Channel:
        """Starts argv on the host (each argument quoted); the caller converses over the returned
        channel's stdin/stdout."""
        channel = self._on_live_connection(lambda client: client.get_transport().open_session(
            window_size=WINDOW, max_packet_size=MAX_PACKET))
        self._channels = [c for c in self._channels if not c.closed]
        self._channels.append(channel)
        channel.settimeout(timeout)
        channel.exec_command(shlex.join(argv))
        return channel

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = 600,
            stdin: bytes | None = None, shown: Sequence[str] | None = None,
            secrets: Sequence[str] = ()) -> CommandResult:
        """Runs argv on the host (each argument quoted); raises RemoteError on a non-zero exit if `check`.

        `stdin`, if given, is sent on the channel and then closed (the way to hand the command a secret:
        never in argv, which the node's `ps` shows). Messages name the command as `shown` (default
        argv), masked, and every string in `secrets` is replaced by the mask wherever it appears."""
        shown = argv if shown is None else shown
        channel = self.start(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        stdout, stderr = bytearray(), bytearray()
        try:
            if stdin is not None:
                try:
                    channel.sendall(stdin)
                    channel.shutdown_write()
                except OSError:
                    pass  # the command ended (or the connection dropped) first: its status says why
            # Drain both streams as they come, so neither fills its window and stalls the command.
            # Read to EOF, not to the exit status: sshd may send the status before the last output.
            while not (channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready()):
                select.select([channel], [], [], 0.1)
                if channel.recv_ready():
                    stdout += channel.recv(CHUNK)
                if channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(CHUNK)
                if deadline is not None and time.monotonic() > deadline:
                    raise RemoteError(f"{self.host.address}: `{shown[0]}` timed out after {timeout:.0f}s")
            status = channel.recv_exit_status()
        finally:
            channel.close()
        result = CommandResult(tuple(argv), status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        if check and status != 0:
            detail = failure_line(result.stderr) or failure_line(result.stdout)
            # Masked: a block's command may carry a password (`nodetool -pw ...`); `secrets` are
            # masked whole, before the message is cut, so no cut can leave a part of one.
            message = (f"{self.host.address}: `{mask_text(redact(shlex.join(shown), secrets))[:200]}` exited {status}"
                       + (f": {redact(detail, secrets)[:300]}" if detail else ""))
            raise remote_error(message)
        return result

    def list_files(self, directory: str) -> list[RemoteFile]:
        """Regular files below `directory` (recursive), paths relative to it; empty if it does not exist."""
        result = self.run(["find", directory, "-type", "f", "-printf", r"%s\t%T@\t%P\0"], check=False)
        if result.exit_status != 0:
            if "No such file or directory" in result.stderr:
                return []
            raise remote_error(f"{self.host.address}: cannot list {directory}: {result.stderr.strip()[:300]}")
        files = []
        for record in result.stdout.split("\0"):
            if record:
                size, mtime, path = record.split("\t", 2)
                files.append(RemoteFile(path=path, size=int(size), mtime=float(mtime)))
        return files

    def stat(self, path: str) -> paramiko.SFTPAttributes:
        try:
            return self.sftp.stat(path)
        except FileNotFoundError:
            raise RemoteError(f"{self.host.address}: {path} does not exist") from None

    def is_file(self, path: str) -> bool:
        return self._is(path, stat_mode.S_ISREG)

    def is_dir(self, path: str) -> bool:
        return self._is(path, stat_mode.S_ISDIR)

    def _is(self, path: str, kind) -> bool:
        try:
            return kind(self.sftp.stat(path).st_mode)
        except FileNotFoundError:
            return False

    def iter_file(self, path: str, size: int | None = None, chunk: int = CHUNK) -> Iterator[bytes]:
        """Streams a remote file in chunks (never whole in memory): over an exec channel running `cat`,
        or, for a file known to be small, over the connection's SFTP session. Every exec starts the
        user's shell, and its profile scripts can cost more than reading a small file (100 ms each on
        the test bed; an SSTable has eight small components)."""
        if size is not None and size < SFTP_BELOW:
            yield from self._iter_sftp(path, chunk)
            return
        channel = self.start(["cat", "--", path], timeout=300)
        try:
            while True:
                data = channel.recv(chunk)
                if not data:
                    break
                yield data
            status = channel.recv_exit_status()
            if status != 0:
                err = channel.recv_stderr(4096).decode(errors="replace").strip()
                raise remote_error(f"{self.host.address}: cannot read {path}: {err or f'cat exited {status}'}")
        except socket.timeout:
            raise RemoteError(f"{self.host.address}: reading {path} timed out") from None
        finally:
            channel.close()

    def _iter_sftp(self, path: str, chunk: int) -> Iterator[bytes]:
        try:
            with self.sftp.open(path, "rb") as remote:
                remote.prefetch()
                while data := remote.read(chunk):
                    yield data
        except OSError as exc:
            raise remote_error(f"{self.host.address}: cannot read {path}: {exc.strerror or exc}") from None

    def replace_file(self, path: str, data: bytes, like: str | None = None) -> None:
        """Puts `data` at `path` all at once: written to `<path>.dmf-tmp`, given the mode and owner of
        `like` (default: the file it replaces, if any), then renamed over `path` (SFTP posix-rename,
        atomic on the node's filesystem). Killed before the rename, `path` is as it was (a stale
        `.dmf-tmp` is overwritten next time); after, it is whole: never truncated, as an in-place
        write leaves it. Refused with nothing replaced when the owner cannot be kept."""
        tmp = f"{path}{TMP_SUFFIX}"
        try:
            with self.sftp.open(tmp, "wb") as remote:
                remote.write(data)
            try:
                model = self.sftp.stat(like or path)
            except FileNotFoundError:
                model = None
            if model is not None:
                self.sftp.chmod(tmp, stat_mode.S_IMODE(model.st_mode))
                written = self.sftp.stat(tmp)
                if (written.st_uid, written.st_gid) != (model.st_uid, model.st_gid):
                    self.sftp.chown(tmp, model.st_uid, model.st_gid)
            self.sftp.posix_rename(tmp, path)
        except OSError as exc:
            try:
                self.sftp.remove(tmp)
            except OSError:
                pass
            raise remote_error(f"{self.host.address}: cannot replace {path} (through {tmp}, left as it was): "
                               f"{exc.strerror or exc}") from None

    def write_file(self, path: str, source: BinaryIO, chunk: int = CHUNK) -> int:
        """Streams `source` into a remote file via SFTP; returns the bytes written."""
        written = 0
        with self.sftp.open(path, "wb") as remote:
            remote.set_pipelined(True)
            while data := source.read(chunk):
                remote.write(data)
                written += len(data)
        return written
