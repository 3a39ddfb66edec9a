"""dmf-testbed up [--nodes 1|3] | status | down — a local Cassandra + OpenSSH + S3 bed on loopback."""
from __future__ import annotations

import argparse
import fcntl
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, temporary_settings

from dmf import procs

from . import blocks, cassandra, maven, prefect_server, s3, solo, sshd
from .layout import MAX_NODES, Testbed


def running_nodes(tb: Testbed) -> list:
    return [n for n in tb.nodes(MAX_NODES) if cassandra.is_running(n)]


@contextmanager
def exclusive(tb: Testbed) -> Iterator[None]:
    """One start or stop of this bed at a time: two at once would each start a service whose pid file
    the other then overwrites, leaving one running that no stop finds (and holding its port)."""
    tb.root.mkdir(parents=True, exist_ok=True)
    with open(tb.root / "bed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(tb: Testbed, count: int, save_blocks: bool = True) -> None:
    """Idempotent: starts only what is not running; a 1-node bed grows to 3 by adding nodes 2 and 3."""
    with exclusive(tb):
        _up(tb, count, save_blocks)


def _up(tb: Testbed, count: int, save_blocks: bool) -> None:
    maven.ensure_jars(tb)
    cassandra.write_tool_wrappers(tb)
    tb.logs.mkdir(parents=True, exist_ok=True)
    if not sshd.is_running(tb):
        require_free(tb, [(f"127.0.0.{i}", tb.ssh_port) for i in range(1, MAX_NODES + 1)], "DMF_TESTBED_SSH_PORT")
        print("starting sshd on 127.0.0.1-3 port", tb.ssh_port, flush=True)
        sshd.start(tb)
    if not s3.is_running(tb):
        require_free(tb, [("127.0.0.1", tb.s3_port)], "DMF_TESTBED_S3_PORT")
        print("starting S3 server (s3proxy) on", tb.s3_endpoint, flush=True)
        s3.start(tb)
    s3.ensure_bucket(tb)
    if not prefect_server.is_running(tb):
        require_free(tb, [("127.0.0.1", tb.prefect_port)], "DMF_TESTBED_PREFECT_PORT")
        print("starting Prefect server on", prefect_server.api_url(tb), flush=True)
        prefect_server.start(tb)
    prefect_server.point_profile(tb)
    already = running_nodes(tb)
    size = MAX_NODES if count == MAX_NODES or len(already) > 1 else 1
    wanted = tb.nodes(size)
    for node in wanted:
        if not cassandra.is_running(node):
            require_free(tb, [(node.address, 7000), (node.address, 9042), ("127.0.0.1", node.jmx_port)])
            print(f"starting cassandra {node.name} on {node.address} (jmx {node.jmx_port})", flush=True)
            cassandra.configure(tb, node, size)
            start_node_with_retry(tb, node, expect_up=wanted[: node.index])
        cassandra.wait_ready(tb, node, expect_up=wanted[: node.index])
    cassandra.wait_ready(tb, wanted[0], expect_up=wanted)
    if save_blocks:
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url(tb)}):
            blocks.save_defaults(tb, wanted)
        prefect_server.deploy(tb)
        if not prefect_server.worker_running(tb):
            print("starting Prefect worker on work pool", prefect_server.WORK_POOL, flush=True)
            prefect_server.start_worker(tb)


def require_free(tb: Testbed, endpoints: list[tuple[str, int]], setting: str | None = None) -> None:
    """A service of this bed's that is not running must find its ports free: one that answers there
    belongs to someone else (often another checkout's bed), and a start that took its answers for
    its own would run the tests against that bed, or fail later and obscurely."""
    taken = [f"{host}:{port}" for host, port in endpoints if procs.port_open(host, port)]
    if taken:
        raise procs.StartError(
            f"{', '.join(taken)} already in use by a process that is not the bed in {tb.root}: stop it "
            f"(`dmf-testbed down` in its checkout){f' or set {setting}' if setting else ''}")


# A joining node that has not heard the seeds' gossip within the ring delay stops ("Unable to contact any
# seeds"). The bed's 1 s delay is a race on a loaded 2-core machine; Cassandra's own default is 30 s.
PATIENT_RING_DELAY_MS = 10_000


