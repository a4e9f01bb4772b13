#!/usr/bin/env python3
"""Records the fuzz targets' seed corpus from a real probe.

Runs `mesh-service` (built by `cargo build`) against a stand-in collector
that answers its Hello with a Welcome and records every frame the probe
sends for a while: snapshots, and a stuck-poll event from the service's
`loop` fault switched on midway. The frames become the seeds of the
`hello` target (the connection's bytes from its start) and of the
`snapshot_to_registry` target (the frames after the Hello, one per file,
and runs of them). The `http_query` seeds are the queries the collector's
README documents.

Usage: scripts/fuzz-seeds.py [SECONDS]   (from the repository root)
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
# CollectorMessage { welcome: Welcome { protocol_version: 1 } }, framed.
WELCOME = bytes([0, 0, 0, 4, 0x0A, 0x02, 0x08, 0x01])


def frames(data):
    """Splits a byte stream into whole length-prefixed frames."""
    out, at = [], 0
    while at + 4 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        if at + 4 + length > len(data):
            break
        out.append(data[at:at + 4 + length])
        at += 4 + length
    return out


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def record(seconds):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = dict(os.environ, MESHWATCH_COLLECTOR=f"127.0.0.1:{port}",
               MESHWATCH_INTERVAL_MS="200", MESHWATCH_STUCK_POLL_MS="300")
    binary = os.path.join(ROOT, "target", "debug", "mesh-service")
    service = subprocess.Popen(
        [binary, "--name", "seeds", "--workers", "2", "--fault", "loop"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = service.stdout.readline()
        http = line.split("http=")[1].split()[0]
        conn, _ = listener.accept()
        conn.settimeout(0.5)
        data, welcomed, started = b"", False, time.time()
        fired = False
        while time.time() - started < seconds:
            try:
                chunk = conn.recv(1 << 20)
            except socket.timeout:
                chunk = b""
            data += chunk
            if not welcomed and frames(data):
                conn.sendall(WELCOME)
                welcomed = True
            if not fired and time.time() - started > seconds / 3:
                fired = True
                try:
                    urllib.request.urlopen(f"http://{http}/fault/loop?secs=2", timeout=1)
                except Exception:
                    pass  # the spinning worker may not answer in time
        return data
    finally:
        service.kill()
        service.wait()


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8
    data = record(seconds)
    recorded = frames(data)
    if len(recorded) < 3:
        sys.exit(f"recorded only {len(recorded)} frames")
    hello, rest = recorded[0], recorded[1:]
    write("hello", "hello-only", hello)
    write("hello", "hello-and-snapshots", b"".join(recorded[:4]))
    for i, frame in enumerate(rest):
        write("snapshot_to_registry", f"frame-{i:03}", frame)
    write("snapshot_to_registry", "all-frames", b"".join(rest))
    for i, query in enumerate([
        "service=seeds&metric=rss_bytes",
        "service=seeds&metric=heap_live_bytes&instance=0123456789abcdef0123456789abcdef&from=0&to=9223372036854775807&max_points=2",
        "service=seeds&metric=cpu_percent&from=-1&to=-2",
        "state=open", "state=resolved", "state=all",
        "metric=nope", "service=&metric=rss_bytes&max_points=0",
    ]):
        write("http_query", f"query-{i}", query.encode())
    print(f"{len(recorded)} frames recorded, {len(data)} bytes")


if __name__ == "__main__":
    main()
