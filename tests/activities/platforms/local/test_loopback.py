"""The local platform's shared loopback client (`activities.platforms.local.loopback`): one
client for every probe and Traefik call, and still every request reaches whoever listens on
the port now, as a slot's port passes from one release's process to the next."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from activities.platforms.local import loopback
from tests.support.stub_http import serving


def _answering(text: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the connection could be kept alive: it must not be

        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads answers, not the server's log."""

    return Handler


def test_a_port_taken_over_by_a_new_server_is_answered_by_the_new_one() -> None:
    with serving(_answering("old release")) as url:
        assert loopback.get(f"{url}/ready", timeout=5).text == "old release"
        port = urlsplit(url).port
        assert port is not None
    with serving(_answering("new release"), port=port) as again:
        assert again == url
        assert loopback.get(f"{url}/ready", timeout=5).text == "new release"
