"""The production platform: Kubernetes Deployments per slot and Istio traffic weights.

`KubernetesPlatform` implements `DeployTarget` and `TrafficRouter` with the official
`kubernetes` client; `load_api_client` builds its ApiClient from a kubeconfig or the pod's
service account.
"""

from activities.platforms.kubernetes._client import load_api_client
from activities.platforms.kubernetes.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform", "load_api_client"]
