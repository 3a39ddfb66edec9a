"""Session-wide fixtures: one test bed (3 Cassandra nodes, sshd, S3) shared by every integration test."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DMF_TASK_RETRY_DELAYS", "0.5,1,1")


@pytest.fixture(autouse=True)
def _fresh_s3_clients():
    """dmf keeps one S3 client per process for equal settings; tests register event handlers on
    theirs (to count, corrupt or kill requests), which must not reach the next test's client."""
    yield
    from dmf import s3_settings
    with s3_settings._clients_lock:
        s3_settings._clients.clear()


@pytest.fixture(scope="session", autouse=True)
def _flow_runs_as_the_cli_starts_them():
    """Flows called here run with the settings `dmf` gives the runs it starts in its own process."""
    from dmf.flow_runs import in_process_flow_runs
    with in_process_flow_runs():
        yield


def _bed_is_up(tb) -> bool:
    from dmf.testbed import prefect_server, s3, sshd
    from dmf.testbed.__main__ import running_nodes
    return (len(running_nodes(tb)) == 3 and sshd.is_running(tb) and s3.is_running(tb)
            and prefect_server.is_running(tb))


def pytest_xdist_make_scheduler(config, log):
    """The bed tests (tests/integration) as one unit of work: one worker runs them all, in order, with
    one bed and the session fixtures (the shared chain) they share, and is given them first; the other
    worker meanwhile runs the unit and storage tests, one at a time as it asks. (xdist's loadgroup
    would do it from marks, but renames node ids as pytest 9.2 no longer lets it.)"""
    from xdist.scheduler import LoadScopeScheduling

    class BedTestsInOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tests/integration" if nodeid.startswith("tests/integration/") else nodeid
    return BedTestsInOneWorker(config, log)


def pytest_collection_finish(session):
    """Without xdist workers (`-n 0`; `-p no:xdist` would refuse addopts' `-n 2`), starts the bed in
    the background while the unit and storage tests run (they come first and need no service): its
    minutes of JVM and apt start-up then overlap them. Under xdist the bed's worker starts it in its
    `testbed` fixture, the other worker meanwhile running the unit and storage tests."""
    if hasattr(session.config, "workerinput") or not any(
            "testbed" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from dmf.testbed.layout import Testbed
    tb = Testbed.from_env()
    session.config.dmf_bed_was_up = _bed_is_up(tb)
    if not session.config.dmf_bed_was_up:
        tb.root.mkdir(parents=True, exist_ok=True)
        with open(tb.root / "background-up.log", "wb") as log:
            session.config.dmf_bed_starting = subprocess.Popen(
                [sys.executable, "-m", "dmf.testbed", "up", "--nodes", "3"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def testbed(pytestconfig):
    """Brings the bed up (idempotent) and stops it at the end only if this session started it."""
    from dmf.testbed.__main__ import up, down
    from dmf.testbed.layout import Testbed

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from dmf.testbed import prefect_server

    tb = Testbed.from_env()
    starting = getattr(pytestconfig, "dmf_bed_starting", None)
    # Whatever the background start left undone or failed at, up() below does again, or says why; a
    # start that finished did all of up() moments ago (its ring checks and `prefect deploy` cost
    # half a minute): not again.
    started = starting is not None and starting.wait() == 0 and _bed_is_up(tb)
    was_up = getattr(pytestconfig, "dmf_bed_was_up", None)
    if was_up is None:
        was_up = _bed_is_up(tb)
    try:
        if not started:
            up(tb, 3)
    except BaseException:
        if not was_up:
            down(tb)  # leave no half-started bed behind
        raise
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url(tb)}):
        yield tb
        drain_prefect_workers()
    if not was_up and not os.environ.get("DMF_KEEP_TESTBED"):
        down(tb)


def drain_prefect_workers() -> None:
    """Flushes Prefect's log and event senders while pytest still owns the streams they report to."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def cluster_block(testbed):
    from dmf.testbed.blocks import cluster
    return cluster(testbed, testbed.nodes(3))


@pytest.fixture(scope="session")
def solo_cluster(testbed):
    """The one-node second cluster (127.0.0.4, its JMX asking for a password): started once for the
    modules that ask for it (a start is most of a minute), removed at the session's end."""
    from dmf.testbed import solo
    block = solo.start(testbed)
    yield block
    solo.stop(testbed)


@pytest.fixture(scope="session")
def repository_block(testbed):
    from dmf.testbed.blocks import repository
    return repository(testbed)


@pytest.fixture(scope="session")
def moto_repository():
    """A second, independent S3 implementation (moto's server, in a process of its own on a free
    loopback port) for the storage and node-agent tests, so dmf never depends on one server's quirks.
    Not in this process: moto keeps its state per process, and any in-process `mock_aws` of the unit
    and storage tests that ends (or is collected) resets it, bucket and all."""
    import socket
    import time
    import urllib.request

    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters
    from pydantic import SecretStr

    from dmf.blocks import S3Repository

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto's server did not start on 127.0.0.1:{port}") from None
            time.sleep(0.2)
    try:
        repository = S3Repository(bucket="dmf-moto", credentials=AwsCredentials(
            aws_access_key_id="moto-access-key", aws_secret_access_key=SecretStr("moto-secret-key"),
            region_name="us-east-1",
            aws_client_parameters=AwsClientParameters(endpoint_url=f"http://127.0.0.1:{port}")))
        repository.client().create_bucket(Bucket=repository.bucket)
        yield repository
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(params=["s3proxy", "moto"])
def any_s3(request):
    """The repository block of each S3 implementation in turn: the bed's s3proxy, then moto."""
    if request.param == "s3proxy":
        return request.getfixturevalue("repository_block")
    return request.getfixturevalue("moto_repository")
