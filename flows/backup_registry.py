"""backup-registry: the manager's own configuration (its blocks) and each node's Cassandra
configuration files, under `registry/<ts>/`, sealed by a manifest written last. Secrets are never
written: masked in blocks and files (dmf.core.secrets), credential files (keystores, JMX password
files) not copied."""
from __future__ import annotations

import json
import re
from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.timestamps import format_ts, utcnow
from dmf.core.keys import registry_prefix
from dmf.core.secrets import is_secret_file, mask_document, mask_text
from dmf.repository import Repository
from dmf.ssh import RemoteHost
from dmf.storage import Storage
from dmf.tasks.common import RETRY, TASK_DEFAULTS

CONFIG_FILE = re.compile(r"[A-Za-z0-9_.-]+\.(yaml|yml|properties|xml|options|sh|cql)")
BLOCK_TYPES = (CassandraCluster, S3Repository)


def redacted_blocks() -> dict[tuple[str, str], dict]:
    """Every dmf block document, as JSON with every secret masked: pydantic masks SecretStr fields,
    mask_document the secrets blocks hold as plain strings (prefect-aws's aws_session_token, a
    password in a command or proxy URL)."""
    documents: dict[str, dict] = {}
    with get_client(sync_client=True) as client:
        for block_type in BLOCK_TYPES:
            slug = block_type.get_block_type_slug()
            for doc in client.read_block_documents_by_type(slug):
                if doc.name and not doc.is_anonymous:
                    block = block_type.load(doc.name)
                    documents[(slug, doc.name)] = mask_document(json.loads(block.model_dump_json()))
    return documents


@task(name="backup-node-config", task_run_name="backup-config-{address}", **TASK_DEFAULTS, **RETRY)
def backup_node_config(cluster: CassandraCluster, repository: S3Repository, address: str, now: datetime) -> list[dict]:
    host = cluster.host(address)
    repo = Repository(Storage(repository))
    entries = []
    with RemoteHost(cluster, host) as remote:
        for f in remote.list_files(host.config_dir):
            if "/" in f.path or not CONFIG_FILE.fullmatch(f.path) or is_secret_file(f.path):
                continue
            path = f"{host.config_dir.rstrip('/')}/{f.path}"
            # Read whole (configuration files are small) to mask it; surrogateescape keeps any
            # bytes that are not UTF-8 as they were.
            text = b"".join(remote.iter_file(path, f.size)).decode("utf-8", "surrogateescape")
            stored = repo.write_registry_node_file(now, address, f.path,
                                                   mask_text(text).encode("utf-8", "surrogateescape"))
            entries.append({"key": stored.key, "size": stored.size, "sha256": stored.sha256})
    return entries


@flow(name="backup-registry")
def backup_registry(cluster_block: str = DEFAULT_BLOCK, repository_block: str = DEFAULT_BLOCK) -> dict:
    """Store dmf's blocks (secrets masked) and every node's configuration files under registry/<ts>/."""
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block)
    repo = Repository(Storage(repository))
    now = utcnow()
    prefix = registry_prefix(now)
    entries = []
    for (block_type, name), document in redacted_blocks().items():
        stored = repo.write_registry_block(now, block_type, name, json.dumps(document, indent=1).encode())
        entries.append({"key": stored.key, "size": stored.size, "sha256": stored.sha256})
    futures = [backup_node_config.submit(cluster, repository, h.address, now) for h in cluster.hosts]
    for future in futures:
        entries.extend(future.result())
    repo.seal_registry(now, json.dumps(
        {"format": 1, "kind": "registry", "created_at": format_ts(now), "files": entries}, indent=1).encode())
    get_run_logger().info("registry backup: %d objects under %s", len(entries), prefix)
    return {"prefix": prefix, "objects": len(entries)}
