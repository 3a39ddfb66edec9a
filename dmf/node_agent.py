"""Runs ON a Cassandra node, sent over SSH by the manager: uploads files straight to S3 through
presigned URLs (one PUT, or one per multipart part), so their bytes skip the SSH hop. Standard
library only (Python 3.6+), since it runs on the node's own python3 (the one cqlsh needs).

Protocol, one JSON object per line:
  stdin   header {"endpoint": [host, port], "tls": bool, "concurrency": n, "max_bytes_per_s": rate or null},
          then one job per file, each sent when asked for, then an empty line:
          {"id", "path", "size", "part_size", "urls": [presigned PUT URL, or one per part], "headers"}
  stdout  {"ready": true} or {"unreachable": reason} after probing the endpoint; then
          {"next": true} when a reader is free to start a file (the manager makes its URLs then,
          so they need only live as long as that file's transfer), {"progress": bytes} per part,
          and per file {"id", "sha256", "md5s", "etags"} or {"id", "error"}.

Each file is read once, in order (its SHA-256 for the manifest); its parts go in parallel on
`concurrency` uploaders, and a part is read only when one of `concurrency` slots is free, so memory
is bounded by part size x concurrency. Every part carries Content-MD5 and its returned ETag must
equal that MD5, unless S3 says the part is encrypted with KMS or a customer key (then the ETag is
not an MD5, and the manager verifies the object another way). The URLs, and the encryption headers
signed into them (an SSE-C key), grant access: they are read from stdin only, and never printed.
With `max_bytes_per_s`, every uploader sends its bodies 1 MiB at a time through one shared
token bucket, so the node's uploads together stay within that rate.
"""
import base64
import hashlib
import http.client
import json
import os
import queue
import socket
import ssl
import sys
import threading
import time
import urllib.parse

ATTEMPTS = 4
TIMEOUT_S = 120
CHUNK = 1024 * 1024
BURST_S = 0.1

_out_lock = threading.Lock()
_in_lock = threading.Lock()


def emit(message):
    try:
        with _out_lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()
    except OSError:
        os._exit(3)  # the manager is gone (SSH connection dropped): stop, it aborts what is unfinished


class PartFailed(Exception):
    pass


class TokenBucket:
    """dmf.throttle.TokenBucket again, since this file runs alone on the node (standard library only):
    `rate` bytes a second on average to all takers together, credit capped at BURST_S's worth; a
    take may leave the bucket in debt, which the taker sleeps off outside the lock."""

    def __init__(self, rate, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.burst = rate, rate * BURST_S
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens, self._updated = self.burst, clock()

    def take(self, nbytes):
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - nbytes
            self._updated = now
            wait = -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)


def throttled(data, bucket):
    """`data` in 1 MiB slices, each handed on once `bucket` lets it through (for http.client's body)."""
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        chunk = view[start:start + CHUNK]
        bucket.take(len(chunk))
        yield chunk


