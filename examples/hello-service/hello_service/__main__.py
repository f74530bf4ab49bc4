"""`python -m hello_service --port N --host 127.0.0.1`."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from hello_service.app import HelloApp, load_config, make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hello_service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    args = parser.parse_args(argv)

    app = HelloApp(load_config())
    server = make_server(app, args.host, args.port)

    def stop(signum: int, _frame: FrameType | None) -> None:
        # Unready first so a router probing /ready stops sending, then leave serve_forever.
        app.ready = False
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(
        f"hello-service {app.version} listening on http://{args.host}:{args.port} "
        f"(error_rate={app.config.error_rate}, extra_latency_ms={app.config.extra_latency_ms})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
