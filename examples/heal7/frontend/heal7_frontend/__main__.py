"""`python -m heal7_frontend --port N [--host H]`: serve the npm-built pages (`site/`, shipped
inside the wheel) and `/health`.

The pages are static: `index.html` is sent with `Cache-Control: no-cache` (a new release is
seen at once), the content-hashed assets as immutable. Without `--port` it reads `PORT`
(default 8080). From a source checkout (no wheel) it serves `frontend/site/` after
`npm run build`; `HEAL7_FRONTEND_SITE` names another directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata, resources
from pathlib import Path
from types import FrameType

SERVICE_NAME = "heal7-frontend"
DEFAULT_PORT = 8080


def site_dir() -> Path:
    override = os.environ.get("HEAL7_FRONTEND_SITE")
    if override:
        return Path(override)
    packaged = Path(str(resources.files("heal7_frontend").joinpath("site")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "site"  # a source checkout


def version() -> str:
    try:
        return metadata.version(SERVICE_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0+source"


class Handler(SimpleHTTPRequestHandler):
    server_version = SERVICE_NAME
    protocol_version = "HTTP/1.1"  # keep-alive: load generators reuse connections

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/health":
            body = json.dumps({"status": "ok", "version": version()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def end_headers(self) -> None:
        name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        hashed = name.count(".") >= 2  # app.<sha256-12>.js
        self.send_header(
            "Cache-Control", "public, max-age=31536000, immutable" if hashed else "no-cache"
        )
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """No access log: the page's own requests carry nothing worth keeping."""


def main(argv: list[str] | None = None) -> int:
    raw_port = os.environ.get("PORT", "") or str(DEFAULT_PORT)
    parser = argparse.ArgumentParser(prog="python -m heal7_frontend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT, or 8080)")
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else int(raw_port)
    except ValueError:
        print(f"{SERVICE_NAME}: PORT must be a port number, not {raw_port!r}", file=sys.stderr)
        return 2
    root = site_dir()
    if not (root / "index.html").is_file():
        print(
            f"{SERVICE_NAME}: {root}/index.html is missing: run `npm ci && npm run build` "
            "before building the wheel",
            file=sys.stderr,
        )
        return 2
    server = ThreadingHTTPServer((args.host, port), partial(Handler, directory=str(root)))

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"{SERVICE_NAME} {version()} on http://{args.host}:{port} from {root}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
