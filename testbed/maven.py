"""The bed's Java side from Maven Central, in one Maven step: cassandra-all with its runtime jars
(the nodes' and tools' classpath) and s3proxy's self-contained jar (the S3 server), each in its
own folder of the git-ignored cache, fetched once."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .layout import CASSANDRA_VERSION, S3PROXY_VERSION, Testbed
from .procs import StartError

POM = Path(__file__).with_name("pom.xml")


def ensure_jars(tb: Testbed) -> None:
    cassandra_marker, s3proxy_marker = tb.lib / ".complete", tb.s3proxy_jar.with_suffix(".complete")
    if cassandra_marker.exists() and s3proxy_marker.exists():
        return
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise StartError("the test bed needs java (17) and mvn on PATH")
    tb.lib.mkdir(parents=True, exist_ok=True)
    print(f"fetching cassandra-all {CASSANDRA_VERSION} (with its dependencies) and s3proxy {S3PROXY_VERSION} "
          "with Maven ...", flush=True)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), f"-Dcassandra.version={CASSANDRA_VERSION}",
         f"-Ds3proxy.version={S3PROXY_VERSION}", "dependency:copy-dependencies", "dependency:copy@s3proxy",
         "-DincludeScope=runtime", f"-DoutputDirectory={tb.lib}", f"-Ds3proxy.dir={tb.s3proxy_jar.parent}"],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise StartError(f"mvn dependency:copy-dependencies failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    if not any(tb.lib.glob(f"cassandra-all-{CASSANDRA_VERSION}.jar")):
        raise StartError(f"cassandra-all-{CASSANDRA_VERSION}.jar missing from {tb.lib} after mvn")
    if not tb.s3proxy_jar.exists():
        raise StartError(f"{tb.s3proxy_jar} missing after mvn")
    cassandra_marker.touch()
    s3proxy_marker.touch()
