"""hello-service: a small real HTTP service that Slipway deploys, routes, measures and rolls back.

Its behaviour knobs live in `hello_service/config.json`, shipped inside the wheel, so that a
commit editing that file produces a slow or failing release for the pipeline to catch.
"""

from __future__ import annotations

from hello_service.app import Config, HelloApp, load_config, make_server, service_version

__all__ = ["Config", "HelloApp", "load_config", "make_server", "service_version"]
