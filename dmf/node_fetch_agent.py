"""Runs ON a Cassandra node, sent over SSH by the manager (dmf.node_fetch): downloads the node's own
share of a restore straight from S3 through presigned GETs into a staging folder on the node, each
file checked (size and SHA-256) while it streams. Standard library only, like dmf.node_agent, whose
source the manager sends first and which this agent builds on (emit, probe, TokenBucket); the
manager sends dmf.stream_cipher's too, which needs the node's `cryptography` only to decrypt.

Protocol, one JSON object per line:
  stdin   header {"endpoint": [host, port], "tls": bool, "root": staging folder, "concurrency": n,
          "max_bytes_per_s": rate or null, "backoff_s": first retry's wait (0.5), "files": [[relpath, size], ...] (a preflight only),
          "decrypt": true (some files are client-side encrypted), "key": the master key in base64 (to decrypt them)},
          then, unless a preflight, one job per file, each sent when asked for, then an empty line:
          {"id", "path" (below root), "size", "sha256", "url", "headers", "plain": [size, sha256] and
          "key" (the object's, which its ciphertext is bound to) when encrypted}
  stdout  {"cannot_decrypt": reason} (asked to decrypt), {"unreachable": reason}, or {"ready": true,
          "free": bytes free where root is, "present": bytes of the listed files already there at their
          size}; a preflight ends there. Then {"next": true}
          when a downloader is free (the manager makes that file's URL only then), {"progress": bytes},
          per file {"id", "skipped": bytes} (already there, verified), {"id", "fetched": bytes} or
          {"id", "error"}; last {"done": true, "rss_kib": peak RSS}.

A file is written to `<name>.part`, checked, fsynced and only then renamed to its name: a file under
its final name is a verified one. A rerun hashes such a file and skips it when it matches (resume);
a `.part` left by a killed run is started over. An encrypted file is decrypted as it streams, each
chunk written once it has authenticated, and checked twice: the object against its size and SHA-256,
the plaintext against the manifest's; a chunk that fails authentication fails the file at once (not
retried), its `.part` removed. URLs, the headers signed into them (an SSE-C key) and the master key
grant access: read from stdin only, held in memory, never printed.
"""
import base64
import hashlib
import http.client
import json
import os
import resource
import ssl
import sys
import threading
import time
import urllib.parse

try:
    import node_agent  # on the node: the manager's bootstrap loaded both from stdin first
    import stream_cipher
except ImportError:  # run from the source tree (tests)
    from dmf import node_agent, stream_cipher

emit = node_agent.emit
CHUNK = node_agent.CHUNK
_in_lock = threading.Lock()


def free_bytes(root):
    """Free bytes on the filesystem that holds (or will hold) root."""
    path = root
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def present_bytes(root, files):
    total = 0
    for relpath, size in files:
        try:
            if os.path.getsize(os.path.join(root, relpath)) == size:
                total += size
        except OSError:
            pass
    return total


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class Body:
    """A response's bytes as they arrive, within the node's rate, counted and hashed (the stored
    object's size and SHA-256), each block reported as progress."""

    def __init__(self, response, bucket):
        self.response, self.bucket = response, bucket
        self.digest, self.size = hashlib.sha256(), 0

    def __iter__(self):
        while True:
            block = self.response.read(CHUNK)
            if not block:
                return
            if self.bucket is not None:
                self.bucket.take(len(block))
            self.digest.update(block)
            self.size += len(block)
            emit({"progress": len(block)})
            yield block