class Uploader(threading.Thread):
    """Sends parts from the queue over its own keep-alive connection."""

    def __init__(self, parts, slots, bucket):
        super().__init__(daemon=True)
        self.parts, self.slots, self.bucket = parts, slots, bucket
        self.conn = None

    def run(self):
        while True:
            item = self.parts.get()
            if item is None:
                return
            job, number, data = item
            try:
                if not job.failed:
                    # Hashed here, in parallel with the reader's SHA-256 (hashlib releases the GIL).
                    md5 = hashlib.md5(data).digest()
                    job.md5s[number - 1] = md5
                    job.etags[number - 1] = self.put(job.urls[number - 1], data, md5, job.headers)
                    emit({"progress": len(data)})
            except Exception as exc:  # noqa: BLE001 — reported for the file, the agent goes on
                job.fail("part %d: %s" % (number, exc))
            finally:
                del data
                self.slots.release()
                job.part_done()

    def connect(self, url):
        if self.conn is None:
            cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            kwargs = {"context": ssl.create_default_context()} if url.scheme == "https" else {}
            self.conn = cls(url.hostname, url.port, timeout=TIMEOUT_S, **kwargs)
        return self.conn

    def put(self, raw_url, data, md5, extra_headers):
        """The part's ETag, once S3 has stored it."""
        url = urllib.parse.urlsplit(raw_url)
        target = url.path + "?" + url.query
        headers = {"Content-Length": str(len(data)), "Content-MD5": base64.b64encode(md5).decode()}
        headers.update(extra_headers)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                conn = self.connect(url)
                body = data if self.bucket is None else throttled(data, self.bucket)  # anew per attempt
                conn.request("PUT", target, body=body, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    etag = (response.getheader("ETag") or "").strip('"')
                    if etag != md5.hex() and not _opaque_etag(response):
                        raise PartFailed("S3 stored ETag %s, not the MD5 of the bytes sent" % etag)
                    return etag
                reason = _s3_code(body) or response.reason
                if response.status < 500 and response.status not in (400, 408, 429):
                    raise PartFailed("HTTP %d %s" % (response.status, reason))
                error = "HTTP %d %s" % (response.status, reason)
            except (OSError, http.client.HTTPException) as exc:
                error = "%s: %s" % (type(exc).__name__, exc)
            self.close()
            if attempt < ATTEMPTS:
                time.sleep(0.5 * 2 ** attempt)
        raise PartFailed(error + " (after %d attempts)" % ATTEMPTS)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _opaque_etag(response):
    """S3's ETag is not an MD5 under SSE-KMS and SSE-C."""
    return ((response.getheader("x-amz-server-side-encryption") or "").startswith("aws:kms")
            or bool(response.getheader("x-amz-server-side-encryption-customer-algorithm")))


def _s3_code(body):
    text = body[:2000].decode("utf-8", "replace")
    start = text.find("<Code>")
    return text[start + 6:text.find("</Code>")] if start >= 0 else ""


class Job:
    def __init__(self, spec):
        self.id, self.path, self.size = spec["id"], spec["path"], spec["size"]
        self.part_size, self.urls, self.headers = spec["part_size"], spec["urls"], spec.get("headers", {})
        self.error = None
        self.failed = False
        self._pending = 1  # the reader's own share: the result waits for it too
        self._lock = threading.Lock()
        self.sha256 = hashlib.sha256()
        self.md5s = [None] * len(self.urls)
        self.etags = [None] * len(self.urls)

    def fail(self, error):
        with self._lock:
            if self.error is None:
                self.error = error
            self.failed = True

    def add_part(self):
        with self._lock:
            self._pending += 1

    def part_done(self):
        with self._lock:
            self._pending -= 1
            finished = self._pending == 0
        if finished:
            if self.error is not None:
                emit({"id": self.id, "error": self.error})
            else:
                emit({"id": self.id, "sha256": self.sha256.hexdigest(), "md5s": [m.hex() for m in self.md5s],
                      "etags": self.etags})


def read_jobs(parts, slots, no_more_jobs):
    """Takes jobs from stdin one at a time and reads each file into parts, in order."""
    while True:
        with _in_lock:
            if no_more_jobs.is_set():
                line = b""
            else:
                emit({"next": True})
                line = sys.stdin.buffer.readline()
            if not line.strip():  # end of stdin, or the blank line that ends the jobs
                no_more_jobs.set()
                return
        job = Job(json.loads(line.decode()))
        try:
            with open(job.path, "rb") as source:
                total = 0
                for number in range(1, len(job.urls) + 1):
                    slots.acquire()
                    data = source.read(job.part_size)
                    if job.failed or (not data and number > 1):  # an empty file is one empty PUT
                        slots.release()
                        break
                    total += len(data)
                    job.sha256.update(data)
                    job.add_part()
                    parts.put((job, number, data))
                    del data
                if not job.failed and (total != job.size or source.read(1)):
                    job.fail("read %d bytes, expected %d (file changed?)" % (total, job.size))
        except OSError as exc:
            job.fail("cannot read: %s" % (exc.strerror or exc))
        job.part_done()


def probe(host, port, tls):
    """Connects to the endpoint (and shakes hands, for TLS) before any job is taken."""
    sock = socket.create_connection((host, port), timeout=15)
    try:
        if tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    finally:
        sock.close()


def main():
    header = json.loads(sys.stdin.buffer.readline().decode())
    host, port = header["endpoint"]
    try:
        probe(host, port, header.get("tls", False))
    except OSError as exc:  # includes a certificate this node does not trust
        emit({"unreachable": "%s:%s: %s" % (host, port, exc.strerror or exc)})
        return
    emit({"ready": True})
    concurrency = header["concurrency"]
    parts, slots = queue.Queue(), threading.BoundedSemaphore(concurrency)
    rate = header.get("max_bytes_per_s")
    bucket = TokenBucket(rate) if rate else None  # one for the node: its uploaders share the limit
    uploaders = [Uploader(parts, slots, bucket) for _ in range(concurrency)]
    no_more_jobs = threading.Event()
    readers = [threading.Thread(target=read_jobs, args=(parts, slots, no_more_jobs), daemon=True)
               for _ in range(concurrency)]
    for thread in uploaders + readers:
        thread.start()
    for reader in readers:
        reader.join()
    for _ in uploaders:
        parts.put(None)
    for uploader in uploaders:
        uploader.join()


if __name__ == "__main__":
    main()
