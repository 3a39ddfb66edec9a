"""cassandra-medusa on the test bed's nodes, to compare with dmf: its own virtualenv under the cache
folder, a medusa.ini per node pointing at the test bed's S3 server, one timed `medusa backup-node` of
bench.data on node 1, and `medusa restore-node --use-sstableloader` on every node at once (what
`restore-cluster` runs on each node over SSH)."""
from __future__ import annotations

import configparser
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from concurrent.futures import ThreadPoolExecutor

from common import KEYSPACE, TABLE, bed, nodetool

VERSION = "0.31.0"
PREFIX = "bench-medusa"  # not a timestamp, so dmf's catalog ignores it

# Medusa's own CLI, timing one step (BENCH_TIMED, module:function: backup_node:backup_snapshots lists
# and uploads the snapshot's files, the counterpart of dmf's transfer_seconds; restore_node:download_data
# is the restore's download) and reporting its own peak RSS, not that of the JVMs it starts.
PROBE = """
import atexit, importlib, json, os, resource, sys, time
from medusa.medusacli import cli  # first: it monkey-patches the standard library with gevent
module_name, function_name = os.environ["BENCH_TIMED"].split(":")
module = importlib.import_module("medusa." + module_name)
spans, step = [], getattr(module, function_name)
def timed(*args, **kwargs):
    started = time.monotonic()
    try:
        return step(*args, **kwargs)
    finally:
        spans.append(time.monotonic() - started)
setattr(module, function_name, timed)
atexit.register(lambda: print("BENCH " + json.dumps({"seconds": sum(spans),
    "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})))
sys.argv[0] = "medusa"
cli()
"""


def venv(tb) -> Path:
    return tb.cache / "medusa-venv"


def ensure_venv(tb) -> Path:
    """Medusa pins its own dependencies (boto3, cassandra-driver…), so it never goes into the project's .venv."""
    path = venv(tb)
    if not any(path.glob(f"lib/python*/site-packages/cassandra_medusa-{VERSION}.dist-info")):
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", f"cassandra-medusa=={VERSION}"], check=True)
    return path


def private_file(path: Path, text: str) -> Path:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return path


def write_config(tb, block, repo, node: int = 1) -> Path:
    """medusa.ini for the bed's node `node` (1-3), with dmf's repository transfer settings."""
    home = tb.root / "medusa"
    home.mkdir(exist_ok=True)
    host, creds = block.hosts[node - 1], repo.credentials
    keys = private_file(home / "credentials", f"[default]\naws_access_key_id = {creds.aws_access_key_id}\n"
                        f"aws_secret_access_key = {creds.aws_secret_access_key.get_secret_value()}\n")
    endpoint = urlsplit(creds.aws_client_parameters.endpoint_url)
    config = configparser.ConfigParser(interpolation=None)
    config["cassandra"] = {
        "config_file": str(Path(host.config_dir) / "cassandra.yaml"),
        "cql_username": block.cql_username, "cql_password": block.cql_password.get_secret_value(),
        "nodetool_executable": host.nodetool, "nodetool_host": host.jmx_host, "nodetool_port": str(host.jmx_port),
        # medusa's default flag is a JVM option; the test bed's nodetool wrapper would pass it to NodeTool
        "nodetool_flags": "",
        "check_running": shlex.join([host.nodetool, "-h", host.jmx_host, "-p", str(host.jmx_port), "version"]),
        "start_cmd": host.start_command, "stop_cmd": host.stop_command,
        "use_sudo": "False", "resolve_ip_addresses": "False",
        # restore-node --use-sstableloader: the bed's loader, sent to 127.0.0.1 (is_ccm: not the machine's fqdn)
        "sstableloader_bin": str(tb.bin / "sstableloader"), "is_ccm": "1",
    }
    config["storage"] = {
        "storage_provider": "s3_compatible", "host": endpoint.hostname, "port": str(endpoint.port),
        "secure": str(endpoint.scheme == "https"), "s3_addressing_style": "path", "region": creds.region_name,
        "bucket_name": repo.bucket, "prefix": PREFIX, "key_file": str(keys), "fqdn": host.address,
        "concurrent_transfers": str(repo.max_concurrency), "multipart_max_concurrency": str(repo.max_concurrency),
        "multipart_chunksize": f"{repo.part_size_mib}MB", "multi_part_upload_threshold": f"{repo.part_size_mib}MB",
        # medusa caps uploads at 50MB/s by default; dmf has no cap
        "transfer_max_bandwidth": "",
    }
    text = io.StringIO()
    config.write(text)
    return private_file(home / ("medusa.ini" if node == 1 else f"medusa-{node}.ini"), text.getvalue())


