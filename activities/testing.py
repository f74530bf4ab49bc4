"""Test runs (a command, its JUnit XML and its coverage XML, with its backing services) and
generic command stages."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.providers.testing.command_runner import SubprocessCommandRunner
from activities.wiring.backends import BackingServices, Heartbeat, SuiteRunner
from activities.wiring.observability import activity_log
from contracts.activity import (
    ActivityName,
    CommandReport,
    CommandRequest,
    SuiteReport,
    SuiteRequest,
)
from contracts.definition.service_templates import Endpoint, render
from contracts.errors import ErrorType, verdict


class SuiteActivities:
    def __init__(
        self,
        runner: SuiteRunner,
        services: BackingServices | None = None,
        commands: SubprocessCommandRunner | None = None,
    ) -> None:
        self._runner = runner
        self._services = services
        self._commands = commands or SubprocessCommandRunner()

    @activity.defn(name=ActivityName.RUN_TESTS)
    async def run_tests(self, request: SuiteRequest) -> SuiteReport:
        activity_log(command=request.command, services=request.services).info("run_tests")
        return await run_blocking(lambda progress: self._run(request, progress))

    @activity.defn(name=ActivityName.RUN_COMMAND)
    async def run_command(self, request: CommandRequest) -> CommandReport:
        activity_log(command=request.command).info("run_command")
        commands = self._commands
        return await run_blocking(lambda progress: commands.run(request, progress))

    def _run(self, request: SuiteRequest, progress: Heartbeat) -> SuiteReport:
        if not request.services:
            return self._runner.run(_rendered(request, {}), progress)
        if self._services is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"The test stage asks for {', '.join(request.services)} but this worker "
                "starts no backing services.",
            )
        # The servers live exactly as long as the test command: stopped and their data
        # deleted when the block ends, also when the run fails or is cancelled.
        with self._services.started(request.services, progress) as started:
            report = self._runner.run(_rendered(request, started.endpoints), progress)
        return report.model_copy(update={"services": started.notes})


def _rendered(request: SuiteRequest, endpoints: Mapping[str, Endpoint]) -> SuiteRequest:
    """The request with its `env` templates filled in (`{{` stands for a literal brace)."""
    env = {name: render(value, endpoints) for name, value in request.env.items()}
    return request.model_copy(update={"env": env})
