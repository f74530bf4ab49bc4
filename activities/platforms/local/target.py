"""The local DeployTarget: slots for processes, Traefik for which slot takes the traffic.

Strategies map onto slots like this:
- rolling: the `stable` slot is replaced in place (new process ready, router switched, old
  process stopped);
- canary: the `canary` slot runs beside `stable` at weight 0 until `set_weight` shifts
  traffic; promote runs the canary's release in `stable` and empties `canary`;
- blue/green: the idle colour gets the release; promote switches the active colour, the old one
  stays warm until the next release or a rollback.

For rollback, each environment keeps a small record on disk
(`<state_dir>/targets/<service>/<environment>.json`): the digest of the current release and,
once this release switches the serving version, how to undo that (redeploy the previous
stable revision, or switch back to the previous colour). A rollback consumes it, so a second
rollback changes nothing.

The record is written *before* the change it describes: a new release's record replaces the
previous release's as soon as its deploy begins, and the undo step is saved before traffic
moves. So a deploy that fails, or a worker killed between switching traffic and writing the
record, never leaves a rollback undoing the previous release instead of this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from activities.helpers.http_checks import run_http_checks
from activities.platforms.local.slots import SlotManager, SlotRevision, SlotState, check_names
from activities.platforms.local.traefik import TraefikRouter
from activities.wiring.backends import Heartbeat
from contracts.activity import (
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    FenceRequest,
    HttpCheckReport,
    HttpCheckRequest,
    ReleaseSpec,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    Slot,
    WeightRequest,
)
from contracts.errors import ErrorType, check_fence, verdict
from plumbing.files import atomic_write_text, file_lock

__all__ = ["LocalDeployTarget", "ReleaseRecord", "Undo"]

_COLOURS: tuple[Slot, Slot] = ("blue", "green")


class Undo(BaseModel):
    """How to put back what this release replaced."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["redeploy", "switch"]
    slot: Slot
    revision: SlotRevision | None = None


class ReleaseRecord(BaseModel):
    """The environment's current release and its undo step, as recorded on disk."""

    model_config = ConfigDict(extra="ignore")

    service: str
    release_digest: str | None = None
    undo: Undo | None = None


