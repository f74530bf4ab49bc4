"""A fake Docker Engine API on 127.0.0.1 whose "containers" are real PostgreSQL and Redis
server processes, for the tests of DockerBackingServices.

No engine can run containers here (`podman run` fails in this sandbox; `podman build`
works), so this stands in for one at the HTTP edge: the real `docker` SDK talks to it. It
answers ONLY the calls DockerBackingServices makes, as the engine would:

- GET  /version, /_ping
- GET  /images/{name}/json; POST /images/create?fromImage=&tag= (404 "manifest unknown" for an
  image not in `pullable`, as Docker answers before it streams anything; with
  `pull_errors_in_stream`, a 200 whose stream carries the error, as podman answers)
- POST /containers/create?name=  (404 for an image not pulled, 409 for a name in use)
- POST /containers/{id}/start: the server the image names runs, with the password of the
  container's environment (POSTGRES_PASSWORD) or command (--requirepass), on a free port
  published on the HostIp asked. An image given to `exits` exits at once with a log instead.
- GET  /containers/{id}/json: State (exited once the server process has), Health (`healthy`
  once the server answers a real query, as pg_isready / redis-cli ping would say;
  `unhealthy` for an image given to `unhealthy`, with that healthcheck output), and
  NetworkSettings.Ports
- GET  /containers/{id}/logs (the multiplexed stream of a non-TTY container)
- GET  /containers/json?all=&filters={"label": [...]}
- DELETE /containers/{id}?force=&v=  (409 for a running container without force)

Other paths answer 404 and are listed in `unserved`, so a test can assert nothing else was
called. Servers still running when the fake closes are stopped.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.kinds import ServerKind
from activities.providers.backing_services.postgres import PostgresKind
from activities.providers.backing_services.processes import ServerProcess, data_root, run_as_for
from activities.providers.backing_services.redis import RedisKind
from contracts.definition.service_templates import Endpoint, version_satisfies
from tests.support.ports import free_port

__all__ = ["FakeContainer", "FakeDockerEngine", "running_engine"]

_API = re.compile(r"^/v\d+\.\d+")
_KINDS: dict[str, ServerKind] = {"postgres": PostgresKind(), "redis": RedisKind()}


@dataclass
class FakeContainer:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str]
    cmd: list[str]
    bindings: dict[str, list[dict[str, str]]]
    status: str = "created"
    exit_code: int = 0
    health: str = "starting"
    log: str = ""
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    server: ServerProcess | None = None
    endpoint: Endpoint | None = None
    installation: Installation | None = None

    @property
    def kind(self) -> str:
        return self.image.rsplit(":", 1)[0].rsplit("/", 1)[-1]


class FakeDockerEngine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pullable = {"postgres:16", "redis:7"}
        self.images: set[str] = set()
        self.pulls: list[str] = []
        self.exits: dict[str, tuple[int, str]] = {}
        self.unhealthy: dict[str, str] = {}
        self.pull_errors_in_stream = False
        self.unserved: list[str] = []
        self._containers: dict[str, FakeContainer] = {}
        self._lock = threading.RLock()
        self._run_as = run_as_for("nobody")
        self._data = data_root(root / "data", self._run_as)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.base_url = f"tcp://127.0.0.1:{self._http.server_address[1]}"

    def containers(self) -> list[FakeContainer]:
        with self._lock:
            return list(self._containers.values())

    def serve(self) -> None:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        for container in self.containers():
            self._stop(container)

    # The engine's operations; each returns (status, JSON body).

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            if method == "GET" and parts in (["version"], ["_ping"]):
                return 200, {"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Version": "fake"}
            if method == "GET" and parts[0] == "images" and parts[-1] == "json":
                name = "/".join(parts[1:-1])
                if name in self.images:
                    return 200, {"Id": f"sha256:{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}"}
                return 404, {"message": f"No such image: {name}"}
            if method == "POST" and parts == ["images", "create"]:
                return self._pull(f"{query['fromImage']}:{query.get('tag', 'latest')}")
            if parts[0] == "containers":
                return self._containers_call(method, parts[1:], query, body)
        return 404, None

    def _pull(self, image: str) -> tuple[int, Any]:
        self.pulls.append(image)
        if image not in self.pullable and self.pull_errors_in_stream:
            # Podman's compatible API: a 200 whose stream carries the error.
            message = f"{image}: reading manifest {image.rsplit(':', 1)[1]}: manifest unknown"
            return 200, {"error": message, "errorDetail": {"message": message}}
        if image not in self.pullable:
            return 404, {
                "message": f"manifest for {image} not found: manifest unknown: manifest unknown"
            }
        self.images.add(image)
        return 200, {"status": f"Downloaded newer image for {image}"}

    def _containers_call(
        self, method: str, parts: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if method == "POST" and parts == ["create"]:
            return self._create(query.get("name") or uuid.uuid4().hex[:12], body)
        if method == "GET" and parts == ["json"]:
            return 200, self._list(query)
        container = self._find(parts[0]) if parts else None
        if container is None:
            return 404, {"message": f"No such container: {parts[0] if parts else ''}"}
        if method == "POST" and parts[1:] == ["start"]:
            self._start(container)
            return 204, None
        if method == "GET" and parts[1:] == ["json"]:
            return 200, self._inspect(container)
        if method == "GET" and parts[1:] == ["logs"]:
            return 200, container.log.encode()
        if method == "DELETE" and len(parts) == 1:
            if container.status == "running" and not _true(query.get("force")):
                return 409, {"message": "cannot remove a running container: stop it or force"}
            self._stop(container)
            del self._containers[container.id]
            return 204, None
        return 404, None

    def _create(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        image = body["Image"]
        if image not in self.images:
            return 404, {"message": f"No such image: {image}"}
        if self._find(name) is not None:
            return 409, {"message": f'Conflict. The container name "/{name}" is already in use'}
        env = dict(e.split("=", 1) for e in body.get("Env") or [])
        bindings = (body.get("HostConfig") or {}).get("PortBindings") or {}
        container = FakeContainer(
            uuid.uuid4().hex * 2, name, image, body.get("Labels") or {}, env,
            body.get("Cmd") or [], bindings,
        )  # fmt: skip
        self._containers[container.id] = container
        return 201, {"Id": container.id, "Warnings": []}

    def _start(self, container: FakeContainer) -> None:
        if container.image in self.exits:
            container.exit_code, container.log = self.exits[container.image]
            container.status = "exited"
            return
        kind = _KINDS[container.kind]
        tag = container.image.rsplit(":", 1)[1]
        installed = kind.installations()
        installation = next((i for i in installed if version_satisfies(tag, i.version)), None)
        installation = installation or installed[0]
        server = ServerProcess(self.root / "records", self._data, container.kind, self._run_as)
        server.prepare_dir()
        if container.kind == "postgres":
            password = container.env["POSTGRES_PASSWORD"]
        else:
            password = container.cmd[container.cmd.index("--requirepass") + 1]
        for port_proto, asked in container.bindings.items():
            host_port = int(asked[0].get("HostPort") or free_port())
            container.ports[port_proto] = [
                {"HostIp": asked[0].get("HostIp") or "0.0.0.0", "HostPort": str(host_port)}
            ]
        published = int(next(iter(container.ports.values()))[0]["HostPort"])
        container.endpoint = kind.launch(installation, server, published, password=password)
        container.server, container.installation = server, installation
        container.status = "running"

    def _inspect(self, container: FakeContainer) -> dict[str, Any]:
        server = container.server
        if container.status == "running" and server is not None:
            code = server.exited()
            if code is not None:
                container.status, container.exit_code = "exited", code
                container.log = server.log_tail()
            elif container.image in self.unhealthy:
                container.health = "unhealthy"
            elif container.health == "starting":
                assert container.installation is not None
                assert container.endpoint is not None
                answer = _KINDS[container.kind].check(container.installation, container.endpoint)
                container.health = "healthy" if answer is not None else "starting"
        return {
            "Id": container.id,
            "Name": f"/{container.name}",
            "Image": container.image,
            "Config": {
                "Image": container.image,
                "Labels": container.labels,
                "Env": [f"{k}={v}" for k, v in container.env.items()],
                "Cmd": container.cmd,
                "Tty": False,
            },
            "State": {
                "Status": container.status,
                "Running": container.status == "running",
                "ExitCode": container.exit_code,
                "Error": "",
                "Health": {"Status": container.health, "Log": _health_log(container, self)},
            },
            "HostConfig": {"PortBindings": container.bindings},
            "NetworkSettings": {"Ports": container.ports if container.status == "running" else {}},
        }

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        wanted = json.loads(query.get("filters") or "{}").get("label", [])
        shown = []
        for c in self._containers.values():
            if not _true(query.get("all")) and c.status != "running":
                continue
            if all(c.labels.get(k) == v for k, _, v in (w.partition("=") for w in wanted)):
                shown.append(
                    {"Id": c.id, "Names": [f"/{c.name}"], "Image": c.image, "Labels": c.labels}
                )
        return shown

    def _find(self, ref: str) -> FakeContainer | None:
        return self._containers.get(ref) or next(
            (c for c in self._containers.values() if ref in (c.name, c.id[:12])), None
        )

    def _stop(self, container: FakeContainer) -> None:
        if container.server is not None:
            container.server.stop(_KINDS[container.kind].stop_signal)
        container.status = "exited"


def _health_log(container: FakeContainer, engine: FakeDockerEngine) -> list[dict[str, Any]]:
    output = engine.unhealthy.get(container.image)
    return [{"ExitCode": 1, "Output": output}] if output else []


def _true(value: str | None) -> bool:
    """A boolean query parameter as the engine (Go's strconv.ParseBool) reads it."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _handler(engine: FakeDockerEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests' output is about the code under test."""

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path = _API.sub("", url.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            status, body = engine.handle(self.command, path, query, json.loads(raw or b"null"))
            if status == 404 and body is None:
                engine.unserved.append(f"{self.command} {url.path}")
            if isinstance(body, bytes):  # logs: one stdout frame of the multiplexed stream
                payload = bytes([1, 0, 0, 0]) + len(body).to_bytes(4, "big") + body
                content_type = "application/vnd.docker.raw-stream"
            else:
                payload = b"" if body is None else json.dumps(body).encode()
                content_type = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

    return Handler


@contextmanager
def running_engine(root: Path) -> Iterator[FakeDockerEngine]:
    engine = FakeDockerEngine(root)
    engine.serve()
    try:
        yield engine
    finally:
        engine.close()


@contextmanager
def engine_with_real_servers(root: Path) -> Iterator[FakeDockerEngine]:
    """The fake engine whose `postgres:16` and `redis:7` images are real PostgreSQL 16
    (pgserver) and Redis 7 (Debian's) servers; missing ones fail the test, named."""
    from activities.providers.backing_services.redis import RedisKind
    from tests.support.binaries import missing, require_module

    require_module("pgserver", "pip install pgserver (PostgreSQL 16 binaries)")
    if not any(i.version.startswith("7.") for i in RedisKind().installations()):
        missing("no Redis 7 server installed: apt-get install redis-server")
    with running_engine(root) as engine:
        yield engine
