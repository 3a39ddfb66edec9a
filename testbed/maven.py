"""The bed's Java side from Maven Central: cassandra-all with its runtime jars (the nodes' and tools'
classpath, fetched as a restore's scratch node fetches them) and s3proxy's self-contained jar (the S3
server), each in its own folder of the git-ignored cache, fetched once."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dmf import cassandra_jvm
from dmf.procs import StartError

from .layout import CASSANDRA_VERSION, S3PROXY_VERSION, Testbed

POM = Path(__file__).with_name("pom.xml")


def ensure_jars(tb: Testbed) -> None:
    s3proxy_marker = tb.s3proxy_jar.with_suffix(".complete")
    if cassandra_jvm.has_jars(tb.cache, CASSANDRA_VERSION) and s3proxy_marker.exists():
        return
    if shutil.which("mvn") is None or cassandra_jvm.java() is None:
        raise StartError("the test bed needs java (17) and mvn on PATH")
    print(f"fetching cassandra-all {CASSANDRA_VERSION} (with its dependencies) and s3proxy {S3PROXY_VERSION} "
          "with Maven ...", flush=True)
    try:
        cassandra_jvm.ensure_jars(tb.cache, CASSANDRA_VERSION)
    except cassandra_jvm.JarsError as exc:
        raise StartError(str(exc)) from None
    if s3proxy_marker.exists():
        return
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), f"-Ds3proxy.version={S3PROXY_VERSION}", "dependency:copy@s3proxy",
         f"-Ds3proxy.dir={tb.s3proxy_jar.parent}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise StartError(f"mvn dependency:copy@s3proxy failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    if not tb.s3proxy_jar.exists():
        raise StartError(f"{tb.s3proxy_jar} missing after mvn")
    s3proxy_marker.touch()
