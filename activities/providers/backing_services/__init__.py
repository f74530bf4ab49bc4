"""Backing services (PostgreSQL, Redis) that a test stage's `services:` starts for its run."""

from activities.providers.backing_services.local import LocalBackingServices

__all__ = ["LocalBackingServices"]
