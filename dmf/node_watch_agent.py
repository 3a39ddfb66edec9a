"""Runs ON a Cassandra node for the long-lived commit-log shipper (dmf.shipper), sent over SSH with
dmf.node_agent, whose uploader it reuses (its namespace is the global `agent`). Standard library
only (Python 3.6+). It watches the commit-log archive folder and uploads what the manager asks it
to through presigned URLs; the manager decides what is shipped, sealed and deleted.

Protocol, one JSON object per line, each request answered by one line:
  stdin   header {"endpoint": [host, port], "tls", "probe", "max_bytes_per_s", "archive_dir", "gzip": bool,
          "cdc_dir": cdc_raw_directory or null}, then requests:
            {"watch": seconds}  wait up to that long for archived segments not reported yet (each one
                                stable over two looks: an archive_command that copies is done with it),
                                or a `_cdc.idx` in cdc_dir that changed
            {"prefix": {"name", "offset"}}  stage the first `offset` bytes of cdc_dir/name (the durable
                                prefix) as `.dmf-prefix-<name>[.gz]` in the archive folder
            {"drain": [names]}  delete segments and their `_cdc.idx` from cdc_dir
            {"upload": {"path", "size", "part_size", "urls", "headers"}}
            {"delete": [names in the archive folder]}
  stdout  {"ready": true} or {"unreachable": reason}; then per request:
            {"segments": [{"name", "size", "mtime", "stored", "stored_size", "sha256"}],
             "cdc": [{"name", "offset", "completed", "mtime"}]} (with gzip, `stored` is `<name>.gz`, made
                        beside the segment, and sha256 the segment's),
            {"stored", "stored_size", "sha256", "size"} or {"error"}, {"drained": n},
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
CDC_INDEX = re.compile(r"(CommitLog-\d+-\d+)_cdc\.idx")
GZ = ".gz"
STAGED = ".dmf-prefix-"
LOOK_EVERY_S = 0.1
READ = 1024 * 1024
# dmf.node_agent's namespace, which the bootstrap hands this one (None where the manager imports it)
agent = globals().get("agent")


def reply(message):
    agent["emit"](message)


class Watcher:
    def __init__(self, folder, compress, cdc_dir):
        self.folder, self.compress, self.cdc_dir = folder, compress, cdc_dir
        self.reported = set()
        self.seen = {}  # name → (size, mtime) at the last look
        self.cdc = {}   # segment name → (offset, completed) last reported

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

    def look_cdc(self):
        """The `_cdc.idx` files that changed: the durable offset on their first line, `COMPLETED` on the
        second once Cassandra is done with the segment. One read mid-rewrite is skipped: the next look reads it."""
        if not self.cdc_dir:
            return []
        changed, present = [], set()
        with os.scandir(self.cdc_dir) as entries:
            for entry in entries:
                match = CDC_INDEX.fullmatch(entry.name)
                if not match:
                    continue
                name = match.group(1) + ".log"
                present.add(name)
                try:
                    with open(entry.path) as index:
                        lines = index.read().split()
                    state = (int(lines[0]), len(lines) > 1 and lines[1] == "COMPLETED")
                    mtime = entry.stat().st_mtime
                except (OSError, ValueError, IndexError):
                    continue
                if self.cdc.get(name) != state:
                    self.cdc[name] = state
                    changed.append({"name": name, "offset": state[0], "completed": state[1], "mtime": mtime})
        self.cdc = {name: state for name, state in self.cdc.items() if name in present}
        return changed

    def watch(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            found, cdc = self.look(), self.look_cdc()
            if found or cdc or time.monotonic() >= deadline:
                break
            time.sleep(LOOK_EVERY_S)
        records = []
        for name, (size, mtime) in found:
            record = {"name": name, "size": size, "mtime": mtime, "stored": name, "stored_size": size, "sha256": None}
            if self.compress:
                record.update(self.gzip(name))
            records.append(record)
            self.reported.add(name)
        return {"segments": records, "cdc": cdc}

    def prefix(self, name, offset):
        """The durable prefix of a CDC segment, copied out of cdc_raw (whose space Cassandra counts)."""
        if not SEGMENT.fullmatch(name):
            raise ValueError("not a segment name")
        target = os.path.join(self.folder, STAGED + name + (GZ if self.compress else ""))
        digest, left = hashlib.sha256(), offset
        try:
            with open(os.path.join(self.cdc_dir, name), "rb") as source, open(target + ".tmp", "wb") as raw:
                out = gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0) \
                    if self.compress else raw
                while left > 0:
                    chunk = source.read(min(READ, left))
                    if not chunk:
                        raise ValueError("%s is shorter than its durable offset %d" % (name, offset))
                    digest.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
                if out is not raw:
                    out.close()
        except (OSError, ValueError):
            if os.path.exists(target + ".tmp"):  # never a partial prefix left behind
                os.remove(target + ".tmp")
            raise
        os.replace(target + ".tmp", target)
        return {"stored": os.path.basename(target), "stored_size": os.path.getsize(target),
                "sha256": digest.hexdigest(), "size": offset}

    def drain(self, names):
        drained = 0
        for name in names:
            if not SEGMENT.fullmatch(name):
                continue
            for path in (name, name[:-len(".log")] + "_cdc.idx"):
                try:
                    os.remove(os.path.join(self.cdc_dir, path))
                    drained += path == name
                except FileNotFoundError:
                    pass
        return drained

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
            base = name[len(STAGED):] if name.startswith(STAGED) else name
            base = base[:-len(GZ)] if base.endswith(GZ) else base
            if not SEGMENT.fullmatch(base):  # only what this agent watches, never a path elsewhere
                continue
            try:
                os.remove(os.path.join(self.folder, name))
                deleted += 1
            except FileNotFoundError:
                pass
        return deleted

    def drop_orphans(self):
        """`.gz` copies (or their temporaries) whose segment is gone: a run died between its deletes; and
        staged CDC prefixes, made again when due."""
        names = set(os.listdir(self.folder))
        for name in names:
            if name.startswith(STAGED):
                os.remove(os.path.join(self.folder, name))
                continue
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
    watcher = Watcher(header["archive_dir"], header.get("gzip", False), header.get("cdc_dir"))
    watcher.drop_orphans()
    # A first look: the first watch then reports every segment already there at once (the manager checks
    # those against sealed batches), not only the first to be stable.
    watcher.look()
    time.sleep(LOOK_EVERY_S)
    reply({"ready": True})
    for line in sys.stdin.buffer:
        if not line.strip():
            break
        request = json.loads(line.decode())
        if "watch" in request:
            reply(watcher.watch(float(request["watch"])))
        elif "prefix" in request:
            try:
                reply(watcher.prefix(request["prefix"]["name"], int(request["prefix"]["offset"])))
            except (OSError, ValueError) as exc:
                reply({"error": str(exc)[:500]})
        elif "drain" in request:
            reply({"drained": watcher.drain(request["drain"])})
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
