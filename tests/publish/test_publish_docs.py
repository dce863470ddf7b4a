"""The docs cannot drift: every built-in sink and every one of its options is documented."""

from __future__ import annotations

from pathlib import Path

from evalkeeper.publish import discover_sinks

DOC = Path(__file__).resolve().parents[2] / "docs" / "publishing.md"


def test_every_builtin_sink_and_option_is_documented() -> None:
    text = DOC.read_text()
    builtins = [info for info in discover_sinks().values() if info.builtin]
    assert {i.name for i in builtins} == {"hf", "mlflow", "wandb", "tensorboard", "webhook"}
    for info in builtins:
        section = text.split(f"### `{info.name}`", 1)
        assert len(section) == 2, f"no section for sink {info.name}"
        body = section[1].split("\n### ", 1)[0]
        for spec in info.option_specs():
            assert f"| `{spec['name']}` |" in body, f"option {info.name}.{spec['name']} is not documented"
        target = info.cls.target_option
        assert f"`{info.name}" in text and (target is None or f"`{target}`" in text)
