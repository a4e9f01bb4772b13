"""A gevent HTTP service for meshwatch's end-to-end tests, watched from
outside with no meshwatch code in it.

Every request is served on its own greenlet, on the one thread gevent's hub
runs:

    /              a little CPU work, then the answer (the load test's bulk)
    /work?ms=N     N ms of CPU work in one greenlet: slow, but it returns
    /spin?ms=N     a loop that never yields to the hub for N ms: the bug
    /block?ms=N    an unpatched blocking sleep of N ms (a C library call
                   that gevent cannot switch away from)

It prints `port N` once it listens.
"""

from gevent import monkey

monkey.patch_all()

import time  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

blocking_sleep = monkey.get_original("time", "sleep")


def checksum(data, rounds):
    """A little CPU work per request, as a real handler does."""
    total = 0
    for _ in range(rounds):
        for byte in data:
            total = (total * 31 + byte) % 1000003
    return total


def busy_for(ms):
    end = time.monotonic() + ms / 1000
    value = 0
    while time.monotonic() < end:
        value = (value * 31 + 7) % 1000003
    return value


def spin_without_yielding(ms):
    return busy_for(ms)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    ms = int(query.get("ms", ["0"])[0])
    if path == "/work":
        busy_for(ms)
    elif path == "/spin":
        spin_without_yielding(ms)
    elif path == "/block":
        blocking_sleep(ms / 1000)
    body = str(checksum(b"meshwatch", 20)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def main():
    server = WSGIServer(("127.0.0.1", 0), application, log=None)
    server.start()
    print("port", server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
