"""The release phase on the local platform: the artifact's `release` command runs once per
(environment, release), with the new artifact and the environment's resources, before any
traffic moves; its failure fails the deploy and changes nothing."""

from __future__ import annotations

import pytest
import redis
from temporalio.exceptions import ApplicationError

from activities.platforms.local import LocalPlatform
from contracts.activity import Artifact, DeployRequest, ReleaseConfig
from contracts.errors import ErrorType
from tests.activities.platforms.local.helpers import (
    Wheel,
    deploy_request,
    no_heartbeat,
    versions_seen,
)

# Counts its runs in the environment's Redis: proof it saw the resource through its env.
COUNTING = [
    "python",
    "-c",
    "import os, socket; from urllib.parse import urlparse; u = urlparse(os.environ['REDIS_URL']);"
    " s = socket.create_connection((u.hostname, u.port));"
    " s.sendall(f'AUTH {u.password}\\r\\nINCR phase:' .encode() + os.environ['SLIPWAY_VERSION']"
    ".encode() + b':' + os.environ['PHASE_TAG'].encode() + b'\\r\\nQUIT\\r\\n'); s.recv(100)",
]


def test_it_runs_once_per_environment_and_release_before_traffic_and_a_failure_changes_nothing(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    target = platform.target
    url = platform.entrypoint_url("development") + "/"
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")

    def request(artifact: Artifact, release: list[str], tag: str = "tagged") -> DeployRequest:
        return deploy_request(artifact, "development").model_copy(
            update={
                "resources": ["redis:7"],
                "env": {"REDIS_URL": "{services.redis.url}"},
                "release": release,
                # The environment's configuration reaches the release phase too.
                "config": ReleaseConfig(settings={"PHASE_TAG": tag}),
            }
        )

    first = target.deploy(request(v1, COUNTING), no_heartbeat)
    assert first.release_phase.startswith("ran `python -c")
    retried = target.deploy(request(v1, COUNTING), no_heartbeat)
    assert retried.release_phase.endswith("ran already for this release")
    assert versions_seen(url, 3) == {"1.0.0": 3}
    (endpoint,) = platform.slots.resources.endpoints(
        ["redis"], "hello", "development", no_heartbeat
    ).values()
    assert redis.Redis.from_url(endpoint.url).get("phase:1.0.0:tagged") == b"1"
    # The same artifact with other settings is another release: its phase runs again.
    retagged = target.deploy(request(v1, COUNTING, tag="retagged"), no_heartbeat)
    assert retagged.release_phase.startswith("ran `python -c")
    assert redis.Redis.from_url(endpoint.url).get("phase:1.0.0:retagged") == b"1"
    assert redis.Redis.from_url(endpoint.url).get("phase:1.0.0:tagged") == b"1"

    failing = ["python", "-c", "import sys; print('relation exists'); sys.exit(3)"]
    with pytest.raises(ApplicationError) as raised:
        target.deploy(request(v2, failing), no_heartbeat)
    assert raised.value.type == ErrorType.DEPLOY_FAILED
    assert "exited 3; nothing was deployed" in str(raised.value)
    assert "relation exists" in str(raised.value)
    assert versions_seen(url, 3) == {"1.0.0": 3}
    assert platform.slots.state("hello", "development", "stable").digest == (
        request(v1, COUNTING, tag="retagged").release_digest
    )
    assert platform.slots.resources.delete("hello", "development", "redis")
