"""Test runs: a command, its JUnit XML and its coverage XML."""

from __future__ import annotations

from temporalio import activity

from activities._blocking import run_blocking
from activities.backends import TestRunner
from activities.contracts import ActivityName, TestReport, TestRequest
from activities.observability import activity_log


class TestActivities:
    __test__ = False  # not a pytest test class

    def __init__(self, runner: TestRunner) -> None:
        self._runner = runner

    @activity.defn(name=ActivityName.RUN_TESTS)
    async def run_tests(self, request: TestRequest) -> TestReport:
        activity_log(command=request.command).info("run_tests")
        return await run_blocking(lambda progress: self._runner.run(request, progress))
