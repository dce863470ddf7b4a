"""Where to publish: `--to NAME[:ARG]` specs, `-o NAME.KEY=VALUE` overrides, and a project file's `publish:` list.

Project file (evalkeeper.yaml):

    publish:
      - sink: mlflow
        options: {tracking_uri: http://mlflow.internal:5000, experiment: nightly}
      - sink: webhook
        options: {url: "${SLACK_WEBHOOK_URL}"}      # ${VAR} is taken from the environment

Values given as `${VAR}` are read from the environment at publish time, so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evalkeeper.core.errors import ConfigError
from evalkeeper.publish.redact import register_secret
from evalkeeper.publish.registry import SinkInfo, get_sink_class

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Destination:
    """One requested publication: a sink name, raw options, and where the request came from."""

    sink: str
    options: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # "--to hf" or "evalkeeper.yaml: publish[2]" (for error messages)


def parse_target(spec: str) -> Destination:
    """`NAME` or `NAME:ARG`; ARG fills the sink's target option (checked when the sink is known)."""
    name, sep, arg = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty sink name in --to {spec.split(':', 1)[0]!r}",
                          hint="use --to NAME or --to NAME:ARG, e.g. --to tensorboard:runs/tb")
    dest = Destination(sink=name, origin=f"--to {name}")
    if sep:
        dest.options["__target__"] = arg
    return dest


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(dests: list[Destination], overrides: list[str]) -> None:
    """`-o NAME.KEY=VALUE`: set an option on every destination of sink NAME (VALUE parsed as YAML scalar)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        sink, dot, opt = key.partition(".")
        if not sep or not dot or not sink or not opt:
            raise ConfigError(f"bad option override {key!r}", hint="use -o SINK.OPTION=VALUE, e.g. -o hf.private=true")
        targets = [d for d in dests if d.sink == sink]
        if not targets:
            raise ConfigError(f"option override for {sink!r}, but {sink!r} is not among the destinations")
        for d in targets:
            d.options[opt] = _parse_scalar(value)


def _expand_env(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in os.environ:
                raise ConfigError(f"{where}: environment variable {var} is not set")
            secret = os.environ[var]
            register_secret(secret)  # values pulled from the environment are treated as secrets
            return secret
        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand_env(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}") for k, v in value.items()}
    return value


def load_config(path: str | os.PathLike[str]) -> list[Destination]:
    """The `publish:` list of a project file (other top-level sections are for other commands)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(p)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML{line}", path=str(p)) from None
    if not isinstance(data, dict) or "publish" not in data:
        raise ConfigError("no `publish:` list in this file", path=str(p),
                          hint="add `publish:` with items like `- sink: mlflow` and optional `options: {...}`")
    items = data["publish"]
    if not isinstance(items, list):
        raise ConfigError("`publish:` must be a list of {sink, options}", path=str(p))
    dests: list[Destination] = []
    for i, item in enumerate(items):
        where = f"publish[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("sink"), str):
            raise ConfigError(f"{where}: each item needs a `sink:` name", path=str(p))
        unknown = set(item) - {"sink", "options"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; only `sink` and `options`", path=str(p))
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{where}.options must be a mapping", path=str(p))
        dests.append(Destination(sink=item["sink"], options=_expand_env(dict(options), f"{p}: {where}.options"),
                                 origin=f"{p}: {where}"))
    return dests


def format_validation_error(exc: ValidationError) -> str:
    """Name each bad option and what is wrong with it, never echoing the value (it may be a secret)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(x) for x in err["loc"]) or "(options)"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"option {loc!r}: {msg}")
    return "; ".join(lines)


def build_sink(dest: Destination, sinks: dict[str, SinkInfo]) -> Any:
    """Instantiate the sink for `dest` with validated options; ConfigError naming the bad option."""
    cls = get_sink_class(dest.sink, sinks)
    options = dict(dest.options)
    if "__target__" in options:
        target = options.pop("__target__")
        key = getattr(cls, "target_option", None)
        if not key:
            raise ConfigError(f"{dest.origin}: sink {dest.sink!r} takes no :ARG",
                              hint=f"use --to {dest.sink} and set options with -o {dest.sink}.OPTION=VALUE")
        if target:
            options[key] = target
    model: type[BaseModel] = cls.Options
    try:
        validated = model.model_validate(options)
    except ValidationError as exc:
        known = ", ".join(model.model_fields)
        raise ConfigError(f"{dest.origin}: invalid options for sink {dest.sink!r}: {format_validation_error(exc)}",
                          hint=f"options of {dest.sink!r}: {known}") from None
    return cls(validated)
