"""Runs ON a Cassandra node for the long-lived commit-log shipper (dmf.shipper), sent over SSH with
dmf.node_agent, whose uploader it reuses (its namespace is the global `agent`). Standard library
only (Python 3.6+). It watches the commit-log archive folder and uploads what the manager asks it
to through presigned URLs; the manager decides what is shipped, sealed and deleted.

Protocol, one JSON object per line, each request answered by one line:
  stdin   header {"endpoint": [host, port], "tls", "probe", "max_bytes_per_s", "archive_dir", "gzip": bool},
          then requests:
            {"watch": seconds}  wait up to that long for archived segments not reported yet (each one
                                stable over two looks: an archive_command that copies is done with it)
            {"upload": {"path", "size", "part_size", "urls", "headers"}}
            {"delete": [names in the archive folder]}
  stdout  {"ready": true} or {"unreachable": reason}; then per request:
            {"segments": [{"name", "size", "mtime", "stored", "stored_size", "sha256"}]} (with gzip,
                        `stored` is `<name>.gz`, made beside the segment, and sha256 the segment's),
            {"sha256", "md5s", "etags"} or {"error"}, {"deleted": n}.
The URLs (and any key signed into their headers) come on stdin only and are never printed.
"""
import gzip
import hashlib
import json
import os
import re
import sys
import time

SEGMENT = re.compile(r"CommitLog-\d+-\d+\.log")
GZ = ".gz"
LOOK_EVERY_S = 0.1
READ = 1024 * 1024
# dmf.node_agent's namespace, which the bootstrap hands this one (None where the manager imports it)
agent = globals().get("agent")


def reply(message):
    agent["emit"](message)


class Watcher:
    def __init__(self, folder, compress):
        self.folder, self.compress = folder, compress
        self.reported = set()
        self.seen = {}  # name → (size, mtime) at the last look

    def look(self):
        """Segments stable since the last look and not reported yet."""
        now = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if SEGMENT.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    now[entry.name] = (stat.st_size, stat.st_mtime)
        stable = sorted((name for name, state in now.items()
                         if name not in self.reported and self.seen.get(name) == state), key=lambda n: now[n][1])
        self.seen = now
        self.reported &= set(now)
        return [(name, now[name]) for name in stable]

    def watch(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            found = self.look()
            if found or time.monotonic() >= deadline:
                break
            time.sleep(LOOK_EVERY_S)
        records = []
        for name, (size, mtime) in found:
            record = {"name": name, "size": size, "mtime": mtime, "stored": name, "stored_size": size, "sha256": None}
            if self.compress:
                record.update(self.gzip(name))
            records.append(record)
            self.reported.add(name)
        return records

    def gzip(self, name):
        """`<name>.gz` beside the segment (level 1, no name or time: the same bytes every time), via a
        temporary name so a half-written one is never taken for done."""
        path = os.path.join(self.folder, name)
        target = path + GZ
        digest = hashlib.sha256()
        with open(path, "rb") as source, open(target + ".tmp", "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0) as out:
                for chunk in iter(lambda: source.read(READ), b""):
                    digest.update(chunk)
                    out.write(chunk)
        os.replace(target + ".tmp", target)
        return {"stored": name + GZ, "stored_size": os.path.getsize(target), "sha256": digest.hexdigest()}

    def delete(self, names):
        deleted = 0
        for name in names:
            base = name[:-len(GZ)] if name.endswith(GZ) else name
            if not SEGMENT.fullmatch(base):  # only what this agent watches, never a path elsewhere
                continue
            try:
                os.remove(os.path.join(self.folder, name))
                deleted += 1
            except FileNotFoundError:
                pass
        return deleted

    def drop_orphans(self):
        """`.gz` copies (or their temporaries) whose segment is gone: a run died between its deletes."""
        names = set(os.listdir(self.folder))
        for name in names:
            for suffix in (GZ + ".tmp", GZ):
                if name.endswith(suffix) and SEGMENT.fullmatch(name[:-len(suffix)]) and \
                        (suffix != GZ or name[:-len(suffix)] not in names):
                    os.remove(os.path.join(self.folder, name))
                    break


def upload(uploader, job):
    """Reads the file once, part by part, and PUTs each part to its URL on one kept-alive connection."""
    digest, md5s, etags, total = hashlib.sha256(), [], [], 0
    with open(job["path"], "rb") as source:
        for url in job["urls"]:
            data = source.read(job["part_size"])
            total += len(data)
            digest.update(data)
            md5 = hashlib.md5(data).digest()
            etags.append(uploader.put(url, data, md5, job.get("headers", {})))
            md5s.append(md5.hex())
        if total != job["size"] or source.read(1):
            raise agent["PartFailed"]("read %d bytes, expected %d (file changed?)" % (total, job["size"]))
    return {"sha256": digest.hexdigest(), "md5s": md5s, "etags": etags}


def main():
    header = json.loads(sys.stdin.buffer.readline().decode())
    host, port = header["endpoint"]
    try:
        if header.get("probe", True):  # false when the bytes stream through the manager instead
            agent["probe"](host, port, header.get("tls", False))
    except OSError as exc:
        reply({"unreachable": "%s:%s: %s" % (host, port, exc.strerror or exc)})
        return
    rate = header.get("max_bytes_per_s")
    uploader = agent["Uploader"](None, None, agent["TokenBucket"](rate) if rate else None)
    watcher = Watcher(header["archive_dir"], header.get("gzip", False))
    watcher.drop_orphans()
    reply({"ready": True})
    for line in sys.stdin.buffer:
        if not line.strip():
            break
        request = json.loads(line.decode())
        if "watch" in request:
            reply({"segments": watcher.watch(float(request["watch"]))})
        elif "upload" in request:
            try:
                reply(upload(uploader, request["upload"]))
            except Exception as exc:  # noqa: BLE001 — the manager decides
                reply({"error": str(exc)[:500]})
        elif "delete" in request:
            reply({"deleted": watcher.delete(request["delete"])})
    uploader.close()


if __name__ == "__main__":
    main()
