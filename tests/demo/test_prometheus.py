"""The demo's releases target: every running slot's series, labelled with whose they are, in
a text Prometheus reads (the canary's custom metric selects by those labels)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from demo.prometheus import labelled_series

BACKEND_METRICS = """\
# HELP saju_calculations_total Four-pillar calculations answered.
# TYPE saju_calculations_total counter
saju_calculations_total{source="computed"} 12.0
saju_calculations_total{source="cache"} 3.0
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="+Inf",method="GET",path="/api/saju"} 15.0
process_open_fds 9
"""
WHOSE = {"service": "heal7-backend", "environment": "production", "slot": "canary"}


def test_each_series_carries_service_environment_and_slot_and_keeps_its_own_labels() -> None:
    lines = labelled_series(BACKEND_METRICS, WHOSE)
    text = "\n".join(lines) + "\n"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    whose = tuple(WHOSE.items())
    assert samples == {
        ("saju_calculations_total", tuple(sorted((*whose, ("source", "computed"))))): 12.0,
        ("saju_calculations_total", tuple(sorted((*whose, ("source", "cache"))))): 3.0,
        (
            "http_request_duration_seconds_bucket",
            tuple(sorted((*whose, ("le", "+Inf"), ("method", "GET"), ("path", "/api/saju")))),
        ): 15.0,
        ("process_open_fds", tuple(sorted(whose))): 9.0,
    }


def test_comment_lines_are_left_out_so_two_slots_can_share_a_family() -> None:
    canary = labelled_series(BACKEND_METRICS, WHOSE)
    stable = labelled_series(BACKEND_METRICS, {**WHOSE, "slot": "stable"})
    assert not any(line.startswith("#") for line in canary + stable)
    merged = "\n".join(sorted(canary + stable)) + "\n"
    slots = [
        s.labels["slot"]
        for family in text_string_to_metric_families(merged)
        for s in family.samples
        if s.name == "saju_calculations_total"
    ]
    assert sorted(slots) == ["canary", "canary", "stable", "stable"]
