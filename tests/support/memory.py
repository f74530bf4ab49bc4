"""A fresh set of in-memory backends per test, with handles to script and inspect them."""

from __future__ import annotations

from activities.wiring.backends import Backends
from contracts.activity import FunctionComplexity
from tests.support.memory_platform import (
    MemoryBackingServices,
    MemoryBuilder,
    MemoryLiveScanner,
    MemoryLoadTester,
    MemoryNotifier,
    MemoryPlatform,
    MemoryScanner,
    MemorySource,
    MemorySuiteRunner,
    ScriptedMetrics,
)

__all__ = ["MemoryBackends"]


class MemoryBackends:
    def __init__(self) -> None:
        self.source = MemorySource()
        self.tests = MemorySuiteRunner()
        self.services = MemoryBackingServices()
        self.builder = MemoryBuilder()
        self.platform = MemoryPlatform()
        self.metrics = ScriptedMetrics()
        self.notifier = MemoryNotifier()
        self.load_tester = MemoryLoadTester()
        self.live_scanner = MemoryLiveScanner()
        self.scanners = {
            name: MemoryScanner(name) for name in ("bandit", "pip-audit", "detect-secrets")
        }
        # SonarQube's gate passes; lizard reports the per-function figures the HEAL7 gate asks
        # for (60 functions: their sum, SonarQube's project `complexity`, is far above 10).
        self.scanners["sonarqube"] = MemoryScanner(
            "sonarqube", metrics={"duplication_pct": 1.0, "complexity_total": 240.0}
        )
        self.scanners["lizard"] = MemoryScanner(
            "lizard",
            metrics={"duplication_pct": 1.0, "complexity": 9.0},
            complexity_counts={1: 30, 4: 20, 7: 8, 9: 2},
            worst_functions=[FunctionComplexity(function="app/server.py:41 _route", complexity=9)],
        )

    def backends(self) -> Backends:
        return Backends(
            source=self.source,
            tests=self.tests,
            builder=self.builder,
            target=self.platform,
            router=self.platform,
            metrics=self.metrics,
            notifier=self.notifier,
            scanners=dict(self.scanners),
            registry=self.builder,
            load=self.metrics,
            services=self.services,
            load_tester=self.load_tester,
            live_scanners={"wapiti": self.live_scanner},
        )
