"""The backend registry: one adapter per serving stack, looked up by name.

The data plane knows backends only through this registry, so a third stack is one adapter
module (a `Backend` subclass decorated with `register`, naming its URL setting in `url_field`)
plus that setting; nothing above it names a stack.
"""

from __future__ import annotations

from gateway.backends.base import REGISTRY, Backend, BackendError, register
from gateway.replicas import parse_sources
from gateway.settings import GatewaySettings

# importing the adapters registers them
from gateway.backends import kserve as _kserve, tfserving as _tfserving, torchserve as _torchserve  # noqa: E402,F401

__all__ = ["REGISTRY", "Backend", "BackendError", "check", "create", "register"]


def check(settings: GatewaySettings) -> None:
    """The backend names in the settings, checked against the registry before anything starts:
    a ValueError that names the variable, the bad name and the choices."""
    names = settings.backend_list
    if not names:
        raise ValueError("TWINSERVE_GATEWAY_BACKENDS is empty: enable at least one backend")
    for variable, given in (("TWINSERVE_GATEWAY_BACKENDS", names), ("TWINSERVE_GATEWAY_WEIGHTS", list(settings.weight_map))):
        unknown = [n for n in given if n not in REGISTRY]
        if unknown:
            raise ValueError(f"{variable} names unknown backend(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    for name in names:
        field = REGISTRY[name].url_field
        variable = f"TWINSERVE_GATEWAY_{field.upper()}"
        try:
            parse_sources(getattr(settings, field), variable)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    if settings.primary not in names:
        raise ValueError(f"TWINSERVE_GATEWAY_PRIMARY={settings.primary!r} is not an enabled backend; choose one of {', '.join(names)}")


def create(settings: GatewaySettings) -> dict[str, Backend]:
    """The enabled backends, in the configured order (which is also the failover order)."""
    check(settings)
    return {n: REGISTRY[n](settings) for n in settings.backend_list}
