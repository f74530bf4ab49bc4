"""What every kind of backing service provides to the local starter."""

from __future__ import annotations

from typing import Protocol

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.processes import ServerProcess
from contracts.definition.service_templates import Endpoint

__all__ = ["Installation", "ServerKind"]


class ServerKind(Protocol):
    kind: str
    stop_signal: int

    def installations(self) -> list[Installation]:
        """Installed servers of this kind, preferred first."""
        ...

    def launch(
        self,
        installation: Installation,
        server: ServerProcess,
        port: int,
        password: str | None = None,
    ) -> Endpoint:
        """Prepare `server.data_dir` and start the server on `port` (with `password`, else a
        random one)."""
        ...

    def check(self, installation: Installation, endpoint: Endpoint) -> str | None:
        """The version the running server reports, or None while it does not answer."""
        ...
