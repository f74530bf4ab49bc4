"""Helpers for the local platform's tests: hello-service wheels and HTTP sampling."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from contracts.activity import Artifact, DeployRequest, Slot

# What the `wheel` fixture hands a test: `wheel("1.0.0", error_rate=0.5)` builds one.
Wheel = Callable[..., Artifact]

HELLO_DIR = Path(__file__).resolve().parents[4] / "examples" / "hello-service"
RUN_COMMAND = ["python", "-m", "hello_service", "--host", "127.0.0.1", "--port", "{port}"]
SERVICE = "hello"
# Fixed zip timestamps: the same inputs make the same bytes, hence the same digest.
_EPOCH = (2024, 1, 1, 0, 0, 0)


def make_wheel(
    out_dir: Path,
    version: str,
    *,
    error_rate: float = 0.0,
    extra_latency_ms: float = 0.0,
    greeting: str = "Hello from Slipway",
) -> Artifact:
    """A real wheel of examples/hello-service with its config.json knobs set, built in
    milliseconds by zipping the package (what setuptools would put in it)."""
    files: dict[str, bytes] = {}
    for path in sorted((HELLO_DIR / "hello_service").glob("*.py")):
        files[f"hello_service/{path.name}"] = path.read_bytes()
    config = {"greeting": greeting, "error_rate": error_rate, "extra_latency_ms": extra_latency_ms}
    files["hello_service/config.json"] = json.dumps(config).encode()
    info = f"hello_service-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: hello-service\nVersion: {version}\n"
        "Requires-Dist: prometheus-client>=0.21\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: slipway-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/top_level.txt"] = b"hello_service\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"hello_service-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), data)
    digest = "sha256:" + hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Artifact(
        digest=digest,
        uri=str(wheel),
        kind="wheel",
        size_bytes=wheel.stat().st_size,
        version=version,
    )


def deploy_request(
    artifact: Artifact,
    environment: str,
    slot: Slot = "stable",
    strategy: Any = "rolling",
) -> DeployRequest:
    return DeployRequest(
        service=SERVICE,
        environment=environment,
        slot=slot,
        artifact=artifact,
        strategy=strategy,
        run_command=RUN_COMMAND,
    )


def no_heartbeat(_note: str) -> None:
    return None


def get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def versions_seen(url: str, n: int) -> Counter[str]:
    """GET `url` n times; count the `version` each answer reports (or its status code)."""
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=5.0) as client:
        for _ in range(n):
            response = client.get(url)
            if response.status_code == 200:
                seen[str(response.json()["version"])] += 1
            else:
                seen[f"HTTP {response.status_code}"] += 1
    return seen
