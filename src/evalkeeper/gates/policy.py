"""Gate policies: YAML files validated against `policy.schema.json`, errors that name line and field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from evalkeeper.core.errors import ConfigError
from evalkeeper.core.ids import sha256_bytes

from ._yaml import Path_, dotted, line_of, load_yaml_with_lines

RuleKind = Literal["threshold", "rate", "no_regression", "min_samples", "required_tasks"]


@dataclass(frozen=True)
class Rule:
    """One rule as written; `line` points back into the policy file for error messages."""

    kind: RuleKind
    id: str
    index: int
    line: int | None
    spec: dict[str, Any]
    severity: Literal["error", "warning"] = "error"

    def get(self, key: str, default: Any = None) -> Any:
        return self.spec.get(key, default)

    @property
    def tasks(self) -> list[str]:
        """Task selectors of the rule (may contain '*')."""
        if "tasks" in self.spec:
            return list(self.spec["tasks"])
        if "task" in self.spec:
            return [str(self.spec["task"])]
        return ["*"]


@dataclass(frozen=True)
class Policy:
    rules: list[Rule]
    name: str = "gate"
    alpha: float = 0.05
    correction: Literal["holm", "bh", "none"] = "holm"
    baseline: str | None = None
    power: float = 0.8
    source: str = "<policy>"
    sha256: str = ""
    lines: dict[Path_, int] = field(default_factory=dict, repr=False)

    def where(self, rule: Rule, key: str | None = None) -> str:
        """`gates.yaml:14 rules[2].task` — used by evaluation-time errors (unknown task, metric...)."""
        path: Path_ = ("rules", rule.index) + ((key,) if key else ())
        line = line_of(self.lines, path)
        return f"{self.source}:{line} {dotted(path)}" if line else f"{self.source} {dotted(path)}"


@lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (shipped as package data)."""
    text = resources.files("evalkeeper.gates").joinpath("policy.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _schema_errors(data: Any, lines: dict[Path_, int], source: str) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(policy_schema())
    messages: list[tuple[int, str]] = []
    seen: set[str] = set()
    for err in validator.iter_errors(data):
        for leaf in _leaves(err):
            path: Path_ = tuple(leaf.absolute_path)
            text = leaf.message
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
                allowed = set(leaf.schema.get("properties", {}))
                for extra in sorted(k for k in leaf.instance if k not in allowed):
                    p = (*path, extra)
                    hint = f"allowed: {', '.join(sorted(allowed))}"
                    _add(messages, seen, lines, p, source, f"unknown field {extra!r} ({hint})")
                continue
            if leaf.validator == "anyOf" and path and path[0] == "rules":
                text = "needs at least one of 'min' or 'max'"
            _add(messages, seen, lines, path, source, text)
    return [m for _, m in sorted(messages, key=lambda t: t[0])]


def _leaves(err: Any) -> list[Any]:
    """Most specific errors: descend into allOf/if-then wrappers to the failing field."""
    if err.validator in ("allOf", "if", "$ref") and err.context:
        out: list[Any] = []
        for sub in err.context:
            out.extend(_leaves(sub))
        return out
    return [err]


def _add(messages: list[tuple[int, str]], seen: set[str], lines: dict[Path_, int], path: Path_,
         source: str, text: str) -> None:
    line = line_of(lines, path) or 0
    msg = f"{source}:{line}: {dotted(path)}: {text}"
    if msg not in seen:
        seen.add(msg)
        messages.append((line, msg))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy text and build a Policy; raises ConfigError listing every problem with its line."""
    data, lines = load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError("a policy must be a YAML mapping with a 'rules' list", path=source,
                          hint="see docs/gates.md or examples/gates.yaml")
    errors = _schema_errors(data, lines, source)
    rules: list[Rule] = []
    ids: dict[str, int] = {}
    if not errors:
        for i, spec in enumerate(data["rules"]):
            rid = str(spec.get("id") or _default_id(spec, i))
            if rid in ids:
                line = line_of(lines, ("rules", i, "id")) or 0
                errors.append(f"{source}:{line}: {dotted(('rules', i, 'id'))}: duplicate rule id {rid!r} "
                              f"(also rules[{ids[rid]}])")
            ids[rid] = i
            if "task" in spec and "tasks" in spec:
                line = line_of(lines, ("rules", i, "tasks")) or 0
                errors.append(f"{source}:{line}: {dotted(('rules', i))}: give 'task' or 'tasks', not both")
            lo, hi = spec.get("min"), spec.get("max")
            if spec["kind"] in ("threshold", "rate") and lo is not None and hi is not None and lo > hi:
                line = line_of(lines, ("rules", i, "min")) or 0
                errors.append(f"{source}:{line}: {dotted(('rules', i, 'min'))}: min {lo} is above max {hi}")
            rules.append(Rule(kind=spec["kind"], id=rid, index=i, line=line_of(lines, ("rules", i)),
                              spec=dict(spec), severity=spec.get("severity", "error")))
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ConfigError(f"invalid gate policy ({len(errors)} problem(s)):\n  {shown}{more}", path=source,
                          hint="see docs/gates.md for every rule kind and field")
    return Policy(rules=rules, name=str(data.get("name", "gate")), alpha=float(data.get("alpha", 0.05)),
                  correction=data.get("correction", "holm"), baseline=data.get("baseline"),
                  power=float(data.get("power", 0.8)), source=source,
                  sha256=sha256_bytes(text.encode("utf-8")), lines=lines)


def _default_id(spec: dict[str, Any], index: int) -> str:
    parts = [spec["kind"]]
    if "task" in spec:
        parts.append(str(spec["task"]).replace("*", "all"))
    if "metric" in spec:
        parts.append(str(spec["metric"]))
    parts.append(str(index))
    return ":".join(parts)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; its sha256 (of the exact bytes) goes into the audit log."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError("policy file not found", path=str(p), hint="pass --policy gates.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read policy file: {exc.strerror}", path=str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("policy file is not UTF-8 text", path=str(p)) from None
    policy = parse_policy(text, str(p))
    return policy
