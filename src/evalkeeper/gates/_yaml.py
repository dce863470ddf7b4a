"""YAML loading that remembers the line of every key and item, so policy errors can name the line."""

from __future__ import annotations

import re
from typing import Any

import yaml

from evalkeeper.core.errors import ConfigError

Path_ = tuple[str | int, ...]


class PolicyLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: `on: ci` stays the key 'on', `no`/`yes` stay strings."""


PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1  # the key's line is where a reader looks
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def load_yaml_with_lines(text: str, source: str = "<policy>") -> tuple[Any, dict[Path_, int]]:
    """Parse YAML safely; return the data and a map from path (keys / list indexes) to 1-based line."""
    try:
        data = yaml.load(text, Loader=PolicyLoader)  # noqa: S506 - a SafeLoader subclass
        node = yaml.compose(text, Loader=PolicyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", path=f"{source}{line}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=source) from None
    lines: dict[Path_, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """Line of `path`, or of its nearest ancestor that has one."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())


def dotted(path: Path_) -> str:
    """`rules[2].max_drop` style rendering of a path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"
