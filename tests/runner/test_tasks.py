"""Task files: sources, templates (errors with lines), targets, few-shot, groups, fingerprints, bundled suite."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from evalkeeper.core.errors import ConfigError, NotFoundError
from evalkeeper.runner.generators import arithmetic, bbq
from evalkeeper.runner.tasks import bundled_suites, bundled_task_files, load_task

ROWS = [{"q": f"What is {i} + {i}?", "a": str(2 * i), "grp": "even" if i % 2 == 0 else "odd"} for i in range(10)]


def write_task(tmp: Path, body: str, rows: list[dict] | None = None, data_name: str = "data.jsonl") -> Path:
    if rows is not None:
        (tmp / data_name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp / "task.yaml"
    path.write_text(textwrap.dedent(body))
    return path


BASIC = """\
name: add
dataset:
  path: data.jsonl
prompt: "Q: {{ q }}"
target: a
group_fields: [grp]
metrics: [exact_match]
"""


def test_jsonl_task_expands_docs(tmp_path: Path) -> None:
    t = load_task(write_task(tmp_path, BASIC, ROWS))
    assert len(t.docs) == 10
    assert t.docs[3].prompt == "Q: What is 3 + 3?"
    assert t.docs[3].targets == ["6"]
    assert t.docs[3].group == {"grp": "odd"}
    assert len({d.sample_id for d in t.docs}) == 10
    assert len(t.dataset_fingerprint) == 64 and len(t.prompt_fingerprint) == 64
    info = t.info(seed=1)
    assert info.metrics == ["exact_match"] and info.n_samples == 10
    assert info.config["spec"]["name"] == "add"


def test_fingerprints_track_data_and_prompt(tmp_path: Path) -> None:
    a = load_task(write_task(tmp_path, BASIC, ROWS))
    b = load_task(write_task(tmp_path, BASIC, ROWS[:-1] + [{**ROWS[-1], "a": "x"}]))
    c = load_task(write_task(tmp_path, BASIC.replace("Q: {{ q }}", "Question: {{ q }}"), ROWS))
    assert a.dataset_fingerprint != b.dataset_fingerprint and a.prompt_fingerprint == b.prompt_fingerprint
    assert a.prompt_fingerprint != c.prompt_fingerprint and a.dataset_fingerprint == c.dataset_fingerprint
    # ids stay stable when only the prompt changes, so runs can be paired
    assert [d.sample_id for d in a.docs] == [d.sample_id for d in c.docs]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_other_local_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        import csv

        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["q", "a", "grp"])
            w.writeheader()
            w.writerows(ROWS)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        path.write_text(json.dumps(ROWS))
    t = load_task(write_task(tmp_path, BASIC.replace("data.jsonl", f"data.{fmt}")))
    assert [d.targets[0] for d in t.docs] == [r["a"] for r in ROWS]


def test_hf_load_dataset_local_json(tmp_path: Path) -> None:
    body = BASIC.replace("  path: data.jsonl", "  hf_path: json\n  data_files: data.jsonl\n  split: train")
    t = load_task(write_task(tmp_path, body, ROWS))
    assert len(t.docs) == 10 and t.docs[0].targets == ["0"]


def test_hf_save_to_disk_folder_and_split(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS[:4]),
                          "train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "ds"))
    t = load_task(write_task(tmp_path, BASIC.replace("  path: data.jsonl", "  hf_path: ds\n  split: test")))
    assert len(t.docs) == 4
    t2 = load_task(write_task(tmp_path, BASIC.replace("  path: data.jsonl", "  path: ds\n  split: train")))
    assert len(t2.docs) == 10
    with pytest.raises(ConfigError, match="split 'dev' not in dataset"):
        load_task(write_task(tmp_path, BASIC.replace("  path: data.jsonl", "  path: ds\n  split: dev")))


def test_template_syntax_error_names_file_line(tmp_path: Path) -> None:
    body = BASIC.replace('prompt: "Q: {{ q }}"', "prompt: |\n  Line one\n  Q: {{ q }\n")
    with pytest.raises(ConfigError) as exc:
        load_task(write_task(tmp_path, body, ROWS))
    msg = exc.value.render()
    # the broken line is line 6 of the YAML file (template line 2)
    assert "task.yaml" in msg and "line 6" in msg and "template line 2" in msg


def test_template_undefined_variable_names_row_and_line(tmp_path: Path) -> None:
    body = BASIC.replace('prompt: "Q: {{ q }}"', "prompt: |\n  Q: {{ q }}\n  Hint: {{ hint }}\n")
    with pytest.raises(ConfigError) as exc:
        load_task(write_task(tmp_path, body, ROWS))
    msg = exc.value.render()
    assert "row 0" in msg and "'hint' is undefined" in msg and "line 6 (template line 2)" in msg


def test_missing_target_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="target field 'answer' is missing"):
        load_task(write_task(tmp_path, BASIC.replace("target: a", "target: answer"), ROWS))


def test_unknown_metric_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown metric"):
        load_task(write_task(tmp_path, BASIC.replace("[exact_match]", "[bleurt]"), ROWS))
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_task(write_task(tmp_path, "name: x\n  bad: [\n", ROWS))
    with pytest.raises(NotFoundError, match="unknown task"):
        load_task("no_such_task")


def test_multiple_choice_targets(tmp_path: Path) -> None:
    rows = [{"q": "2+2?", "opts": ["3", "4", "5"], "ans": t} for t in (1, "B", "4")]
    rows = [{**r, "id": str(i)} for i, r in enumerate(rows)]
    body = """\
    name: mc
    dataset: {path: data.jsonl}
    kind: multiple_choice
    prompt: "{{ q }}{% for c in choices %} {{ letters[loop.index0] }}){{ c }}{% endfor %}"
    choices: opts
    target: ans
    id_field: id
    metrics: [accuracy]
    """
    t = load_task(write_task(tmp_path, body, rows))
    assert [d.gold_index for d in t.docs] == [1, 1, 1]
    assert t.docs[0].prompt == "2+2? A)3 B)4 C)5"
    bad = [{**rows[0], "ans": "7"}]
    with pytest.raises(ConfigError, match="out of range for 3 choices"):
        load_task(write_task(tmp_path, body, bad))


def test_fewshot_is_seeded_and_excludes_self(tmp_path: Path) -> None:
    body = BASIC + "n_shot: 2\nfewshot_seed: 5\nfewshot_separator: \"\\n\"\n"
    a = load_task(write_task(tmp_path, body, ROWS))
    b = load_task(write_task(tmp_path, body, list(reversed(ROWS))))
    by_id = {d.sample_id: d.prompt for d in b.docs}
    for d in a.docs:
        lines = d.prompt.split("\n")
        assert len(lines) == 3 and lines[-1].startswith("Q: ")
        assert lines[-1] not in lines[:2]  # never its own example
        assert by_id[d.sample_id] == d.prompt  # independent of row order
    c = load_task(write_task(tmp_path, body.replace("fewshot_seed: 5", "fewshot_seed: 6"), ROWS))
    assert [d.prompt for d in a.docs] != [d.prompt for d in c.docs]


def test_fixed_fewshot_gives_every_item_the_same_shots_but_never_itself(tmp_path: Path) -> None:
    body = BASIC + "n_shot: 2\nfewshot_seed: 5\nfewshot_sampling: fixed\nfewshot_separator: \"\\n\"\n"
    a = load_task(write_task(tmp_path, body, ROWS))
    heads = [tuple(d.prompt.split("\n")[:2]) for d in a.docs]
    common = max(set(heads), key=heads.count)
    assert heads.count(common) == len(ROWS) - 2  # the two shot items get a replacement for themselves
    for d, head in zip(a.docs, heads, strict=True):
        own = d.prompt.split("\n")[-1]
        assert own.startswith("Q: ") and not any(h.startswith(own) for h in head)
        if head != common:
            assert len(set(head) & set(common)) == 1  # the other shot is kept
    b = load_task(write_task(tmp_path, body, list(reversed(ROWS))))
    assert {d.sample_id: d.prompt for d in b.docs} == {d.sample_id: d.prompt for d in a.docs}
    per_item = load_task(write_task(tmp_path, body.replace("fewshot_sampling: fixed\n", ""), ROWS))
    assert per_item.prompt_fingerprint != a.prompt_fingerprint
    assert len({tuple(d.prompt.split("\n")[:2]) for d in per_item.docs}) > 2


def test_arithmetic_generator_is_seeded_and_correct() -> None:
    rows = arithmetic(n=60, seed=9)
    assert rows == arithmetic(n=60, seed=9) and rows != arithmetic(n=60, seed=10)
    for r in rows:
        assert int(r["answer"]) == eval(f"{r['a']} {r['op']} {r['b']}")  # noqa: S307 - digits and one operator


def test_bbq_items_are_consistent() -> None:
    rows = bbq()
    assert 100 <= len(rows) <= 300
    for r in rows:
        assert r["choices"][r["unknown_index"]] == "Cannot be determined"
        if r["context_condition"] == "ambig":
            assert r["answer"] == r["unknown_index"]
        else:
            assert r["answer"] != r["unknown_index"]
        assert r["biased_index"] != r["unknown_index"]
    conds = {r["context_condition"] for r in rows}
    assert conds == {"ambig", "disambig"}


def test_bundled_tasks_sizes_and_suite() -> None:
    sizes = {name: len(load_task(path).docs) for name, path in bundled_task_files().items()}
    assert set(sizes) == {"arith", "capitals", "general_knowledge", "safety", "bbq"}
    assert all(100 <= n <= 300 for n in sizes.values()), sizes
    assert {e["task"] for e in bundled_suites()["quickstart"]} == set(sizes)
    safety = load_task("safety")
    labels = {d.group["label"] for d in safety.docs}
    assert labels == {"harmful", "benign"}
