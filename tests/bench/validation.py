"""Benchmark 5: `slipway validate` on long chains of stages, from a YAML file to a spec.

Validation must stay linear (issue 9): a 10,000-stage chain, listed in any order, is checked
whole in under 2 s (and refused for its length alone: a run carries at most MAX_STAGES). The
chain is the worst shape for ancestry (every stage has all the earlier ones before it);
listing it in reverse defeats any walk that relies on definition order.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from contracts.definition.limits import MAX_STAGES
from contracts.definition.loading import load_pipeline
from contracts.definition.model import DefinitionError

__all__ = ["GOAL_S", "chain_yaml", "time_validation"]

GOAL_S = 2.0


def chain_yaml(stages: int, reverse: bool) -> str:
    lines = ["- {name: s0, kind: checkout}"] + [
        f"- {{name: s{i}, kind: checkout, needs: [s{i - 1}]}}" for i in range(1, stages)
    ]
    if reverse:
        lines.reverse()
    return "name: chain\nservice: {name: chain}\nstages:\n" + "\n".join(lines) + "\n"


def time_validation(stages: int, reverse: bool, repeats: int = 3) -> float:
    """Median seconds to load and validate the chain from a file."""
    with tempfile.TemporaryDirectory(prefix="slipway-validate-") as tmp:
        path = Path(tmp) / "chain.yaml"
        path.write_text(chain_yaml(stages, reverse), encoding="utf-8")
        took = []
        for _ in range(repeats):
            began = time.perf_counter()
            try:
                spec = load_pipeline(path)
            except DefinitionError as err:
                took.append(time.perf_counter() - began)
                # Only a chain too long to run is refused, and only for that.
                if stages <= MAX_STAGES or [p.field for p in err.problems] != ["stages"]:
                    raise
                continue
            took.append(time.perf_counter() - began)
            assert len(spec.stages) == stages
    return statistics.median(took)
