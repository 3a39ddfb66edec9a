"""s3proxy (filesystem store under the bed's folder) on loopback, with the backup bucket created.

A real, durable S3 API server: the bucket survives `dmf-testbed down`/`up`, and it implements
only what many S3-compatible stores do, so dmf meets their refusals here first.
"""
from __future__ import annotations

from pathlib import Path

import boto3
from botocore.config import Config

from dmf import procs

from .layout import BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, Testbed

LOGBACK = """\
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level %date{{ISO8601}} %logger{{20}} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="FILE"/></root>
</configuration>
"""


def _pid_file(tb: Testbed) -> Path:
    return tb.run / "s3.pid"


def _properties_file(tb: Testbed) -> Path:
    return tb.run / "s3proxy.properties"


def is_running(tb: Testbed) -> bool:
    return procs.read_pid(_pid_file(tb)) is not None


def client(tb: Testbed):
    return boto3.client("s3", endpoint_url=tb.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required",
                                      retries={"max_attempts": 1}))


def _answers(tb: Testbed) -> bool:
    if not procs.port_open("127.0.0.1", tb.s3_port):
        return False
    try:
        client(tb).list_buckets()
    except Exception:  # noqa: BLE001 — not ready yet, whatever the reason; wait_until reports the log
        return False
    return True


def start(tb: Testbed) -> None:
    tb.run.mkdir(parents=True, exist_ok=True)
    tb.s3_store.mkdir(parents=True, exist_ok=True)
    log = tb.logs / "s3proxy.log"
    logback = tb.run / "s3proxy-logback.xml"
    logback.write_text(LOGBACK.format(log=log))
    properties = _properties_file(tb)
    # Holds the bed's S3 secret: owner-only, like any credentials file.
    properties.touch(mode=0o600)
    properties.chmod(0o600)
    properties.write_text("\n".join([
        f"s3proxy.endpoint={tb.s3_endpoint}",
        "s3proxy.authorization=aws-v2-or-v4",
        f"s3proxy.identity={S3_ACCESS_KEY}",
        f"s3proxy.credential={S3_SECRET_KEY}",
        "jclouds.provider=filesystem-nio2",
        f"jclouds.filesystem.basedir={tb.s3_store}",
        "jclouds.identity=unused",
        "jclouds.credential=unused",
    ]) + "\n")
    procs.spawn(["java", "-Xmx512m", f"-Dlogback.configurationFile={logback.as_uri()}",
                 "-jar", str(tb.s3proxy_jar), "--properties", str(properties)],
                log_file=log, pid_file=_pid_file(tb), cwd=tb.run)
    procs.wait_until(lambda: _answers(tb), what="S3 server (s3proxy)", timeout=90,
                     pid_file=_pid_file(tb), log_file=log)


def ensure_bucket(tb: Testbed) -> None:
    s3 = client(tb)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET)


def stop(tb: Testbed) -> bool:
    return procs.stop(_pid_file(tb), marker=str(_properties_file(tb)))
