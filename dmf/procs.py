"""Processes started in the background (the test bed's services, a restore's scratch Cassandra), tracked by pid
file so a stop ends only its own."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StartError(RuntimeError):
    """A service did not come up; the message carries the tail of its log."""


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if is_alive(pid) else None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A zombie still answers kill(0); it is not running.
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def cmdline_mentions(pid: int, marker: str) -> bool:
    """Guards against a recycled pid: ours always carry the test bed directory in argv."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def spawn(argv: Sequence[str], *, log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop(pid_file: Path, marker: str, timeout: float = 60) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; returns whether a process was stopped."""
    pid = read_pid(pid_file)
    if pid is None or not cmdline_mentions(pid, marker):
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if is_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while is_alive(pid):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(log_file: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {log_file})"


def wait_until(check: Callable[[], bool], *, what: str, timeout: float, pid_file: Path,
               log_file: Path) -> None:
    """Polls `check`; fails fast with the log's tail if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if read_pid(pid_file) is None:
            raise StartError(f"{what} exited during start-up; last lines of {log_file}:\n{log_tail(log_file)}")
        time.sleep(1)
    raise StartError(f"{what} not ready after {timeout:.0f}s; last lines of {log_file}:\n{log_tail(log_file)}")
