"""KubernetesBackingServices against the fake API server (no cluster can run here): the
pods and Services it creates, the endpoints it hands the tests, and that it deletes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.platforms.kubernetes._api import KubeApi
from activities.providers.backing_services.kubernetes import KubernetesBackingServices
from contracts.errors import ErrorType
from plumbing.settings import ConfigurationError, Settings
from tests.fakes.kube_api import FakeKubeApi

NS = "heal7-ci"


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as server:
        yield server


def services(fake: FakeKubeApi, worker: str = "worker-0") -> KubernetesBackingServices:
    return KubernetesBackingServices(KubeApi(fake.api_client()), NS, worker=worker, poll_s=0.01)


def noted(_: str) -> None:
    """Progress notes go nowhere here (the activity turns them into heartbeats)."""


def container(pod: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = pod["spec"]["containers"][0]
    return found


def test_each_service_is_a_pod_of_the_asked_version_behind_a_service(fake: FakeKubeApi) -> None:
    with services(fake).started(["postgres:16", "redis:7"], noted) as started:
        pods = {p["metadata"]["name"]: p for p in fake.objects("pods", NS)}
        svcs = {s["metadata"]["name"]: s for s in fake.objects("services", NS)}
    pg, rd = started.endpoints["postgres"], started.endpoints["redis"]
    assert sorted(container(p)["image"] for p in pods.values()) == ["postgres:16", "redis:7"]
    assert set(svcs) == set(pods)
    pg_name = pg.host.split(".")[0]
    assert pg.host == f"{pg_name}.{NS}.svc"
    assert pg.url == f"postgresql://postgres:{pg.password}@{pg.host}:5432/postgres"
    assert {"name": "POSTGRES_PASSWORD", "value": pg.password} in container(pods[pg_name])["env"]
    assert svcs[pg_name]["spec"]["selector"] == {"slipway.dev/backing-service": pg_name}
    assert rd.password in container(pods[rd.host.split(".")[0]])["args"]
    assert started.notes == [
        f"postgres 16 (pod {pg_name})",
        f"redis 7 (pod {rd.host.split('.')[0]})",
    ]
    assert fake.objects("pods", NS) == []
    assert fake.objects("services", NS) == []
    assert fake.unserved == []


def test_an_image_that_cannot_be_pulled_fails_naming_it_and_leaves_nothing(
    fake: FakeKubeApi,
) -> None:
    fake.set_pod_waiting("postgres:99", "ImagePullBackOff", "Back-off pulling image")
    with (
        pytest.raises(ApplicationError, match=r"postgres:99.*ImagePullBackOff") as raised,
        services(fake).started(["redis:7", "postgres:99"], noted),
    ):
        pytest.fail("the block must not run")
    assert raised.value.type == ErrorType.CONFIGURATION
    assert fake.objects("pods", NS) == []
    assert fake.objects("services", NS) == []


def test_a_restarted_worker_deletes_only_its_own_leftovers(fake: FakeKubeApi) -> None:
    dead, alive = services(fake, "worker-0"), services(fake, "worker-1")
    leftover = dead.started(["postgres:16"], noted)
    leftover.__enter__()  # the worker dies inside the block: nothing deletes the pod
    with alive.started(["redis:7"], noted):
        assert services(fake, "worker-0").clean_leftovers() != []
        remaining = [container(p)["image"] for p in fake.objects("pods", NS)]
    assert remaining == ["redis:7"]
    assert [s["metadata"]["name"] for s in fake.objects("services", NS)] == []


def test_the_worker_refuses_pods_without_a_namespace() -> None:
    with pytest.raises(ConfigurationError, match="SLIPWAY_BACKING_SERVICES_NAMESPACE"):
        Settings.load(backing_services="kubernetes")
    assert Settings.load(backing_services="kubernetes", backing_services_namespace=NS)
