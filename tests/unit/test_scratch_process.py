"""A scratch Cassandra outliving its worker (issue 25's crash table), with stand-in processes: it dies
with the worker thread that started it, and a rerun stops one left running and removes its folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from dmf.procs import is_alive
from dmf.scratch_cassandra import remove_leftovers


def test_a_rerun_stops_the_node_an_earlier_run_left_and_removes_its_folder(tmp_path):
    home = tmp_path / "scratch-cassandra"
    home.mkdir()
    # Its command line names the folder, as the scratch JVM's -Dcassandra.storagedir does.
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(home)],
                            start_new_session=True)
    (home / "cassandra.pid").write_text(f"{left.pid}\n")
    (home / "data").mkdir()
    remove_leftovers(home)
    assert left.wait(timeout=30) == -signal.SIGTERM
    assert not home.exists()


def test_a_pid_file_naming_someone_elses_process_stops_nothing(tmp_path):
    home = tmp_path / "scratch-cassandra"
    home.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        (home / "cassandra.pid").write_text(f"{other.pid}\n")  # a recycled pid
        remove_leftovers(home)
        assert other.poll() is None and not home.exists()
    finally:
        other.kill()
        other.wait()


def test_the_node_dies_with_the_worker_that_started_it(tmp_path):
    pid_file = tmp_path / "child.pid"
    worker = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
from dmf.scratch_cassandra import _die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                         preexec_fn=_die_with_parent)
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(600)
"""])
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(worker.pid, signal.SIGKILL)  # the worker is killed: nothing of it runs a cleanup
    worker.wait()
    while is_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_alive(child)
