"""A stand-in for Amazon ECR on loopback: moto's ECR API plus a registry endpoint that agrees
with it.

Real ECR is one store behind two doors: images pushed to `<account>.dkr.ecr.<region>...` show
up in the ECR API (`describe_images`, `batch_get_image`, scan findings), and the registry
refuses pushes that the API's repository settings forbid. Here the two doors are separate
programs, so `running_ecr_endpoint` puts a small reverse proxy in front of a real
`docker-registry`:

- every request goes to the registry unchanged (the `Host` header too, so the registry's upload
  `Location`s point back at the proxy);
- a manifest PUT by tag is checked against moto first, like ECR does: an unknown repository is
  `NAME_UNKNOWN`, and re-pointing an existing tag of an IMMUTABLE repository is `TAG_INVALID`;
- once the registry stored a manifest (201), the same bytes are `put_image`d into moto under the
  same tag and digest, synchronously, before the engine hears the push succeeded. So when the
  pipeline's next activity asks the ECR API about the image, it is there.

moto never scans on push, so the ECR API answers `ScanNotFoundException` for these images:
`EcrRegistry.scan` reports the scanner unavailable.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from botocore.exceptions import ClientError

from tests.support.binaries import require_binary
from tests.support.podman import LocalRegistry, server_process
from tests.support.ports import free_port

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

__all__ = ["EcrEndpoint", "Mirrored", "running_ecr_endpoint", "running_moto"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    "date",
    "server",
}
_MAX_CHUNKS = 1_000_000  # a bound on a chunked request body; real pushes here are tiny
_UPSTREAM_TIMEOUT_S = 60.0


@contextmanager
def running_moto(workdir: Path) -> Iterator[str]:
    """`moto_server` on a free loopback port; yields its URL."""
    binary = require_binary("moto_server", "pip install 'moto[server]' (a dev dependency)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        name="moto_server",
        log=workdir / "moto.log",
        ready=lambda: httpx.get(f"{url}/moto-api/", timeout=1).status_code == 200,
    ):
        yield url


@dataclass(frozen=True)
class Mirrored:
    """One manifest push that reached both the registry and the ECR API."""

    repository: str
    tag: str
    digest: str


@dataclass
class EcrEndpoint:
    """The registry endpoint the engine pushes to (`host`), the registry behind it, and every
    push mirrored into the ECR API, in order."""

    host: str
    registry: LocalRegistry
    mirrored: list[Mirrored] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class _RefusedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, by Content-Length or chunked transfer encoding (Go's client uses it
    for blob uploads of unknown length)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        for _ in range(_MAX_CHUNKS):
            size = int(handler.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                for _ in range(100):  # optional trailers, then the empty line
                    if handler.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                        break
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(3)
        raise ValueError("chunked request body did not end")
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _manifest_target(method: str, path: str) -> tuple[str, str] | None:
    """(repository, tag) of a manifest PUT by tag; None for anything else."""
    if method != "PUT":
        return None
    route = urlsplit(path).path
    prefix, marker, reference = route.rpartition("/manifests/")
    if not marker or not prefix.startswith("/v2/") or not reference:
        return None
    if reference.startswith("sha256:"):
        return None  # pushes by digest carry no tag; the engine pushes by tag here
    return prefix.removeprefix("/v2/"), reference


class _Proxy:
    def __init__(self, endpoint: EcrEndpoint, ecr: ECRClient) -> None:
        self._endpoint = endpoint
        self._ecr = ecr
        self._lock = threading.Lock()  # one ECR check-and-mirror at a time

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = _read_body(handler)
        target = _manifest_target(method, handler.path)
        try:
            if target is None:
                self._reply(handler, method, *self._forward(handler, method, body))
                return
            repository, tag = target
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            with self._lock:
                self._check_push(repository, tag, digest)
                status, headers, payload = self._forward(handler, method, body)
                if status == 201:
                    stored = {k.lower(): v for k, v in headers}.get("docker-content-digest", digest)
                    media_type = handler.headers.get("Content-Type", "")
                    self._mirror(repository, tag, body, media_type, stored)
            self._reply(handler, method, status, headers, payload)
        except _RefusedError as refusal:
            self._endpoint.refused.append(f"{method} {handler.path}: {refusal.message}")
            error = {"errors": [{"code": refusal.code, "message": refusal.message}]}
            headers = [("Content-Type", "application/json")]
            self._reply(handler, method, refusal.status, headers, json.dumps(error).encode())

    def _forward(
        self, handler: BaseHTTPRequestHandler, method: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        registry = self._endpoint.registry.host
        host, _, port = registry.partition(":")
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(host, int(port), timeout=_UPSTREAM_TIMEOUT_S)
        try:
            # `Host` is passed through: the registry builds upload URLs from it.
            connection.request(method, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
    ) -> None:
        handler.send_response(status)
        length = str(len(payload))
        for name, value in headers:
            if name.lower() == "content-length" and method == "HEAD":
                length = value  # a HEAD answers the length of the body it does not send
            elif name.lower() not in _HOP_BY_HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", length)
        handler.end_headers()
        if method != "HEAD" and payload:
            handler.wfile.write(payload)

    def _check_push(self, repository: str, tag: str, digest: str) -> None:
        """What ECR's registry endpoint refuses before storing a manifest."""
        try:
            found = self._ecr.describe_repositories(repositoryNames=[repository])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
                raise _RefusedError(
                    404,
                    "NAME_UNKNOWN",
                    f"The repository with name '{repository}' does not exist in the registry",
                ) from error
            raise
        mutability = found["repositories"][0].get("imageTagMutability", "MUTABLE")
        try:
            images = self._ecr.describe_images(
                repositoryName=repository, imageIds=[{"imageTag": tag}]
            )["imageDetails"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ImageNotFoundException":
                raise
            images = []
        holder = images[0].get("imageDigest") if images else None
        if mutability == "IMMUTABLE" and holder is not None and holder != digest:
            raise _RefusedError(
                400,
                "TAG_INVALID",
                f"The image tag '{tag}' already exists in the '{repository}' repository and "
                "cannot be overwritten because the repository is immutable.",
            )

    def _mirror(
        self, repository: str, tag: str, manifest: bytes, media_type: str, digest: str
    ) -> None:
        try:
            self._ecr.put_image(
                repositoryName=repository,
                imageManifest=manifest.decode(),
                imageManifestMediaType=media_type,
                imageTag=tag,
                imageDigest=digest,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ImageAlreadyExistsException":
                raise  # the push fails loudly: the test would otherwise test a lie
        self._endpoint.mirrored.append(Mirrored(repository, tag, digest))


@contextmanager
def running_ecr_endpoint(registry: LocalRegistry, ecr: ECRClient) -> Iterator[EcrEndpoint]:
    """The proxy on a free loopback port in front of `registry`, mirroring into `ecr`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host, port = server.server_address[:2]
    endpoint = EcrEndpoint(host=f"{host!s}:{port}", registry=registry)
    proxy = _Proxy(endpoint, ecr)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            proxy.handle(self, "GET")

        def do_HEAD(self) -> None:
            proxy.handle(self, "HEAD")

        def do_POST(self) -> None:
            proxy.handle(self, "POST")

        def do_PUT(self) -> None:
            proxy.handle(self, "PUT")

        def do_PATCH(self) -> None:
            proxy.handle(self, "PATCH")

        def do_DELETE(self) -> None:
            proxy.handle(self, "DELETE")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