class LocalDeployTarget:
    """DeployTarget running releases as loopback processes behind a real Traefik.

    State lives on disk (slots, routes, release records), so a new instance on the same state
    dir, in a restarted worker, carries on where the previous one stopped.
    """

    def __init__(
        self,
        slots: SlotManager,
        router: TraefikRouter,
        state_dir: Path,
        *,
        check_timeout_s: float = 5.0,
    ) -> None:
        self.slots = slots
        self.router = router
        self.root = Path(state_dir).resolve() / "targets"
        self.check_timeout_s = check_timeout_s

    # --- records -------------------------------------------------------------------------

    def _record_path(self, service: str, environment: str) -> Path:
        check_names(service, environment)
        self.router.entrypoint_port(environment)  # refuses unknown environments
        return self.root / service / f"{environment}.json"

    def record(self, service: str, environment: str) -> ReleaseRecord:
        """The environment's release record (empty before the first deploy)."""
        path = self._record_path(service, environment)
        if not path.exists():
            return ReleaseRecord(service=service)
        return ReleaseRecord.model_validate_json(path.read_text(encoding="utf-8"))

    def _save(self, environment: str, record: ReleaseRecord) -> None:
        path = self._record_path(record.service, environment)
        atomic_write_text(path, record.model_dump_json(indent=2))

    def _lock(self, service: str, environment: str) -> Path:
        return self._record_path(service, environment).with_suffix(".lock")

    # --- fencing -------------------------------------------------------------------------

    def fencing_token(self, service: str, environment: str) -> int:
        """The highest lease token this environment has seen (0: none yet)."""
        path = self._record_path(service, environment).with_suffix(".fence")
        return int(path.read_text(encoding="utf-8")) if path.exists() else 0

    @contextmanager
    def _guard(self, service: str, environment: str, token: int) -> Iterator[None]:
        """The environment's lock, held for the whole change, with the fencing token checked
        under it: every writer takes this lock, so no higher token can appear between the
        check and the change (a rollback waits for a deploy in flight, then fences it)."""
        with file_lock(self._lock(service, environment)):
            current = self.fencing_token(service, environment)
            highest = check_fence(current, token, service, environment)
            if highest != current:
                path = self._record_path(service, environment).with_suffix(".fence")
                atomic_write_text(path, str(highest))
            yield

    def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        with self._guard(request.service, request.environment, request.token):
            active = self._active_slot(request.service, request.environment)
            if active is None:
                return None
            current = self.slots.state(request.service, request.environment, active).current
            if current is None:
                return None
            return ReleaseSpec(
                artifact=current.artifact,
                run_command=list(current.run_command),
                health_path=current.health_path,
                ready_path=current.ready_path,
                config=current.config,
                env=dict(current.env),
            )

    def set_weight(self, request: WeightRequest) -> None:
        """TrafficRouter: the router's weight, under the environment's fence."""
        with self._guard(request.service, request.environment, request.fence):
            self.router.set_weight(request)

    def verify_weight(self, request: WeightRequest) -> bool:
        return self.router.verify_weight(request)

    def _begin(self, environment: str, request: DeployRequest, undo: Undo | None = None) -> None:
        """Record that `request`'s release is this environment's current one, with `undo` when
        it is about to replace what serves. Called before the change; once the release has
        an undo step, a retry (that finds the change made) keeps it."""
        service, digest = request.service, request.release_digest
        record = self.record(service, environment)
        if undo is not None or record.release_digest != digest:
            record = ReleaseRecord(service=service, release_digest=digest, undo=undo)
            self._save(environment, record)

    # --- wiring --------------------------------------------------------------------------

    def _wire(
        self,
        service: str,
        environment: str,
        slot: Slot,
        *,
        activate: bool = False,
        zero_weight: Literal["never", "if_changed", "always"] = "never",
    ) -> Callable[[SlotState, bool], None]:
        """The callback a slot runs once its new process is ready, before the old one stops:
        point the router at the new port and wait until Traefik has loaded it."""

        def on_ready(state: SlotState, changed: bool) -> None:
            if zero_weight == "always" or (zero_weight == "if_changed" and changed):
                # A new canary starts without traffic, whatever weight the last one had.
                self.router.set_weight(
                    WeightRequest(service=service, environment=environment, canary_weight=0)
                )
            self.router.set_backend(service, environment, slot, state.port)
            if activate:
                self.router.set_active(service, environment, slot)
            self.router.wait_loaded(environment, service)

        return on_ready

    def _unwire_canary(self, service: str, environment: str) -> bool:
        """Weight 0, canary out of the router, canary process stopped; whether anything was."""
        route = self.router.route(environment, service)
        changed = False
        if "canary" in route.ports or route.canary_weight:
            self.router.set_backend(service, environment, "canary", None)
            self.router.wait_loaded(environment, service)
            changed = True
        return self.slots.stop(service, environment, "canary") or changed

    # --- deploy --------------------------------------------------------------------------

    def deploy(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        """Run the release in the slot its strategy calls for (see the module docstring)."""
        with self._guard(request.service, request.environment, request.fence):
            for wanted in request.resources:  # made on first use, kept across releases
                self.slots.resources.ensure(wanted, request.service, request.environment, heartbeat)
            # Before the new release runs anywhere: its failure changes nothing else.
            phase = self.slots.release_phase(request, heartbeat)
            if request.slot == "canary":
                result = self._deploy_canary(request, heartbeat)
            elif request.strategy == "blue_green" or request.slot in _COLOURS:
                result = self._deploy_idle_colour(request, heartbeat)
            else:
                result = self._deploy_stable(request, heartbeat)
            return result.model_copy(update={"release_phase": phase})

    def _deploy_stable(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        service, env = request.service, request.environment
        previous = self.slots.state(service, env, "stable").current
        undo = None
        if previous is not None and previous.digest != request.release_digest:
            undo = Undo(kind="redeploy", slot="stable", revision=previous)
        self._begin(env, request, undo)
        return self.slots.deploy(
            request.model_copy(update={"slot": "stable"}),
            heartbeat,
            on_ready=self._wire(service, env, "stable", activate=True),
        )

    def _deploy_canary(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        service, env = request.service, request.environment
        # A new release begins: the previous release's undo step is no longer ours.
        self._begin(env, request)
        return self.slots.deploy(
            request,
            heartbeat,
            on_ready=self._wire(service, env, "canary", zero_weight="if_changed"),
        )

    def _active_slot(self, service: str, environment: str) -> Slot | None:
        route = self.router.route(environment, service)
        if route.active in route.ports and route.active != "canary":
            return route.active
        return None

    def _deploy_idle_colour(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        service, env = request.service, request.environment
        active = self._active_slot(service, env)
        if active is not None:
            state = self.slots.state(service, env, active)
            if state.digest == request.release_digest and self.slots.healthy(state):
                return DeployResult(
                    environment=env,
                    slot=active,
                    digest=request.release_digest,
                    previous_digest=state.previous_digest,
                    endpoint=state.endpoint,
                    changed=False,
                )
        idle: Slot = "green" if active == "blue" else "blue"
        self._begin(env, request)
        return self.slots.deploy(
            request.model_copy(update={"slot": idle}),
            heartbeat,
            on_ready=self._wire(service, env, idle),
        )

    # --- promote -------------------------------------------------------------------------

    def promote(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        """Canary → stable, or switch blue/green to the colour running the release; a rolling
        release is already stable (deploying it again is a no-op)."""
        with self._guard(request.service, request.environment, request.fence):
            if request.slot in _COLOURS or request.strategy == "blue_green":
                return self._promote_colour(request)
            if request.slot == "canary" or request.strategy == "canary":
                return self._promote_canary(request, heartbeat)
            return self._deploy_stable(request, heartbeat)

    def _promote_canary(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        service, env, digest = request.service, request.environment, request.release_digest
        canary = self.slots.state(service, env, "canary")
        stable = self.slots.state(service, env, "stable")
        if canary.current is not None and canary.digest == digest:
            revision = canary.current
        else:
            revision = SlotRevision.of(digest, request)
        previous = stable.current
        undo = None
        if previous is not None and previous.digest != digest:
            undo = Undo(kind="redeploy", slot="stable", revision=previous)
        self._begin(env, request, undo)
        result = self.slots.run_revision(
            service,
            env,
            "stable",
            revision,
            heartbeat,
            on_ready=self._wire(service, env, "stable", activate=True, zero_weight="always"),
        )
        stopped = False
        if canary.digest == digest or canary.current is None:
            heartbeat(f"stopping the canary of {env}")
            stopped = self._unwire_canary(service, env)
        return result.model_copy(update={"changed": result.changed or stopped})

    def _promote_colour(self, request: DeployRequest) -> DeployResult:
        service, env, digest = request.service, request.environment, request.release_digest
        states = {c: self.slots.state(service, env, c) for c in _COLOURS}
        colour = next(
            (c for c, s in states.items() if s.digest == digest and s.running()),
            None,
        )
        if colour is None:
            raise verdict(
                ErrorType.DEPLOY_FAILED,
                f"no blue/green slot of {env!r} runs {digest}; deploy it before promoting",
            )
        active = self._active_slot(service, env)
        target = states[colour]
        if active == colour:
            return DeployResult(
                environment=env,
                slot=colour,
                digest=digest,
                endpoint=target.endpoint,
                changed=False,
            )
        previous_digest = None
        if active is not None:
            previous_digest = self.slots.state(service, env, active).digest
        undo = Undo(kind="switch", slot=active) if active is not None else None
        self._begin(env, request, undo)
        self.router.set_active(service, env, colour)
        self.router.wait_loaded(env, service)
        return DeployResult(
            environment=env,
            slot=colour,
            digest=digest,
            previous_digest=previous_digest,
            endpoint=target.endpoint,
            changed=True,
        )

    # --- rollback ------------------------------------------------------------------------

    def rollback(self, request: RollbackRequest, heartbeat: Heartbeat) -> RollbackResult:
        """Canary weight 0 and canary stopped; undo this release's switch if it made one;
        stop idle colours left running this release. A second call changes nothing."""
        service, env = request.service, request.environment
        with self._guard(service, env, 0):
            record = self.record(service, env)
            changed = self._unwire_canary(service, env)
            restored: str | None = None
            undo = record.undo
            if undo is not None and undo.kind == "redeploy" and undo.revision is not None:
                heartbeat(f"restoring {undo.revision.digest} in {env}/{undo.slot}")
                self.slots.run_revision(
                    service,
                    env,
                    undo.slot,
                    undo.revision,
                    heartbeat,
                    on_ready=self._wire(service, env, undo.slot, activate=True),
                )
                restored = undo.revision.digest
                changed = True
            elif undo is not None and undo.kind == "switch":
                previous = self.slots.state(service, env, undo.slot)
                if not previous.running():
                    raise verdict(
                        ErrorType.DEPLOY_FAILED,
                        f"cannot switch {env!r} back to {undo.slot}: its process is gone; "
                        f"deploy the previous release ({previous.digest}) again",
                    )
                self.router.set_active(service, env, undo.slot)
                self.router.wait_loaded(env, service)
                restored = previous.digest
                changed = True
            if undo is not None:
                self._save(env, record.model_copy(update={"undo": None}))
            active = self._active_slot(service, env)
            for colour in _COLOURS:
                state = self.slots.state(service, env, colour)
                if colour != active and state.digest == record.release_digest:
                    # The failed release's idle colour takes no traffic; scale it down.
                    self.router.set_backend(service, env, colour, None)
                    self.slots.stop(service, env, colour)
                    changed = True
            if restored is None and active is not None:
                serving = self.slots.state(service, env, active).digest
                # Nothing older exists when the failed release is the first one.
                restored = serving if serving != record.release_digest else None
            return RollbackResult(environment=env, restored_digest=restored, changed=changed)

    # --- restore -------------------------------------------------------------------------

    def restore(self, request: RestoreRequest, heartbeat: Heartbeat) -> RestoreResult:
        """Canary out, then the serving slot on the target's digest: the active blue/green
        colour switched back (or the target run in the idle colour first), the stable slot
        redeployed. What already serves the target is not touched."""
        service, env, target = request.service, request.environment, request.target
        with self._guard(service, env, request.fence):
            changed = self._unwire_canary(service, env)
            active = self._active_slot(service, env)
            colours = request.strategy == "blue_green" or active in _COLOURS
            if target is not None and colours:
                changed |= self._restore_colour(service, env, target, heartbeat)
            elif target is not None:
                revision = _revision(target)
                result = self.slots.run_revision(
                    service,
                    env,
                    "stable",
                    revision,
                    heartbeat,
                    on_ready=self._wire(service, env, "stable", activate=True),
                )
                changed |= result.changed
            active = self._active_slot(service, env)
            serving = self.slots.state(service, env, active).digest if active else None
            # What serves now is this environment's release; a legacy rollback has no undo.
            self._save(env, ReleaseRecord(service=service, release_digest=serving))
            return RestoreResult(environment=env, restored_digest=serving, changed=changed)

    def _restore_colour(
        self, service: str, env: str, target: ReleaseSpec, heartbeat: Heartbeat
    ) -> bool:
        states = {c: self.slots.state(service, env, c) for c in _COLOURS}
        active = self._active_slot(service, env)
        colour = next(
            (c for c, st in states.items() if st.digest == target.digest and st.running()),
            None,
        )
        changed = False
        if colour is None:
            colour = "green" if active == "blue" else "blue"
            heartbeat(f"restoring {target.digest} in {env}/{colour}")
            self.slots.run_revision(
                service,
                env,
                colour,
                _revision(target),
                heartbeat,
                on_ready=self._wire(service, env, colour),
            )
            changed = True
        if active != colour:
            self.router.set_active(service, env, colour)
            self.router.wait_loaded(env, service)
            changed = True
        for other in _COLOURS:
            if other != colour and self.slots.state(service, env, other).digest != target.digest:
                # The rolled-back release's colour takes no traffic: scale it down.
                self.router.set_backend(service, env, other, None)
                changed |= self.slots.stop(service, env, other)
        return changed

    # --- checks --------------------------------------------------------------------------

    def check(self, request: HttpCheckRequest) -> HttpCheckReport:
        """GET each check's path through the environment's entrypoint (or one slot's port)."""
        if request.slot is not None:
            state = self.slots.state(request.service, request.environment, request.slot)
            if not state.running():
                reason = f"slot {request.slot!r} of {request.environment!r} runs no process"
                return HttpCheckReport(
                    passed=0,
                    failed=len(request.checks),
                    failures=[f"GET {c.path}: {reason}" for c in request.checks],
                )
            base = state.endpoint
        else:
            base = self.router.entrypoint_url(request.environment)
        # The service's Host: on an entrypoint shared by several services it picks this one.
        host = {"Host": self.router.host(request.service)}
        return run_http_checks(base, request.checks, self.check_timeout_s, headers=host)

    def endpoint(self, request: EndpointRequest) -> Endpoint:
        """The environment's loopback entrypoint with the service's Host header (what checks
        and generated load send), or one slot's own port."""
        if request.slot is not None:
            state = self.slots.state(request.service, request.environment, request.slot)
            if not state.running():
                raise verdict(
                    ErrorType.CONFIGURATION,
                    f"slot {request.slot!r} of {request.environment!r} runs no process",
                )
            return Endpoint(base_url=state.endpoint.rstrip("/"))
        return Endpoint(
            base_url=self.router.entrypoint_url(request.environment).rstrip("/"),
            headers={"Host": self.router.host(request.service)},
        )


def _revision(target: ReleaseSpec) -> SlotRevision:
    return SlotRevision.of(target.digest, target)
