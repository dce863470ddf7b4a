"""Sink discovery through the `evalkeeper.sinks` entry-point group (built-ins are registered the same way).

A third-party package adds a destination by declaring, in its own pyproject.toml:

    [project.entry-points."evalkeeper.sinks"]
    mysink = "my_package.sink:MySink"
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from evalkeeper.core.errors import ConfigError

ENTRY_POINT_GROUP = "evalkeeper.sinks"


@dataclass
class SinkInfo:
    """One discovered sink: where it came from, and its class (or why it could not be loaded)."""

    name: str
    value: str  # "module:attr"
    distribution: str | None
    version: str | None
    cls: Any = None
    error: str | None = None

    @property
    def builtin(self) -> bool:
        return self.value.startswith("evalkeeper.")

    def option_specs(self) -> list[dict[str, Any]]:
        """The declared options: name, type, default, required, description."""
        model: type[BaseModel] | None = getattr(self.cls, "Options", None)
        if model is None:
            return []
        specs = []
        for key, f in model.model_fields.items():
            ann = f.annotation
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            specs.append({"name": key, "type": type_name, "required": f.is_required(),
                          "default": None if f.is_required() else _jsonable(f.get_default(call_default_factory=True)),
                          "description": f.description or ""})
        return specs


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _check_sink_class(cls: Any) -> str | None:
    for attr in ("Options", "publish"):
        if not hasattr(cls, attr):
            return f"has no {attr!r} attribute"
    options = cls.Options
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        return "Options is not a pydantic model"
    return None


def discover_sinks() -> dict[str, SinkInfo]:
    """All sinks registered in the environment, by name. A broken plugin is reported, not fatal."""
    found: dict[str, SinkInfo] = {}
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (not e.value.startswith("evalkeeper."),
                                                                               e.name)):
        if ep.name in found:  # first registration wins; built-ins sort first
            continue
        dist = getattr(ep, "dist", None)
        info = SinkInfo(name=ep.name, value=ep.value, distribution=dist.name if dist else None,
                        version=dist.version if dist else None)
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - a third-party plugin may fail in any way
            info.error = f"cannot load {ep.value}: {type(exc).__name__}: {exc}"
        else:
            problem = _check_sink_class(cls)
            if problem:
                info.error = f"{ep.value} {problem}"
            else:
                info.cls = cls
        found[ep.name] = info
    return found


def get_sink_class(name: str, sinks: dict[str, SinkInfo] | None = None) -> Any:
    """The sink class registered as `name`; a clear error if unknown or broken."""
    sinks = discover_sinks() if sinks is None else sinks
    info = sinks.get(name)
    if info is None:
        known = ", ".join(sorted(sinks)) or "none"
        raise ConfigError(f"unknown sink {name!r} (installed sinks: {known})",
                          hint="`evalkeeper sinks list` shows them; third-party sinks register under the "
                               f"{ENTRY_POINT_GROUP!r} entry-point group")
    if info.cls is None:
        raise ConfigError(f"sink {name!r} is installed but broken: {info.error}")
    return info.cls
