"""Apache Cassandra run from Maven Central's jars, by the test bed's nodes and by a restore's scratch
node (dmf/scratch_cassandra.py): the jars fetched once into a cache, the JVM found on PATH, and the
server's command line.

The Maven jar ships no conf/, so the flags are restated from Cassandra 5.0's
conf/jvm17-server.options and conf/jvm17-clients.options (JPMS exports/opens Cassandra needs on
Java 17; the GC lines are the server file's G1 section).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dmf.core.errors import DmfError

POM = Path(__file__).with_name("cassandra-pom.xml")
DAEMON = "org.apache.cassandra.service.CassandraDaemon"
NODETOOL = "org.apache.cassandra.tools.NodeTool"

SERVER_GC = [
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m", "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300", "-XX:InitiatingHeapOccupancyPercent=70",
]

SERVER_JPMS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

CLIENT_JPMS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.math=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/java.net=ALL-UNNAMED",
]

# Start-up shortcuts for a single-machine cluster (SPEC.md, test bed notes).
QUICK_START = [
    "-Dcassandra.ring_delay_ms=1000",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.load_ring_state=false",
]


LOGBACK = """\
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


class JarsError(DmfError):
    pass


def java() -> str | None:
    """The JVM, found as the bench and the test bed find it: `java` on PATH."""
    return shutil.which("java")


def lib_dir(cache: Path, version: str) -> Path:
    """Where cassandra-all `version` and its runtime jars are kept: one folder per version."""
    return cache / f"cassandra-{version}" / "lib"


def has_jars(cache: Path, version: str) -> bool:
    return (lib_dir(cache, version) / ".complete").exists()


def ensure_jars(cache: Path, version: str) -> Path:
    """cassandra-all `version` with its runtime jars, fetched once with Maven (a marker file says the
    folder is whole: a fetch killed midway is redone); returns the folder."""
    lib = lib_dir(cache, version)
    if has_jars(cache, version):
        return lib
    if shutil.which("mvn") is None:
        raise JarsError(f"Cassandra {version}'s jars are not in {lib} and mvn, which fetches them, is not on PATH")
    lib.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mvn", "-q", "-B", "-f", str(POM), f"-Dcassandra.version={version}",
                             "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise JarsError(f"mvn could not fetch cassandra-all {version}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    if not (lib / f"cassandra-all-{version}.jar").exists():
        raise JarsError(f"cassandra-all-{version}.jar missing from {lib} after mvn")
    (lib / ".complete").touch()
    return lib


def jamm_jar(lib: Path) -> Path:
    jars = sorted(lib.glob("jamm-*.jar"))
    if not jars:
        raise JarsError(f"no jamm jar in {lib}")
    return jars[-1]


def server_argv(java_bin: str, lib: Path, conf: Path, home: Path, logs: Path, heap: str, jmx_port: int,
                options: list[str]) -> list[str]:
    """A Cassandra server in the foreground: conf/ (cassandra.yaml, logback.xml and any classpath
    resource such as commitlog_archiving.properties) first on the classpath, then the jars."""
    return [
        java_bin, f"-Xms{heap}", f"-Xmx{heap}", "-Xss256k", *SERVER_GC,
        f"-javaagent:{jamm_jar(lib)}", *SERVER_JPMS, *QUICK_START,
        f"-Dcassandra.config={(conf / 'cassandra.yaml').as_uri()}",
        f"-Dcassandra.storagedir={home}",
        f"-Dcassandra.logdir={logs}",
        f"-Dlogback.configurationFile={(conf / 'logback.xml').as_uri()}",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.jmx.local.port={jmx_port}",
        *options,
        "-cp", f"{conf}:{lib}/*", DAEMON,
    ]
