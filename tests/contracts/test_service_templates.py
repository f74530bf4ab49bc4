"""`services:` entries and `{services.kind.field}` templates, shared by validation and the
test activity."""

from __future__ import annotations

import pytest

from contracts.definition.service_templates import (
    Endpoint,
    ServiceWanted,
    parse_service,
    render,
    template_references,
    version_satisfies,
)

PG = Endpoint("postgres", "127.0.0.1", 54321, "postgres", "s3cret", "postgres", "pg://x", "16.2")


def test_entries_read_as_kind_and_version() -> None:
    assert parse_service("postgres:16") == ServiceWanted("postgres", "16")
    assert parse_service("redis") == ServiceWanted("redis", None)
    assert str(parse_service("redis:7.2")) == "redis:7.2"


@pytest.mark.parametrize(
    ("entry", "says"),
    [("mysql:8", "one of: postgres, redis"), ("redis:latest", "must be numbers")],
)
def test_bad_entries_say_what_is_accepted(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_service(entry)


def test_templates_render_endpoint_fields_and_keep_literal_braces() -> None:
    text = "postgresql://{services.postgres.user}@h:{services.postgres.port}/db?x={{y}}"
    assert template_references(text) == [("postgres", "user"), ("postgres", "port")]
    assert render(text, {"postgres": PG}) == "postgresql://postgres@h:54321/db?x={y}"


@pytest.mark.parametrize(
    "text", ["{services.postgres.socket}", "{sha}", "{services.mysql.port}", "{services.redis}"]
)
def test_unknown_placeholders_are_refused_naming_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder .*host\|port"):
        template_references(text)


def test_versions_are_honoured_by_their_releases_only() -> None:
    assert version_satisfies("16", "16.2")
    assert version_satisfies("7", "7.0.15")
    assert version_satisfies(None, "6.2.6")
    assert not version_satisfies("7", "6.2.6")
    assert not version_satisfies("1", "16.2")
