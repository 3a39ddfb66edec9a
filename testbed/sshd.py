"""A private OpenSSH server on loopback: the product reaches every Cassandra "host" through it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dmf import procs

from .layout import MAX_NODES, Testbed

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd")


def sshd_binary() -> str | None:
    return next((p for p in SSHD_CANDIDATES if Path(p).exists()), shutil.which("sshd"))


def ensure_installed() -> str:
    """Installs Debian's openssh-server when missing (the test bed runs as root)."""
    binary = sshd_binary()
    if binary:
        return binary
    print("installing openssh-server with apt-get ...", flush=True)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "openssh-server"]):
        result = subprocess.run(argv, capture_output=True, text=True,
                                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if result.returncode != 0:
            raise procs.StartError(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    binary = sshd_binary()
    if not binary:
        raise procs.StartError("openssh-server installed but no sshd binary found")
    return binary


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True)


def addresses() -> list[str]:
    return [f"127.0.0.{i}" for i in range(1, MAX_NODES + 1)]


def configure(tb: Testbed) -> None:
    """Host key, client key, authorized_keys, known_hosts and sshd_config under the test bed."""
    tb.ssh.mkdir(parents=True, exist_ok=True)
    tb.ssh.chmod(0o700)
    host_key, client_key = tb.ssh / "ssh_host_ed25519_key", tb.ssh / "id_ed25519"
    _keygen(host_key, "dmf-testbed-host")
    _keygen(client_key, "dmf-testbed-client")
    (tb.ssh / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    host_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    (tb.ssh / "known_hosts").write_text(
        "".join(f"[{addr}]:{tb.ssh_port} {host_pub}\n" for addr in addresses()))
    listen = "".join(f"ListenAddress {addr}:{tb.ssh_port}\n" for addr in addresses())
    (tb.ssh / "sshd_config").write_text(
        f"{listen}"
        f"HostKey {host_key}\n"
        f"PidFile {tb.ssh / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tb.ssh / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "UsePAM no\n"
        # The test bed's key files live in the work tree, whose parents sshd would otherwise audit.
        "StrictModes no\n"
        "MaxSessions 64\n"
        "MaxStartups 64:30:128\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel INFO\n")


def _pid_file(tb: Testbed) -> Path:
    return tb.run / "sshd.pid"


def is_running(tb: Testbed) -> bool:
    return procs.read_pid(_pid_file(tb)) is not None


def start(tb: Testbed) -> None:
    binary = ensure_installed()
    configure(tb)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation directory
    tb.run.mkdir(parents=True, exist_ok=True)
    log = tb.logs / "sshd.log"
    check = subprocess.run([binary, "-t", "-f", str(tb.ssh / "sshd_config")], capture_output=True, text=True)
    if check.returncode != 0:
        raise procs.StartError(f"sshd rejected its configuration: {check.stderr.strip()}")
    # -D keeps it in the foreground so the pid we record is the listener's.
    procs.spawn([binary, "-D", "-e", "-f", str(tb.ssh / "sshd_config")], log_file=log, pid_file=_pid_file(tb))
    procs.wait_until(lambda: all(procs.port_open(a, tb.ssh_port) for a in addresses()),
                     what="sshd", timeout=30, pid_file=_pid_file(tb), log_file=log)


def stop(tb: Testbed) -> bool:
    return procs.stop(_pid_file(tb), marker=str(tb.ssh))
