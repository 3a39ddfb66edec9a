"""Apache Cassandra from Maven Central's jars: configuration, tool wrappers, start and readiness."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from dmf import cassandra_jvm as jvm
from dmf import procs
from dmf.core.cassandra_yaml import yaml_head

from . import tls
from .layout import TOKENS, Node, Testbed

CLUSTER_NAME = "dmf-testbed"
TOOLS = {"nodetool": jvm.NODETOOL,
         "sstableloader": "org.apache.cassandra.tools.BulkLoader"}


def _yaml(tb: Testbed, node: Node, seeds: str, token: str, cluster_name: str) -> str:
    # CDC on (costs nothing until a table says `cdc = true`), and a 2 s sync: a CDC segment's durable prefix,
    # what the shipper ships, moves at each sync.
    return yaml_head(cluster_name, token, node.home, seeds, node.address, 7000, 9042,
                     commitlog_sync_period_ms=2000) + f"""\
cdc_enabled: true
# Small segments so closed (archived) segments follow writes closely: the shipped RPO.
commitlog_segment_size: 1MiB
# TLS on the CQL port (the product connects with TLS and verifies the certificate); plaintext is still
# accepted (optional) for sstableloader, which the bed runs without a node's cassandra.yaml.
client_encryption_options:
  enabled: true
  optional: true
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: {tls.node_keystore_path(tb)}
  truststore: {tls.ca_path(tb)}
incremental_backups: true
authenticator: PasswordAuthenticator
authorizer: AllowAllAuthorizer
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
"""


LOGBACK_TOOLS = """\
<configuration scan="false">
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %date{ISO8601} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
"""

NODE_DIRS = ("conf", "data", "commitlog", "saved_caches", "hints", "cdc_raw", "commitlog_archive", "logs")


def configure(tb: Testbed, node: Node, cluster_size: int) -> None:
    """A node of the bed's cluster, seeded by node 1."""
    configure_node(tb, node, seeds="127.0.0.1:7000", token=TOKENS[cluster_size][node.index - 1],
                   cluster_name=CLUSTER_NAME)


def configure_node(tb: Testbed, node: Node, seeds: str, token: str, cluster_name: str) -> None:
    """Writes the node's conf/ (cassandra.yaml, logback.xml, commitlog_archiving.properties)."""
    for name in NODE_DIRS:
        node.dir(name).mkdir(parents=True, exist_ok=True)
    conf = node.dir("conf")
    tls.ensure_certificates(tb)
    (conf / "cassandra.yaml").write_text(_yaml(tb, node, seeds, token, cluster_name))
    (conf / "logback.xml").write_text(jvm.LOGBACK)
    if not jvm_options_file(node).exists():
        jvm_options_file(node).write_text("# JVM options read at every start (as Cassandra's conf/jvm-server.options)\n")
    # Read as a classpath resource; commands are split on spaces and run without a shell.
    (conf / "commitlog_archiving.properties").write_text(
        f"archive_command=/bin/ln %path {node.dir('commitlog_archive')}/%name\n")


def write_tool_wrappers(tb: Testbed) -> None:
    """`nodetool` and `sstableloader` as commands, so the product calls them as on a real node."""
    tb.bin.mkdir(parents=True, exist_ok=True)
    tools_conf = tb.root / "conf-tools"
    tools_conf.mkdir(parents=True, exist_ok=True)
    (tools_conf / "logback-tools.xml").write_text(LOGBACK_TOOLS)
    flags = " ".join(shlex.quote(f) for f in jvm.CLIENT_JPMS)
    for tool, main_class in TOOLS.items():
        script = tb.bin / tool
        script.write_text(
            "#!/bin/sh\n"
            f"exec java -Xmx512m {flags} "
            f"-Dlogback.configurationFile={shlex.quote((tools_conf / 'logback-tools.xml').as_uri())} "
            f"-Dcassandra.storagedir={shlex.quote(str(tb.root / 'tools-storage'))} "
            f"-cp {shlex.quote(str(tools_conf))}:{shlex.quote(str(tb.lib))}/'*' {main_class} \"$@\"\n")
        script.chmod(0o755)


def _pid_file(node: Node) -> Path:
    return node.dir("cassandra.pid")


def _log_file(node: Node) -> Path:
    return node.dir("logs") / "stdout.log"


def is_running(node: Node) -> bool:
    return procs.read_pid(_pid_file(node)) is not None


def jvm_options_file(node: Node) -> Path:
    return node.dir("conf") / "jvm-server.options"