def run_medusa(tb, ini: Path, timed: str, *args: str) -> tuple[dict, float]:
    """`medusa ARGS` with BENCH_TIMED timing; its probe's figures and the whole run's seconds."""
    command = [str(venv(tb) / "bin" / "python"), "-c", PROBE, "--config-file", str(ini), *args]
    # Plain S3 requests, as dmf sends by default: S3-compatible stores refuse botocore's newer checksums.
    env = {**os.environ, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
           "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required", "BENCH_TIMED": timed}
    started = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    run_seconds = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"exit {out.returncode}: medusa {shlex.join(command[3:])}\n{out.stderr[-2500:]}")
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("BENCH "))[6:]), run_seconds


def backup_with_medusa(tb, ini: Path, table: str = f"{KEYSPACE}.{TABLE}", node: int = 1,
                       name: str | None = None) -> tuple[str, dict, float]:
    name = name or f"bench-{int(time.time())}"
    # Medusa snapshots every keyspace; a snapshot of bench.data (`table`) alone, named as the backup for
    # --use-existing-snapshot, scopes it to the files raw and dmf upload. Medusa clears it when done.
    started = time.monotonic()
    nodetool(tb, "snapshot", "-t", name, "-kt", table, node_index=node)
    probe, _ = run_medusa(tb, ini, "backup_node:backup_snapshots", "backup-node", "--backup-name", name,
                          "--mode", "full", "--use-existing-snapshot")
    return name, probe, time.monotonic() - started


def remove_medusa_objects(repo) -> list[dict]:
    s3 = repo.client()
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket, Prefix=f"{PREFIX}/")
               for o in page.get("Contents", [])]
    for i in range(0, len(objects), 1000):
        s3.delete_objects(Bucket=repo.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in objects[i:i + 1000]]})
    return objects


def phase_medusa(params: dict) -> dict:
    tb, block, repo = bed()
    ini = write_config(tb, block, repo)
    name, probe, run_seconds = backup_with_medusa(tb, ini)
    data = f"{PREFIX}/{block.hosts[0].address}/{name}/data/"
    total = sum(o["Size"] for o in remove_medusa_objects(repo) if o["Key"].startswith(data))
    return {"bytes": total, "seconds": probe["seconds"], "run_seconds": run_seconds, "rss": probe["rss_kib"] / 1024}


def backup_nodes_with_medusa(table: str) -> str:
    """`medusa backup-node` of `table` on every node at once, under one backup name (as `backup-cluster`
    names it); returns the name."""
    tb, block, repo = bed()
    inis = [write_config(tb, block, repo, node) for node in (1, 2, 3)]
    name = f"bench-{int(time.time())}"
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda n: backup_with_medusa(tb, inis[n - 1], table, n, name), (1, 2, 3)))
    return name


def phase_medusa_restore(params: dict) -> dict:
    """Medusa's counterpart of dmf's restore of a table spread over the three nodes: on every node at
    once, `restore-node --use-sstableloader` of that node's backup `name` (download, then sstableloader
    into the live cluster), as `restore-cluster` runs it on each node. No worker: each node's medusa
    downloads its own share, so its peak RSS is a node's."""
    tb, block, repo = bed()
    keyspace, table = params["table"].split(".")
    inis = [write_config(tb, block, repo, node) for node in (1, 2, 3)]

    def restore(node: int) -> dict:
        temp = Path(tempfile.mkdtemp(prefix="bench-medusa-restore-"))
        try:
            probe, _ = run_medusa(tb, inis[node - 1], "restore_node:download_data", "restore-node", "--backup-name",
                                  params["name"], "--use-sstableloader", "--keyspace", keyspace,
                                  "--table", params["table"], "--temp-dir", str(temp))
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return probe

    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        probes = list(pool.map(restore, (1, 2, 3)))
    seconds = time.monotonic() - started
    s3 = repo.client()
    data = [f"{PREFIX}/{host.address}/{params['name']}/data/" for host in block.hosts[:3]]
    total = sum(o["Size"] for prefix in data for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=repo.bucket, Prefix=prefix) for o in page.get("Contents", []))
    return {"bytes": total, "download_seconds": max(p["seconds"] for p in probes), "seconds": seconds,
            "node_rss": max(p["rss_kib"] for p in probes) / 1024}
