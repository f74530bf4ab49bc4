"""Metrics sources for canary analysis and the monitor."""
