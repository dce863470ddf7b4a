"""Policy files: the schema, the shipped example, and errors that name the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from evalkeeper.core.errors import ConfigError
from evalkeeper.gates import load_policy, parse_policy, policy_schema

ROOT = Path(__file__).resolve().parents[2]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(policy_schema())
    shipped = json.loads((ROOT / "src/evalkeeper/gates/policy.schema.json").read_text())
    assert shipped == policy_schema()


def test_example_policy_and_docs_examples_validate() -> None:
    policy = load_policy(ROOT / "examples/gates.yaml")
    assert policy.name == "release" and policy.correction == "holm" and policy.baseline == "prod"
    assert [r.kind for r in policy.rules] == ["required_tasks", "no_regression", "threshold", "threshold",
                                             "min_samples"]
    assert len(policy.sha256) == 64
    docs = (ROOT / "docs/gates.md").read_text()
    blocks = [b.split("```", 1)[0] for b in docs.split("```yaml\n")[1:]]
    policies = [b for b in blocks if b.lstrip().startswith(("name:", "version:", "rules:", "#"))
                and "rules:" in b]
    assert policies, "docs/gates.md should show policy examples"
    for block in policies:
        parse_policy(block, "docs/gates.md")


def test_yaml_12_booleans_keep_on_as_a_key() -> None:
    policy = parse_policy("rules:\n  - kind: threshold\n    task: no\n    min: 0.5\n    on: ci\n")
    rule = policy.rules[0]
    assert rule.get("on") == "ci" and rule.tasks == ["no"]


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "gates.yaml")
    return info.value.render()


def test_unknown_field_names_its_line() -> None:
    msg = _error("name: x\nrules:\n  - kind: no_regression\n    task: arith\n    max_dorp: 0.02\n")
    assert "gates.yaml:5: rules[0].max_dorp: unknown field 'max_dorp'" in msg
    assert "max_drop" in msg  # the allowed fields are listed


def test_bad_values_name_line_and_field() -> None:
    text = (
        "rules:\n"
        "  - kind: threshold\n"          # 2
        "    task: arith\n"
        "    min: 0.5\n"
        "    on: median\n"               # 5
        "  - kind: no_regression\n"      # 6
        "    max_drop: -1\n"             # 7
        "  - kind: rate\n"               # 8
        "    task: safety\n"
        "  - kind: teleport\n"           # 10
        "  - kind: min_samples\n"        # 11
        "    min: 0\n"                   # 12
        "alpha: 2\n"                     # 13
    )
    msg = _error(text)
    assert "gates.yaml:5: rules[0].on: 'median' is not one of" in msg
    assert "gates.yaml:7: rules[1].max_drop: -1 is less than the minimum of 0" in msg
    assert "gates.yaml:8: rules[2]: needs at least one of 'min' or 'max'" in msg
    assert "gates.yaml:10: rules[3].kind: 'teleport' is not one of" in msg
    assert "gates.yaml:12: rules[4].min: 0 is less than the minimum of 1" in msg
    assert "gates.yaml:13: alpha:" in msg
    # sorted by line, so the file reads top to bottom
    lines = [int(part.split(":")[1]) for part in msg.splitlines() if part.startswith("  gates.yaml:")]
    assert lines == sorted(lines)


def test_semantic_errors_name_lines() -> None:
    msg = _error("rules:\n  - id: a\n    kind: min_samples\n    min: 5\n  - id: a\n    kind: min_samples\n"
                 "    min: 3\n  - kind: threshold\n    task: x\n    tasks: [y]\n    min: 0.9\n    max: 0.1\n")
    assert "gates.yaml:5: rules[1].id: duplicate rule id 'a'" in msg
    assert "give 'task' or 'tasks', not both" in msg
    assert "rules[2].min: min 0.9 is above max 0.1" in msg


def test_yaml_syntax_error_and_wrong_shape() -> None:
    msg = _error("rules:\n  - kind: threshold\n    min: [0.5\n")
    assert msg.startswith("gates.yaml:") and "invalid YAML" in msg
    assert "a policy must be a YAML mapping" in _error("- just\n- a list\n")
    assert "rules" in _error("name: empty\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "nope.yaml")
