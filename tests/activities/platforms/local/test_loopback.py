"""The local platform's shared loopback client (`activities.platforms.local.loopback`): one
client for every probe and Traefik call, and still every request reaches whoever listens on
the port now, as a slot's port passes from one release's process to the next."""

from __future__ import annotations

from urllib.parse import urlsplit

from activities.platforms.local import loopback
from tests.support.stub_http import answering, serving


def test_a_port_taken_over_by_a_new_server_is_answered_by_the_new_one() -> None:
    with serving(answering("old release")) as url:
        assert loopback.get(f"{url}/ready", timeout=5).text == "old release"
        port = urlsplit(url).port
        assert port is not None
    with serving(answering("new release"), port=port) as again:
        assert again == url
        assert loopback.get(f"{url}/ready", timeout=5).text == "new release"
