"""The chart grants the worker what test stages' backing services need on kubernetes: pods
and Services created and deleted in their namespace, and nothing when they run locally."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.helm import HelmError
from tests.deploy.test_helm_chart import Json, model, render

PODS: Json = {
    "settings": {
        "SLIPWAY_BACKING_SERVICES": "kubernetes",
        "SLIPWAY_BACKING_SERVICES_NAMESPACE": "heal7-ci",
    }
}


def documents(tmp_path: Path, values: Json) -> list[Json]:
    return [d for d in yaml.safe_load_all(render(values, tmp=tmp_path)) if d]


def test_pods_in_their_namespace_get_a_role_to_create_and_delete_them(tmp_path: Path) -> None:
    docs = documents(tmp_path, PODS)
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "heal7-ci"]
    rules = {r["resources"][0]: sorted(r["verbs"]) for r in model(role).to_dict()["rules"]}
    assert rules == {
        "pods": ["create", "delete", "get", "list"],
        "services": ["create", "delete"],
    }
    (binding,) = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == "heal7-ci"
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["SLIPWAY_BACKING_SERVICES_NAMESPACE"] == "heal7-ci"


def test_local_backing_services_need_no_role(tmp_path: Path) -> None:
    docs = documents(tmp_path, {})
    assert not [d for d in docs if d["metadata"]["name"].endswith("-backing-services")]


def test_pods_without_a_namespace_fail_to_render_naming_the_value(tmp_path: Path) -> None:
    with pytest.raises(HelmError, match="SLIPWAY_BACKING_SERVICES_NAMESPACE is required"):
        render({"settings": {"SLIPWAY_BACKING_SERVICES": "kubernetes"}}, tmp=tmp_path)
