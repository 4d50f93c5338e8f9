"""
A well-behaved FastCGI application on gemfcgi's codec, for integration tests.

Pages, by the last segment of the path: ``hello`` and ``ask`` (the demo's),
``env`` (every parameter as ``NAME=VALUE`` lines), ``big?N`` (N bytes of
body, written as fast as the socket takes them). Listens on fd 0, or on
``--listen unix:PATH|tcp:HOST:PORT``.
"""

from __future__ import annotations

import argparse

from gemfcgi.demo.app import Request, demo, listening_socket, serve

CHUNK = 256 * 1024


def handle(request: Request) -> None:
    params = request.params
    page = params.get("GEMINI_URL_PATH", "").rstrip("/").rpartition("/")[2]
    if page == "env":
        lines = "".join(f"{name}={value}\n" for name, value in sorted(params.items()))
        request.write(b"20 text/plain\r\n" + lines.encode("utf-8"))
        request.end()
    elif page == "big":
        size = int(params.get("QUERY_STRING") or "0")
        request.write(b"20 application/octet-stream\r\n")
        block = b"x" * CHUNK
        while size > 0:
            request.write(block[:size])
            size -= CHUNK
        request.end()
    else:
        demo(request)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen")
    serve(listening_socket(parser.parse_args().listen), handle)
