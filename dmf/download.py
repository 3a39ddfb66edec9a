"""Parallel, streamed, verified downloads from the bucket into a local directory.

Each file is written to `<name>.part` (a large one as parallel byte ranges), checked against
its manifest entry (size and SHA-256) and only then renamed into place: a file present under
its final name is a verified one, which is what lets a rerun skip it and resume.

PATH may be shared (/tmp), so nothing below it is followed: every directory is opened relative
to its parent without following a symlink and must be a directory of this user (made 0o700 when
missing); a `.part` is created O_CREAT|O_EXCL|O_NOFOLLOW, 0o600, then written, hashed and
renamed through descriptors. A planted symlink can neither redirect a write nor be loaded.

The repository's max_download_mib_s limits the whole download: every range of every file takes its
1 MiB chunks from one token bucket.

A client-side encrypted file (Fetch.plain) is downloaded and checked as stored, then decrypted and
authenticated chunk by chunk into a second owner-only `.plain.part`, checked against the plaintext's
size and SHA-256 and only then renamed into place: nothing unauthenticated ever bears a final name.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dmf.core.errors import DmfError, InputError
from dmf.core.manifest import PlainFile
from dmf.core.paths import is_within
from dmf.encryption import decrypt_chunks
from dmf.storage import MIB, Storage, VerificationError
from dmf.throttle import TokenBucket, bucket_for, throttled

if TYPE_CHECKING:  # dmf.restore_plan builds on this module's Fetch
    from dmf.restore_plan import TableLoad

Progress = Callable[[int], None]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Read and write: the file is hashed back through the descriptor it was written with, never reopened by name.
_PART_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Fetch:
    key: str
    dest: Path
    size: int      # of the stored object
    sha256: str
    plain: PlainFile | None = None  # client-side encrypted: what it decrypts to, the file placed at dest

    @property
    def placed(self) -> Fetch:
        """The file as it ends up at dest: the stored object itself, or its plaintext."""
        return self if self.plain is None else Fetch(self.key, self.dest, self.plain.size, self.plain.sha256)


def safe_join(root: Path, *parts: str) -> Path:
    """root/parts, refusing anything that would land outside root. Lexical: nothing on disk is
    looked at here; the download itself refuses links below root."""
    base = posixpath.normpath(str(root))
    path = posixpath.normpath(posixpath.join(base, *parts))
    if path == base or not is_within(path, base):
        raise DmfError(f"refusing to write outside {root}: {'/'.join(parts)}")
    return Path(path)


def _make_path(root: Path) -> None:
    """PATH and its missing parents, owner-only; directories that exist are left as they are."""
    missing = []
    for directory in (root, *root.parents):
        if os.path.lexists(directory):
            break
        missing.append(directory)
    for directory in reversed(missing):
        with suppress(FileExistsError):  # made meanwhile: judged below like any existing PATH
            os.mkdir(directory, 0o700)


def check_destination(root: Path, needed: int) -> None:
    """PATH must be a writable directory no other user can rearrange, with room for what is still to fetch."""
    # Whoever can rename entries of PATH, or PATH itself in a folder above it, could swap verified
    # files for others before they are loaded. Checked before anything is made.
    for directory in (root, *Path(os.path.abspath(root)).parents):
        if os.path.isdir(directory):
            _refuse_shared(directory, root)
    try:
        _make_path(root)
    except OSError as exc:
        raise InputError(f"PATH {root} cannot be created: {exc.strerror}") from None
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise InputError(f"PATH {root} is not a writable directory")
    free = shutil.disk_usage(root).free
    if free < needed:
        raise InputError(f"PATH {root} has {free / 2**30:.2f} GiB free; the restore needs {needed / 2**30:.2f} GiB")


def _writable_by_others(mode: int) -> str | None:
    """Who besides the owner may rename a directory's entries: nobody where it is sticky (as /tmp)."""
    if mode & stat.S_ISVTX:
        return None
    return "every user" if mode & stat.S_IWOTH else "its group" if mode & stat.S_IWGRP else None


def _refuse_shared(directory: Path, root: Path) -> None:
    info = os.stat(directory)
    where = f"PATH {root}" if directory == root else f"PATH {root} is inside {directory}, which"
    if info.st_uid not in (os.geteuid(), 0):
        raise InputError(f"{where} belongs to another user (uid {info.st_uid}): use a directory of your own")
    who = _writable_by_others(info.st_mode)
    if who:
        raise InputError(f"{where} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}), who could swap "
                         f"verified files before they are loaded: chmod go-w {directory}, or use a directory of "
                         "your own")


def bytes_missing(fetches: list[Fetch]) -> int:
    """What is still to download: the files not yet present, as regular files, under their final name."""
    def present(path: Path) -> bool:
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):  # PATH's own checks report what is wrong
            return False
    return sum(f.size for f in fetches if not present(f.dest))


def _below(root: Path, path: Path) -> tuple[str, ...]:
    return path.relative_to(root).parts


def _unsafe(root: Path, names: Sequence[str], what: str) -> InputError:
    return InputError(f"refusing {root.joinpath(*names)}: it is {what}; below PATH {root} dmf uses only "
                      "directories it made (remove it, or choose another PATH)")


