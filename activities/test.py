"""Test runs (a command, its JUnit XML and its coverage XML) and generic command stages."""

from __future__ import annotations

from temporalio import activity

from activities._blocking import run_blocking
from activities.backends import TestRunner
from activities.contracts import (
    ActivityName,
    CommandReport,
    CommandRequest,
    TestReport,
    TestRequest,
)
from activities.observability import activity_log
from activities.providers.command_runner import SubprocessCommandRunner


class TestActivities:
    __test__ = False  # not a pytest test class

    def __init__(self, runner: TestRunner, commands: SubprocessCommandRunner | None = None) -> None:
        self._runner = runner
        self._commands = commands or SubprocessCommandRunner()

    @activity.defn(name=ActivityName.RUN_TESTS)
    async def run_tests(self, request: TestRequest) -> TestReport:
        activity_log(command=request.command).info("run_tests")
        return await run_blocking(lambda progress: self._runner.run(request, progress))

    @activity.defn(name=ActivityName.RUN_COMMAND)
    async def run_command(self, request: CommandRequest) -> CommandReport:
        activity_log(command=request.command).info("run_command")
        commands = self._commands
        return await run_blocking(lambda progress: commands.run(request, progress))