def jvm_file_options(node: Node) -> list[str]:
    """The options lines of conf/jvm-server.options, read at every start as Cassandra's launcher does:
    what a restore puts there reaches the node however it is started (systemd passes no environment)."""
    try:
        lines = jvm_options_file(node).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.strip() for line in lines if line.strip().startswith("-")]


def start(tb: Testbed, node: Node, heap: str = "768m", ring_delay_ms: int | None = None) -> None:
    """JVM_EXTRA_OPTS and conf/jvm-server.options are honoured as Cassandra's own start script does;
    `ring_delay_ms` replaces the bed's quick 1 s (a later -D wins)."""
    patience = [f"-Dcassandra.ring_delay_ms={ring_delay_ms}"] if ring_delay_ms else []
    argv = jvm.server_argv("java", tb.lib, node.dir("conf"), node.home, node.dir("logs"), heap, node.jmx_port,
                           [*patience, *jvm_file_options(node), *shlex.split(os.environ.get("JVM_EXTRA_OPTS", ""))])
    procs.spawn(argv, log_file=_log_file(node), pid_file=_pid_file(node))


def _jmx_client_file(node: Node) -> Path:
    return node.dir("conf") / "jmx-client.password"


def require_jmx_password(node: Node, user: str, password: str) -> None:
    """The node's JMX asks for `user`/`password` from its next start on: the JDK's password file and
    jmxremote.authenticate in conf/jvm-server.options, which Cassandra's JMX server honours on its
    local port too (no access file: an authenticated user may do everything, as nodetool needs),
    with the export its authenticator needs (a line of Cassandra's jvm17-server.options that
    jvm.SERVER_JPMS leaves out, so the three nodes start as before). The bed's own nodetool reads
    a copy of the line (the JDK may rewrite its file with hashes)."""
    conf = node.dir("conf")
    for path in (conf / "jmxremote.password", _jmx_client_file(node)):
        path.write_text(f"{user} {password}\n")
        path.chmod(0o600)
    with jvm_options_file(node).open("a") as options:
        options.write("--add-exports=java.management/com.sun.jmx.remote.security=ALL-UNNAMED\n"
                      "-Dcom.sun.management.jmxremote.authenticate=true\n"
                      f"-Dcom.sun.management.jmxremote.password.file={conf / 'jmxremote.password'}\n")


def nodetool(tb: Testbed, node: Node, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    credentials = _jmx_client_file(node)
    auth = (["-u", credentials.read_text().split()[0], "-pwf", str(credentials)] if credentials.exists() else [])
    return subprocess.run([str(tb.bin / "nodetool"), "-h", "127.0.0.1", "-p", str(node.jmx_port), *auth, *args],
                          capture_output=True, text=True, timeout=timeout)


def ring_states(tb: Testbed, node: Node) -> dict[str, str]:
    """Address → two-letter state (UN, DN, UJ, …) as `nodetool status` reports it."""
    result = nodetool(tb, node, "status")
    if result.returncode != 0:
        return {}
    states = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) > 2 and len(parts[0]) == 2 and parts[0][0] in "UD" and parts[1].count(".") == 3:
            states[parts[1]] = parts[0]
    return states


def wait_ready(tb: Testbed, node: Node, expect_up: list[Node], timeout: float = 240) -> None:
    """Ready = CQL port answers and every expected node shows UN from this node's point of view."""
    def ready() -> bool:
        if not procs.port_open(node.address, 9042):
            return False
        states = ring_states(tb, node)
        return all(states.get(n.address) == "UN" for n in expect_up)
    try:
        procs.wait_until(ready, what=f"cassandra {node.name} ({node.address})", timeout=timeout,
                         pid_file=_pid_file(node), log_file=_system_log(node))
    except procs.StartError as exc:
        cause = startup_failure(node)
        # Last, where a CI log's tail shows it, below the log's shutdown lines.
        raise procs.StartError(f"{exc}\ncause: {cause}" if cause else str(exc)) from None


def _system_log(node: Node) -> Path:
    return node.dir("logs") / "system.log"


def startup_failure(node: Node) -> str | None:
    """The exception Cassandra logged for its last failed start, e.g. "java.lang.IllegalStateException:
    Unable to contact any seeds: [/127.0.0.1:7000]"."""
    try:
        lines = _system_log(node).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    marks = [i for i, line in enumerate(lines) if "Exception encountered during startup" in line]
    return lines[marks[-1] + 1].strip() if marks and marks[-1] + 1 < len(lines) else None


def stop(tb: Testbed, node: Node) -> bool:
    return procs.stop(_pid_file(node), marker=str(node.home))
