"""Building the ApiClient: a kubeconfig file, the pod's service account, or the default."""

from __future__ import annotations

import os
from collections.abc import Callable

from kubernetes import config
from kubernetes.client import ApiClient, Configuration

__all__ = ["load_api_client"]

# The config loaders are unannotated; binding them to typed names keeps strict mypy honest
# about what we pass and get back without turning checks off.
_from_kubeconfig: Callable[..., ApiClient] = config.new_client_from_config
_load_incluster: Callable[..., None] = config.load_incluster_config


def load_api_client(kubeconfig: str | None = None, *, context: str | None = None) -> ApiClient:
    """An ApiClient for the given kubeconfig file; without one, the in-cluster service account
    when running in a pod, else `$KUBECONFIG` / `~/.kube/config`.

    Never touches the client's process-wide default configuration, so two platforms with
    different clusters can live in one worker.
    """
    configuration = Configuration()
    # urllib3 would otherwise retry failed connections on its own; Temporal owns retries.
    configuration.retries = 0
    if kubeconfig:
        return _from_kubeconfig(
            config_file=kubeconfig,
            context=context,
            persist_config=False,
            client_configuration=configuration,
        )
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        _load_incluster(client_configuration=configuration)
        return ApiClient(configuration)
    return _from_kubeconfig(
        context=context, persist_config=False, client_configuration=configuration
    )
