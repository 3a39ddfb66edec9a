"""What a backup's nodetool JVM costs, and what JVM options could cut: `nodetool flush` and `nodetool
snapshot` of the tiny table as dmf runs them (dmf.node.Node over SSH, JVM options through
JAVA_TOOL_OPTIONS), on node 1 alone and on the three nodes at once, each variant's wall clock the
median of --runs interleaved rounds, beside the CPU the JVMs took (the machine's busy jiffies).

    .venv/bin/python bench/nodetool_jvm.py [--runs 5] [--only 'dmf today,minimal']

Variants: the node's nodetool untouched; dmf's options today (C1 only, serial GC); with them, a
CDS archive of the JDK classes nodetool loads beyond the JDK's default archive (dumped once by the
bench: an application-class archive cannot be made, see `appcds_dump`); bytecode verification of
the application classes off; both; one JIT compiler thread and no perf data file; and a minimal
JMX client making the same MBean call (bench/jmx_client/MinimalJmx.java, no authentication: the
bed's JMX is local). Also reports what
`-XX:ArchiveClassesAtExit` (the dynamic AppCDS archive of JDK 13+) does to a nodetool call.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup_profile import KEYSPACE, TINY, tiny_table  # noqa: E402
from common import _cpu_times, bed, table  # noqa: E402

import dmf.node  # noqa: E402
from dmf.core.targets import DbTarget  # noqa: E402
from dmf.node import Node  # noqa: E402
from dmf.ssh import RemoteHost, command_argv  # noqa: E402

TODAY = dmf.node.NODETOOL_JAVA_OPTIONS
WORK = Path("/tmp/dmf-bench-nodetool-jvm")
JDK_ARCHIVE = WORK / "jdk-classes.jsa"
NO_VERIFY = "-XX:+UnlockDiagnosticVMOptions -XX:-BytecodeVerificationRemote"
VARIANTS = {
    "node's nodetool, no options": "",
    "dmf today (C1 only, serial GC)": TODAY,
    "+ CDS archive of nodetool's JDK classes": f"{TODAY} -XX:SharedArchiveFile={JDK_ARCHIVE}",
    "+ no bytecode verification": f"{TODAY} {NO_VERIFY}",
    "+ both": f"{TODAY} -XX:SharedArchiveFile={JDK_ARCHIVE} {NO_VERIFY}",
    "+ one JIT thread, no perf data": f"{TODAY} -XX:CICompilerCount=1 -XX:-UsePerfData",
}
MINIMAL = "minimal JMX client (JDK classes only)"
VARIANTS[MINIMAL] = TODAY
TARGET = DbTarget(keyspace=KEYSPACE, table=TINY)
CLIENT_SOURCE = Path(__file__).resolve().parent / "jmx_client" / "MinimalJmx.java"


def minimal_client(node: Node, command: str, tag: str) -> None:
    """The same JMX operation as nodetool's, from bench/jmx_client/MinimalJmx.java (compiled once)."""
    args = [KEYSPACE, TINY] if command == "flush" else [tag, f"{KEYSPACE}.{TINY}"]
    node.remote.run(["java", *TODAY.split(), "-cp", str(WORK), "MinimalJmx", str(node.host.jmx_port), command, *args])


def call(node: Node, options: str, command: str, tag: str, variant: str = ""):
    dmf.node.NODETOOL_JAVA_OPTIONS = options  # read by each call: every thread of a round sets the same
    if variant == MINIMAL:
        minimal_client(node, command, tag)
        if command == "snapshot":
            node.remove_snapshot(tag)
        return None
    if command == "flush":
        return node.flush(TARGET, [])
    node.snapshot(tag, TARGET, [])
    node.remove_snapshot(tag)


def jdk_archive(node: Node) -> None:
    """The JDK classes a `nodetool snapshot` loads, dumped as a static CDS archive without an
    application class path (so any class path accepts it)."""
    WORK.mkdir(exist_ok=True)
    subprocess.run(["javac", "--release", "11", "-d", str(WORK), str(CLIENT_SOURCE)], check=True)
    listing = WORK / "classes.lst"
    call(node, f"{TODAY} -XX:DumpLoadedClassList={listing}", "snapshot", "bench-jvm-list")
    subprocess.run(["java", "-Xshare:dump", f"-XX:SharedClassListFile={listing}",
                    f"-XX:SharedArchiveFile={JDK_ARCHIVE}", "-XX:+UseSerialGC"], check=True, capture_output=True)


def appcds_dump(node: Node) -> str:
    """A nodetool call with -XX:ArchiveClassesAtExit: the exit status and JVM error it ends with."""
    (WORK / "dynamic.jsa").unlink(missing_ok=True)
    dmf.node.NODETOOL_JAVA_OPTIONS = f"{TODAY} -XX:ArchiveClassesAtExit={WORK / 'dynamic.jsa'}"
    host = node.host
    plain = command_argv(host.nodetool, "-h", host.jmx_host, "-p", str(host.jmx_port), "flush", KEYSPACE, TINY)
    result = node.remote.run(dmf.node.with_java_options(plain), check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "rror" in line]
    return f"exit status {result.exit_status}, archive written: {(WORK / 'dynamic.jsa').exists()}; " + " / ".join(errors)


def timed(nodes: list[Node], variant: str, command: str, round_: int) -> tuple[float, float]:
    cpu_before, wall_before = _cpu_times(), time.monotonic()
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: call(n, VARIANTS[variant], command, f"bench-jvm-{round_}", variant), nodes))
    wall, cpu_after = time.monotonic() - wall_before, _cpu_times()
    busy_jiffies = (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])
    return wall, busy_jiffies / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", help="comma-separated starts of the variants to run (default: all)")
    args = parser.parse_args()
    if args.only:
        starts = args.only.split(",")
        for name in [n for n in VARIANTS if not any(n.startswith(s) for s in starts)]:
            del VARIANTS[name]
    tb, cluster, _ = bed()
    tiny_table(cluster)
    remotes = [RemoteHost(cluster, host).connect() for host in cluster.hosts]
    nodes = [Node(r) for r in remotes]
    jdk_archive(nodes[0])
    print("-XX:ArchiveClassesAtExit on a nodetool flush:", appcds_dump(nodes[0]))
    cases = [(command, width) for command in ("flush", "snapshot") for width in (1, 3)]
    results: dict[tuple, list[tuple[float, float]]] = {}
    for round_ in range(args.runs):
        for command, width in cases:
            names = list(VARIANTS)
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # no variant always first
                results.setdefault((command, width, name), []).append(timed(nodes[:width], name, command, round_))
    rows = []
    for (command, width, name), samples in results.items():
        rows.append([f"nodetool {command}", f"{width}", name, f"{statistics.median(w for w, _ in samples):.2f}",
                     f"{statistics.median(c for _, c in samples):.2f}"])
    print(table(rows, ["command", "nodes at once", "JVM options", "wall s (median)", "machine CPU s (median)"]))
    print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[0]}")
    for remote in remotes:
        remote.close()


if __name__ == "__main__":
    main()
