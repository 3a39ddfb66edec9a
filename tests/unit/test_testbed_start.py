"""The bed's node start: a node that lost the join race (it had not heard the seeds' gossip within the
quick 1 s ring delay, as in a CI run on a loaded machine) is started again with a patient one, and
the error says why Cassandra stopped."""
from __future__ import annotations

import socket

import pytest

from dmf import cassandra_jvm, procs
from dmf.testbed import __main__ as bed
from dmf.testbed import cassandra
from dmf.testbed import layout

SEEDS_LOST = "java.lang.IllegalStateException: Unable to contact any seeds: [/127.0.0.1:7000]"


def failed_start_log(node) -> None:
    log = node.dir("logs") / "system.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("INFO  [main] 2026-12-04 23:03:05,840 StorageService.java:2086 - JOINING: sleeping 1000 ms\n"
                   "ERROR [main] 2026-12-04 23:03:06,843 CassandraDaemon.java:887 - Exception encountered "
                   f"during startup\n{SEEDS_LOST}\n\tat org.apache.cassandra.service.StorageService.bootstrap\n"
                   "INFO  [StorageServiceShutdownHook] 2026-12-04 23:03:06,850 HintsService.java:234 - Paused\n")


def test_a_node_that_exits_while_joining_is_started_again_with_a_patient_ring_delay(monkeypatch, tmp_path, capsys):
    tb = layout.Testbed(root=tmp_path, cache=tmp_path)
    node = tb.node(3)
    failed_start_log(node)
    ring_delays = []
    monkeypatch.setattr(cassandra, "start", lambda tb, node, ring_delay_ms=None: ring_delays.append(ring_delay_ms))
    outcomes = iter([procs.StartError("cassandra node3 (127.0.0.3) exited during start-up"), None])

    def wait_ready(tb, node, expect_up):
        if (outcome := next(outcomes)) is not None:
            raise outcome
    monkeypatch.setattr(cassandra, "wait_ready", wait_ready)
    monkeypatch.setattr(cassandra, "is_running", lambda node: False)

    bed.start_node_with_retry(tb, node, expect_up=[tb.node(1)])

    assert ring_delays == [None, bed.PATIENT_RING_DELAY_MS]
    assert f"attempt 1: {SEEDS_LOST}" in capsys.readouterr().out


def test_the_patient_ring_delay_comes_after_the_quick_one_so_the_jvm_takes_it(monkeypatch, tmp_path):
    tb = layout.Testbed(root=tmp_path, cache=tmp_path)
    tb.lib.mkdir(parents=True)
    (tb.lib / "jamm-0.4.0.jar").touch()
    spawned = []
    monkeypatch.setattr(procs, "spawn", lambda argv, **_: spawned.append(argv))

    cassandra.start(tb, tb.node(3))
    cassandra.start(tb, tb.node(3), ring_delay_ms=10_000)

    quick, patient = ([a for a in argv if a.startswith("-Dcassandra.ring_delay_ms=")] for argv in spawned)
    assert quick == ["-Dcassandra.ring_delay_ms=1000"] and "-Dcassandra.ring_delay_ms=1000" in cassandra_jvm.QUICK_START
    assert patient == ["-Dcassandra.ring_delay_ms=1000", "-Dcassandra.ring_delay_ms=10000"]  # the last -D wins


def test_a_start_that_times_out_or_exits_names_cassandras_own_cause_last(monkeypatch, tmp_path):
    tb = layout.Testbed(root=tmp_path, cache=tmp_path)
    node = tb.node(3)
    failed_start_log(node)

    def exited(*_, **__):
        raise procs.StartError("cassandra node3 (127.0.0.3) exited during start-up; last lines of …")
    monkeypatch.setattr(procs, "wait_until", exited)

    with pytest.raises(procs.StartError) as raised:
        cassandra.wait_ready(tb, node, expect_up=[])
    assert str(raised.value).splitlines()[-1] == f"cause: {SEEDS_LOST}"


def test_no_cause_when_cassandra_logged_none(tmp_path):
    node = layout.Testbed(root=tmp_path, cache=tmp_path).node(1)
    assert cassandra.startup_failure(node) is None
    (node.dir("logs")).mkdir(parents=True)
    (node.dir("logs") / "system.log").write_text("INFO  [main] starting\n")
    assert cassandra.startup_failure(node) is None


def test_a_port_another_process_listens_on_stops_the_start_and_says_whose_setting_moves_it(tmp_path):
    tb = layout.Testbed(root=tmp_path, cache=tmp_path)
    with socket.socket() as other_bed:
        other_bed.bind(("127.0.0.1", 0))
        other_bed.listen()
        port = other_bed.getsockname()[1]
        with pytest.raises(procs.StartError) as raised:
            bed.require_free(tb, [("127.0.0.1", port)], "DMF_TESTBED_PREFECT_PORT")
    assert str(raised.value) == (f"127.0.0.1:{port} already in use by a process that is not the bed in {tmp_path}: "
                                 "stop it (`dmf-testbed down` in its checkout) or set DMF_TESTBED_PREFECT_PORT")
    bed.require_free(tb, [("127.0.0.1", port)], "DMF_TESTBED_PREFECT_PORT")  # closed: free again
