"""A stub HTTP(S) server on loopback for tests that play a webhook, SonarQube or an ingress.

One way to serve a handler class in a thread and always shut it down (a server left running
keeps its port and thread until the test process ends).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["answering", "serving"]


def answering(text: str) -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with 200 and `text`, over HTTP/1.1 (so a client could
    keep the connection alive), writing no log."""

    class Answering(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: tests read answers, not the server's log."""

    return Answering


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """`handler` answering on a loopback port (a free one unless `port` is given), over TLS
    with `tls`; yields the base URL (no trailing slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
