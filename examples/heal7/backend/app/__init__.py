"""HEAL7 backend: the saju (four pillars) calculator, as a small HTTP service.

It stores calculations in PostgreSQL, caches them in Redis and exposes `/health`, `/ready`
and Prometheus `/metrics`; `python -m app --port N` serves it.
"""

from __future__ import annotations

from app.saju import FourPillars, Pillar, four_pillars

__all__ = ["FourPillars", "Pillar", "four_pillars"]