@contextmanager
def _directory(root: Path, names: Sequence[str], create: bool) -> Iterator[int]:
    """A descriptor of root/names. Each component is opened relative to its parent's descriptor
    without following a symlink (made 0o700 first when missing and `create`), and must be a
    directory owned by this user: swapping a component cannot redirect what goes through it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(names):
            if create:
                with suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=fd)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                link = stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
                raise _unsafe(root, names[:depth + 1], "a symbolic link" if link else "not a directory") from None
            os.close(fd)
            fd = child
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                raise _unsafe(root, names[:depth + 1], f"owned by another user (uid {info.st_uid})")
            who = _writable_by_others(info.st_mode)
            if who:
                raise _unsafe(root, names[:depth + 1],
                              f"writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})")
        yield fd
    finally:
        os.close(fd)


def _sha256_of(fd: int) -> str:
    digest, offset = hashlib.sha256(), 0
    while chunk := os.pread(fd, MIB, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _verified(folder: int, name: str, fetch: Fetch) -> bool:
    """Whether `name` in `folder` is a regular file (a symlink is not) matching the manifest."""
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size != fetch.size:
        return False
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    try:
        return _sha256_of(fd) == fetch.sha256
    finally:
        os.close(fd)


def _discard_part(folder: int, part: str) -> None:
    # A .part never holds a verified file (those only ever bear the final name), and unlinking a
    # symlink removes the link, never its target. Dies just before: the .part stays and the next
    # attempt unlinks it; just after: nothing is lost, the next attempt creates it anew.
    with suppress(FileNotFoundError):
        os.unlink(part, dir_fd=folder)


def _write_range(storage: Storage, fetch: Fetch, fd: int, start: int, end: int, progress: Progress | None,
                 bucket: TokenBucket | None) -> None:
    offset = start
    for chunk in throttled(storage.iter_object(fetch.key, byte_range=(start, end)), bucket):
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        if progress:
            progress(len(chunk))


def fetch_one(storage: Storage, root: Path, fetch: Fetch, ranges: Executor, progress: Progress | None = None,
              bucket: TokenBucket | None = None, encryption_key: bytes | None = None) -> bool:
    """Downloads and verifies one file below `root`; returns False when it was already there and verified.

    A file larger than a part comes as byte ranges in parallel on `ranges` (one GET stream per
    file is slower than S3 serves), written in place, then hashed from the page cache."""
    *folders, name = _below(root, fetch.dest)
    with _directory(root, folders, create=True) as folder:
        if _verified(folder, name, fetch.placed):
            if progress:
                progress(fetch.size)
            return False
        part = name + ".part"
        _discard_part(folder, part)  # a stale one from an earlier attempt, or one planted
        fd = os.open(part, _PART_FLAGS, 0o600, dir_fd=folder)
        try:
            os.ftruncate(fd, fetch.size)
            part_size = storage.repository.part_size_mib * MIB
            futures = [ranges.submit(_write_range, storage, fetch, fd, start, min(start + part_size, fetch.size),
                                     progress, bucket) for start in range(0, fetch.size, part_size)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                wait(futures)
                raise
            size, sha256 = os.fstat(fd).st_size, _sha256_of(fd)
        except BaseException:
            _discard_part(folder, part)
            raise
        finally:
            os.close(fd)
        if size != fetch.size or sha256 != fetch.sha256:
            _discard_part(folder, part)
            raise VerificationError(f"s3://{storage.bucket}/{fetch.key}: downloaded {size} bytes with SHA-256 "
                                    f"{sha256[:12]}…, manifest says {fetch.size} bytes, {fetch.sha256[:12]}…")
        if fetch.plain is not None:
            try:
                _decrypt(folder, part, name, fetch.key, fetch.plain, encryption_key)
            finally:
                _discard_part(folder, part)
            return True
        # Replaces only what failed the check above (partial, corrupt, or a symlink: the link goes,
        # never its target). Dies just before: the verified .part is downloaded again by the rerun;
        # just after: the file is in place and verified, and the rerun skips it.
        os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)
    return True


def _decrypt(folder: int, part: str, name: str, key: str, plain: PlainFile, encryption_key: bytes | None) -> None:
    """The verified ciphertext `part` decrypted into `name`, through a `.plain.part` renamed only
    once every chunk authenticated and the plaintext matches the manifest."""
    if encryption_key is None:
        raise VerificationError(f"{key}: client-side encrypted, and the repository block has no encryption_key")
    # Dies just before the rename: the rerun downloads and decrypts again; just after: the file is in
    # place and verified (the ciphertext .part is removed by the caller, or by the rerun).
    _rewrite(folder, part, name, name + ".plain.part",
             lambda source: decrypt_chunks(_read_chunks(source), encryption_key, name=key, bound_to=key),
             plain.size, plain.sha256, f"{key}: decrypted")


def _rewrite(folder: int, source_name: str, name: str, part: str, chunks_of: Callable[[int], Iterable[bytes]],
             size: int, sha256: str, what: str) -> None:
    """`name` made from `source_name` by `chunks_of` (decryption, decompression): written to an
    owner-only `part`, checked against the size and SHA-256 the manifest gives, then renamed."""
    _discard_part(folder, part)
    source = os.open(source_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    digest, written = hashlib.sha256(), 0
    try:
        fd = os.open(part, _PART_FLAGS, 0o600, dir_fd=folder)
        try:
            for chunk in chunks_of(source):
                digest.update(chunk)
                written += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        except BaseException:
            _discard_part(folder, part)
            raise
        finally:
            os.close(fd)
    finally:
        os.close(source)
    if written != size or digest.hexdigest() != sha256:
        _discard_part(folder, part)
        raise VerificationError(f"{what} to {written} bytes with SHA-256 {digest.hexdigest()[:12]}…, "
                                f"manifest says {size} bytes, {sha256[:12]}…")
    os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)


def _read_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, MIB):
        yield chunk


def fetch_all(storage: Storage, root: Path, fetches: list[Fetch], parallel: int,
              progress: Progress | None = None) -> int:
    """Downloads everything below `root` in parallel (largest first), within the repository's
    max_download_mib_s; returns how many files were transferred."""
    bucket = bucket_for(storage.repository.max_download_mib_s)
    encryption_key = storage.repository.client_key()
    with ThreadPoolExecutor(parallel, thread_name_prefix="range") as ranges, \
            ThreadPoolExecutor(parallel, thread_name_prefix="down") as files:
        results = list(files.map(lambda f: fetch_one(storage, root, f, ranges, progress, bucket, encryption_key),
                                 sorted(fetches, key=lambda f: -f.size)))
    return sum(results)


@dataclass(frozen=True)
class Unpack:
    """A compressed download (`stored`) to give back as the file it was (`dest`, `size`, `sha256`)."""
    stored: Path
    dest: Path
    size: int
    sha256: str


def unpack_all(root: Path, unpacks: list[Unpack]) -> int:
    """Decompresses each `stored` file beside itself into `dest`, through the same no-follow
    descriptors as the download: written to an owner-only `.part`, checked against the original's
    size and SHA-256, renamed into place, then the compressed file removed. A `dest` already there
    and verified (an earlier run got this far) is kept. Returns how many were decompressed."""
    done = 0
    for unpack in unpacks:
        *folders, name = _below(root, unpack.dest)
        stored = unpack.stored.name
        with _directory(root, folders, create=False) as folder:
            if not _verified(folder, name, Fetch("", unpack.dest, unpack.size, unpack.sha256)):
                _decompress(folder, stored, name, unpack)
                done += 1
            # Dies just before: the rerun finds dest verified and removes this then.
            with suppress(FileNotFoundError):
                os.unlink(stored, dir_fd=folder)
    return done


def _decompress(folder: int, stored: str, name: str, unpack: Unpack) -> None:
    _rewrite(folder, stored, name, name + ".part", lambda source: _gunzipped(source, unpack.stored),
             unpack.size, unpack.sha256, f"{unpack.stored}: decompressed")


def _gunzipped(fd: int, stored: Path) -> Iterator[bytes]:
    try:
        with os.fdopen(fd, "rb", closefd=False) as raw, gzip.GzipFile(fileobj=raw) as compressed:
            while chunk := compressed.read(MIB):
                yield chunk
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # only the stream's own faults
        raise VerificationError(f"{stored}: not a whole gzip stream ({exc})") from None


def link_for_load(root: Path, load: TableLoad) -> None:
    """Fills `load.directory` with hard links to its verified files under their load names, after
    emptying it: an entry left by an earlier attempt would be streamed too. Not destructive: the
    links are removed, never the files they share, and a rerun rebuilds the folder the same way."""
    with _directory(root, _below(root, load.directory), create=True) as folder:
        for name in os.listdir(folder):
            os.unlink(name, dir_fd=folder)  # a directory here fails the load: dmf makes none
        for source, name in load.links:
            *folders, source_name = _below(root, source)
            with _directory(root, folders, create=False) as source_folder:
                os.link(source_name, name, src_dir_fd=source_folder, dst_dir_fd=folder, follow_symlinks=False)


def remove_downloads(root: Path, files: list[Path], dirs: list[Path]) -> int:
    """Removes `files`, then each of `dirs` (deepest first) that is left empty, through the same
    no-follow descriptors as the download; returns how many files were removed."""
    removed = 0
    for path in files:
        *folders, name = _below(root, path)
        with suppress(FileNotFoundError):
            with _directory(root, folders, create=False) as folder:
                os.unlink(name, dir_fd=folder)
            removed += 1
    for path in dirs:
        *folders, name = _below(root, path)
        try:
            with _directory(root, folders, create=False) as folder:
                os.rmdir(name, dir_fd=folder)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:  # something else lives there: it stays
                raise
    return removed


def write_private(path: Path, text: str) -> None:
    """A small file of dmf's directly in PATH (the replay state): written to a fresh owner-only
    `.part` that follows no link, then renamed over the old one, so a crash leaves one or the other."""
    part = path.with_name(path.name + ".part")
    with suppress(FileNotFoundError):
        os.unlink(part)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, path)