class Downloader(threading.Thread):
    """Takes jobs from stdin one at a time and streams each file over its own keep-alive connection."""

    def __init__(self, root, bucket, no_more_jobs, backoff_s, key):
        super().__init__(daemon=True)
        self.root, self.bucket, self.no_more_jobs, self.backoff_s = root, bucket, no_more_jobs, backoff_s
        self.key = key  # the master key, for client-side encrypted files (None: none was sent)
        self.conn = None

    def run(self):
        while True:
            with _in_lock:
                if self.no_more_jobs.is_set():
                    return
                emit({"next": True})
                line = sys.stdin.buffer.readline()
                if not line.strip():  # end of stdin, or the blank line that ends the jobs
                    self.no_more_jobs.set()
                    return
            job = json.loads(line.decode())
            try:
                emit(dict(self.one(job), id=job["id"]))
            except Exception as exc:  # noqa: BLE001 — reported for the file, the agent goes on
                emit({"id": job["id"], "error": str(exc)})

    def one(self, job):
        dest = os.path.join(self.root, job["path"])
        size, sha256 = job.get("plain") or (job["size"], job["sha256"])  # of the file staged
        if os.path.isfile(dest) and not os.path.islink(dest):
            if os.path.getsize(dest) == size and sha256_of(dest) == sha256:
                return {"skipped": job["size"]}
            os.unlink(dest)  # not what the manifest says: fetched again
        if "plain" in job and self.key is None:
            raise node_agent.PartFailed("client-side encrypted, and the agent was sent no key")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = dest + ".part"
        error = None
        for attempt in range(1, node_agent.ATTEMPTS + 1):
            try:
                self.get(job, part)
                os.rename(part, dest)
                return {"fetched": job["size"]}
            except node_agent.PartFailed as exc:
                error = str(exc)
                if "HTTP 4" in error and "HTTP 408" not in error and "HTTP 429" not in error:
                    break
            except stream_cipher.StreamError as exc:  # the object as stored does not authenticate
                error = str(exc)
                self.close()  # its body is left unread
                break
            except (OSError, http.client.HTTPException) as exc:
                error = "%s: %s" % (type(exc).__name__, exc)
            self.close()
            if attempt < node_agent.ATTEMPTS:
                time.sleep(self.backoff_s * 2 ** attempt)
        if os.path.exists(part):
            os.unlink(part)
        raise node_agent.PartFailed(error)

    def get(self, job, part):
        """Streams the object into `part` (decrypted, when encrypted), hashing as it goes; raises unless
        size and SHA-256 match, the stored object's and the plaintext's."""
        url = urllib.parse.urlsplit(job["url"])
        conn = self.connect(url)
        conn.request("GET", url.path + "?" + url.query, headers=job.get("headers", {}))
        response = conn.getresponse()
        if response.status != 200:
            reason = node_agent._s3_code(response.read()) or response.reason
            raise node_agent.PartFailed("HTTP %d %s" % (response.status, reason))
        body = Body(response, self.bucket)
        plain = job.get("plain")
        blocks = body if plain is None else stream_cipher.decrypt_chunks(body, self.key, job["key"], job["key"])
        digest, size = hashlib.sha256(), 0  # of what is written: the plaintext of an encrypted file
        if os.path.lexists(part):
            os.unlink(part)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            for block in blocks:
                if plain is not None:
                    digest.update(block)
                    size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if body.size != job["size"] or body.digest.hexdigest() != job["sha256"]:
            raise node_agent.PartFailed("got %d bytes with SHA-256 %s, the manifest says %d bytes, %s"
                                        % (body.size, body.digest.hexdigest(), job["size"], job["sha256"]))
        if plain is not None and [size, digest.hexdigest()] != plain:
            raise node_agent.PartFailed("decrypted to %d bytes with SHA-256 %s, the manifest says %d bytes, %s"
                                        % (size, digest.hexdigest(), plain[0], plain[1]))

    def connect(self, url):
        if self.conn is None:
            cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            kwargs = {"context": ssl.create_default_context()} if url.scheme == "https" else {}
            self.conn = cls(url.hostname, url.port, timeout=node_agent.TIMEOUT_S, **kwargs)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def main():
    header = json.loads(sys.stdin.buffer.readline().decode())
    host, port = header["endpoint"]
    root = header["root"]
    why = stream_cipher.unavailable() if header.get("decrypt") else None
    if why:
        emit({"cannot_decrypt": why})
        return
    key = base64.b64decode(header["key"]) if "key" in header else None
    try:
        node_agent.probe(host, port, header.get("tls", False))
    except OSError as exc:  # includes a certificate this node does not trust
        emit({"unreachable": "%s:%s: %s" % (host, port, exc.strerror or exc)})
        return
    emit({"ready": True, "free": free_bytes(root), "present": present_bytes(root, header.get("files", []))})
    if header.get("files") is not None:
        return  # a preflight
    rate = header.get("max_bytes_per_s")
    bucket = node_agent.TokenBucket(rate) if rate else None  # one for the node, shared by its downloaders
    no_more_jobs = threading.Event()
    downloaders = [Downloader(root, bucket, no_more_jobs, header.get("backoff_s", 0.5), key)
                   for _ in range(header["concurrency"])]
    for thread in downloaders:
        thread.start()
    for thread in downloaders:
        thread.join()
    emit({"done": True, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


if __name__ == "__main__":
    main()