def start_node_with_retry(tb: Testbed, node, expect_up: list, attempts: int = 3) -> None:
    """Starts `node` again if it exits during start-up, as an operator would, with a ring delay that
    gives the seeds' gossip time to arrive: the quick start lost that race in CI on every attempt."""
    for attempt in range(1, attempts + 1):
        cassandra.start(tb, node, ring_delay_ms=None if attempt == 1 else PATIENT_RING_DELAY_MS)
        try:
            cassandra.wait_ready(tb, node, expect_up=expect_up)
            return
        except procs.StartError as exc:
            if attempt == attempts or cassandra.is_running(node):
                raise
            print(f"{node.name} exited during start-up (attempt {attempt}: "
                  f"{cassandra.startup_failure(node) or str(exc).splitlines()[0]}); starting it again "
                  f"with a {PATIENT_RING_DELAY_MS // 1000} s ring delay", flush=True)


def status(tb: Testbed) -> int:
    nodes = running_nodes(tb)
    print(f"sshd       {'running' if sshd.is_running(tb) else 'stopped'}  (127.0.0.1-{MAX_NODES}:{tb.ssh_port})")
    print(f"s3proxy    {'running' if s3.is_running(tb) else 'stopped'}  ({tb.s3_endpoint})")
    print(f"prefect    {'running' if prefect_server.is_running(tb) else 'stopped'}  "
          f"({prefect_server.api_url(tb)}, UI http://127.0.0.1:{tb.prefect_port}); worker "
          f"{'running' if prefect_server.worker_running(tb) else 'stopped'} on pool {prefect_server.WORK_POOL}")
    if not nodes:
        print("cassandra  stopped")
        return 1
    result = cassandra.nodetool(tb, nodes[0], "status")
    print(result.stdout if result.returncode == 0 else result.stderr)
    services = sshd.is_running(tb) and s3.is_running(tb) and prefect_server.is_running(tb)
    return 0 if result.returncode == 0 and services else 1


def down(tb: Testbed) -> None:
    with exclusive(tb):
        _down(tb)


def _down(tb: Testbed) -> None:
    # Everything stops at once: one after another, the nodes' JVM shutdowns (~6 s each) and the
    # Prefect worker's (5 s, then SIGKILL) added up.
    nodes = tb.nodes(MAX_NODES)
    services = {"S3 server": s3.stop, "sshd": sshd.stop, "Prefect worker": prefect_server.stop_worker,
                "Prefect server": prefect_server.stop}
    with ThreadPoolExecutor(max_workers=len(nodes) + 1 + len(services)) as pool:
        solo_stopped = pool.submit(solo.stop, tb)  # left running only by a test cut off before its teardown
        nodes_stopped = [pool.submit(cassandra.stop, tb, node) for node in nodes]
        services_stopped = {name: pool.submit(stop, tb) for name, stop in services.items()}
        solo_stopped.result()
    for node, stopped in zip(nodes, nodes_stopped):
        if stopped.result():
            print(f"stopped cassandra {node.name}")
    for name, stopped in services_stopped.items():
        if stopped.result():
            print(f"stopped {name}")
    prefect_server.unpoint_profile(tb)


def node_start(tb: Testbed, index: int) -> None:
    """Starts one configured node and waits until it serves (the product's restart command)."""
    node = tb.node(index)
    if not cassandra.is_running(node):
        cassandra.start(tb, node)
    cassandra.wait_ready(tb, node, expect_up=[node])


def node_stop(tb: Testbed, index: int) -> None:
    cassandra.stop(tb, tb.node(index))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmf-testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start what is not running (default: 3 nodes)")
    up_parser.add_argument("--nodes", type=int, choices=(1, 3), default=3)
    sub.add_parser("status", help="show the services and `nodetool status`")
    sub.add_parser("down", help="stop the processes the test bed started (by pid)")
    for name, text in (("node-start", "start one node (honours JVM_EXTRA_OPTS) and wait for it"),
                       ("node-stop", "stop one node")):
        sub.add_parser(name, help=text).add_argument("index", type=int, choices=range(1, MAX_NODES + 1))
    args = parser.parse_args(argv)
    tb = Testbed.from_env()
    try:
        if args.command == "up":
            up(tb, args.nodes)
            return status(tb)
        if args.command == "status":
            return status(tb)
        if args.command == "node-start":
            node_start(tb, args.index)
            return 0
        if args.command == "node-stop":
            node_stop(tb, args.index)
            return 0
        down(tb)
        return 0
    except procs.StartError as exc:
        print(f"dmf-testbed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
