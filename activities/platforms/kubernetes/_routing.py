"""Canary weights in an Istio VirtualService, as pure functions over its `spec.http` routes.

The shape we expect is HEAL7's: a route matching the header `canary: "true"` that always
goes to the canary, then a default route (no `match`) split between stable and canary. We only
ever rewrite the default route's weights; every other field (hosts, gateways, retries, the
header route) is kept as it was.

A destination is the stable or canary one by its `subset` (`stable`/`canary`, with a
DestinationRule selecting the `slot` label) or, as in the HEAL7 design, by its host
(`{service}-canary`, `{service}-stable` or `{service}-primary`, optionally fully qualified).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["HttpRoute", "RoutingError", "canary_weight", "parse_http_routes", "with_canary_weight"]

Role = Literal["stable", "canary"]


class RoutingError(ValueError):
    """The VirtualService is not shaped as this router expects; the message says how."""


class _Open(BaseModel):
    # extra="allow": fields we do not model (headers, retries, port, ...) survive the rewrite.
    model_config = ConfigDict(extra="allow")


class _Destination(_Open):
    host: str
    subset: str | None = None


class _RouteDestination(_Open):
    destination: _Destination
    weight: int | None = None


class HttpRoute(_Open):
    """One entry of `spec.http`: an optional match and weighted destinations."""

    match: list[dict[str, Any]] | None = None
    route: list[_RouteDestination] = []


class _Http(BaseModel):
    http: list[HttpRoute]


def parse_http_routes(spec_http: object) -> list[HttpRoute]:
    try:
        return _Http.model_validate({"http": spec_http}).http
    except ValidationError as e:
        raise RoutingError(f"spec.http is not a list of HTTP routes: {e}") from e


def _role(destination: _Destination, service: str) -> Role | None:
    if destination.subset in ("stable", "canary"):
        return "stable" if destination.subset == "stable" else "canary"
    host = destination.host.split(".", 1)[0]
    if host == f"{service}-canary":
        return "canary"
    if host in (f"{service}-stable", f"{service}-primary"):
        return "stable"
    return None


def _default_route(routes: list[HttpRoute]) -> int:
    # Istio evaluates routes in order; the catch-all is the last route without a match.
    for index in range(len(routes) - 1, -1, -1):
        if not routes[index].match:
            return index
    raise RoutingError("there is no default HTTP route (one without `match`) to split")


def canary_weight(routes: list[HttpRoute], service: str) -> int:
    """The percentage of default-route traffic the canary receives now."""
    route = routes[_default_route(routes)].route
    if len(route) == 1:
        # A single destination takes all traffic whatever its weight field says.
        return 100 if _role(route[0].destination, service) == "canary" else 0
    return sum(d.weight or 0 for d in route if _role(d.destination, service) == "canary")


def with_canary_weight(routes: list[HttpRoute], service: str, weight: int) -> list[dict[str, Any]]:
    """`spec.http` with the default route split `100 - weight` / `weight`, as JSON."""
    index = _default_route(routes)
    destinations = routes[index].route
    stable = next((d for d in destinations if _role(d.destination, service) == "stable"), None)
    if stable is None:
        raise RoutingError(
            "the default HTTP route has no stable destination (subset `stable`, or host "
            f"`{service}-stable` / `{service}-primary`)"
        )
    canary = next((d for d in destinations if _role(d.destination, service) == "canary"), None)
    if canary is None:
        # First canary ever: address it the way the stable destination is addressed.
        host = stable.destination.host
        if stable.destination.subset == "stable":
            target = _Destination(host=host, subset="canary")
        else:
            domain = host.partition(".")[2]
            target = _Destination(host=f"{service}-canary" + (f".{domain}" if domain else ""))
        canary = _RouteDestination(destination=target)
    new_route = routes[index].model_copy(
        update={
            "route": [
                stable.model_copy(update={"weight": 100 - weight}),
                canary.model_copy(update={"weight": weight}),
            ]
        }
    )
    rewritten = [*routes[:index], new_route, *routes[index + 1 :]]
    return [r.model_dump(mode="json", exclude_none=True) for r in rewritten]
