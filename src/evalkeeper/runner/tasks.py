"""Task specs (YAML, documented in docs/tasks.md) and their expansion into prompt-ready documents.

A task file names a dataset, a Jinja2 prompt template, the target field, optional choices, metrics,
n-shot settings and group-attribute fields. `load_task` validates all of that up front and returns
documents with stable sample ids, plus the dataset and prompt fingerprints that go into the run.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalkeeper.core.errors import ConfigError, NotFoundError
from evalkeeper.core.ids import fingerprint, sha256_text, stable_sample_id
from evalkeeper.core.records import TaskInfo
from evalkeeper.runner.metrics import HIGHER_IS_BETTER, check_metric_names, metric_keys
from evalkeeper.runner.sources import DatasetSpec, load_rows

SUITES_DIR = Path(__file__).parent / "suites"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class GenerationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(default=32, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)


class TaskSpec(BaseModel):
    """One task file. Field meanings are documented in docs/tasks.md."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    version: str = "1"
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    dataset: DatasetSpec
    kind: Literal["generate", "multiple_choice"] = "generate"
    prompt: str
    system_prompt: str | None = None
    chat: bool = True
    target: str
    choices: str | list[str] | None = None
    id_field: str | None = None
    group_fields: list[str] = Field(default_factory=list)
    metadata_fields: list[str] = Field(default_factory=list)
    metrics: list[str]
    answer_regex: str | None = None
    n_shot: int = Field(default=0, ge=0)
    fewshot_seed: int = 1234
    # per_item: each item draws its own shots (lm-eval style); fixed: one seeded set for every item
    # (HELM style; the shared prompt head is then computed once per batch by local models)
    fewshot_sampling: Literal["per_item", "fixed"] = "per_item"
    fewshot_separator: str = "\n\n"
    fewshot_target: str | None = None  # template for a shot's answer; default: the target text
    generation: GenerationSpec = Field(default_factory=lambda: GenerationSpec())


@dataclass
class Doc:
    """One prompt-ready item of a task."""

    sample_id: str
    prompt: str
    targets: list[str]
    choices: list[str] | None = None
    gold_index: int | None = None
    group: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedTask:
    spec: TaskSpec
    docs: list[Doc]
    source: str  # the task file, or "bundled:<name>"
    dataset_fingerprint: str
    prompt_fingerprint: str

    def info(self, seed: int | None, n: int | None = None) -> TaskInfo:
        keys = metric_keys(self.spec.metrics)
        return TaskInfo(
            name=self.spec.name, version=self.spec.version, dataset_fingerprint=self.dataset_fingerprint,
            prompt_fingerprint=self.prompt_fingerprint, n_shot=self.spec.n_shot, seed=seed, metrics=keys,
            higher_is_better={k: HIGHER_IS_BETTER[k] for k in keys if k in HIGHER_IS_BETTER},
            n_samples=len(self.docs) if n is None else n,
            config={"spec": self.spec.model_dump(mode="json"), "source": self.source},
        )


# ---------------------------------------------------------------- templates


def _template_env() -> Any:
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def compile_template(source: str, what: str, where: str, line_offset: int = 0) -> Any:
    """Compile a Jinja2 template; a syntax error names the line in the task file."""
    import jinja2

    try:
        return _template_env().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        line = exc.lineno or 0
        raise ConfigError(f"{what} template error at line {line + line_offset} "
                          f"(template line {line}): {exc.message}", path=where) from None


def _fast_render(template: Any, context: dict[str, Any]) -> str:
    """`template.render(**context)` without rebuilding the globals ChainMap per row (most of its cost)."""
    from jinja2.runtime import new_context

    plain = template.__dict__.get("_evalkeeper_globals")
    if plain is None:
        plain = template._evalkeeper_globals = dict(template.globals)
    ctx = new_context(template.environment, template.name, template.blocks, context, False, plain)
    return str(template.environment.concat(template.root_render_func(ctx)))


def render(template: Any, context: dict[str, Any], what: str, where: str, line_offset: int, row: int) -> str:
    import jinja2

    try:
        try:
            return _fast_render(template, context)
        except Exception:  # noqa: BLE001 - re-rendered the normal way for jinja's error with template lines
            return str(template.render(**context))
    except jinja2.TemplateError as exc:
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__))
                     if f.filename == "<template>"), None)
        at = f" at line {line + line_offset} (template line {line})" if line else ""
        raise ConfigError(f"{what} template failed on row {row}{at}: {exc}", path=where,
                          hint=f"row fields: {sorted(k for k in context if k not in ('choices', 'letters'))}"
                          ) from None


# ---------------------------------------------------------------- loading


def _value_lines(text: str) -> dict[str, int]:
    """1-based line where each top-level key's value text starts (block scalars: the next line)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            style = getattr(value, "style", None)
            lines[str(key.value)] = value.start_mark.line + 1 + (1 if style in ("|", ">") else 0)
    return lines


def parse_task_file(path: Path) -> tuple[TaskSpec, dict[str, int]]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotFoundError(f"cannot read task file: {exc.strerror}", path=where) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{at}: {getattr(exc, 'problem', exc)}", path=where) from None
    if not isinstance(data, dict):
        raise ConfigError("a task file must be a YAML mapping", path=where)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid task spec: {problems}", path=where,
                          hint="see docs/tasks.md for the task file format") from None
    check_metric_names(spec.metrics, where)
    return spec, _value_lines(text)


def bundled_task_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml")) if not p.name.endswith(".suite.yaml")}


def bundled_suites() -> dict[str, list[dict[str, Any]]]:
    """Suite name -> list of {task, limit?} entries (`suites/<name>.suite.yaml`)."""
    out = {}
    for p in sorted(SUITES_DIR.glob("*.suite.yaml")):
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        out[p.name.removesuffix(".suite.yaml")] = [e if isinstance(e, dict) else {"task": e}
                                                   for e in data["tasks"]]
    return out


def resolve_task_path(ref: str, search_dirs: list[Path] | None = None) -> Path:
    """A task reference is a YAML path or a task name (user task folders first, then bundled)."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        p = Path(ref).expanduser()
        if not p.exists():
            raise NotFoundError(f"task file not found: {ref}")
        return p
    for d in search_dirs or []:
        for suffix in (".yaml", ".yml"):
            if (d / f"{ref}{suffix}").exists():
                return d / f"{ref}{suffix}"
    bundled = bundled_task_files()
    if ref in bundled:
        return bundled[ref]
    raise NotFoundError(f"unknown task {ref!r}", hint=f"bundled tasks: {', '.join(sorted(bundled))}; "
                        "or pass a path to a task YAML file ('evalkeeper tasks list')")


def _choices_for(spec: TaskSpec, row: dict[str, Any], where: str, i: int) -> list[str] | None:
    if spec.choices is None:
        return None
    if isinstance(spec.choices, list):
        return [str(c) for c in spec.choices]
    if spec.choices not in row:
        raise ConfigError(f"row {i}: choices field {spec.choices!r} missing", path=where,
                          hint=f"row fields: {sorted(row)}")
    value = row[spec.choices]
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)  # CSV files carry lists as JSON text
        except ValueError:
            raise ConfigError(f"row {i}: choices field {spec.choices!r} is not a list", path=where) from None
    if not isinstance(value, list) or len(value) < 2:
        raise ConfigError(f"row {i}: choices field {spec.choices!r} must be a list of >= 2", path=where)
    return [str(c) for c in value]


def _gold_index(value: Any, choices: list[str], where: str, i: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"row {i}: target must be an index, letter or choice text", path=where)
    if isinstance(value, str) and value in choices:  # choice text first: a choice may itself be "4"
        idx = choices.index(value)
    elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        idx = int(value)
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:len(choices)]:
        idx = LETTERS.index(value.strip().upper())
    else:
        raise ConfigError(f"row {i}: target {value!r} is not an index, letter or one of the choices", path=where)
    if not 0 <= idx < len(choices):
        raise ConfigError(f"row {i}: target index {idx} out of range for {len(choices)} choices", path=where)
    return idx


def load_task(ref: str | Path, search_dirs: list[Path] | None = None) -> LoadedTask:
    """Parse, validate and expand a task: every row rendered, every target found, ids assigned."""
    path = ref if isinstance(ref, Path) else resolve_task_path(ref, search_dirs)
    spec, lines = parse_task_file(path)
    where = str(path)
    bundled = path.parent.resolve() == SUITES_DIR.resolve()
    source = f"bundled:{spec.name}" if bundled else str(path.resolve())
    prompt_t = compile_template(spec.prompt, "prompt", where, lines.get("prompt", 1) - 1)
    shot_src = spec.fewshot_target or "{{ target }}"
    shot_t = compile_template(shot_src, "fewshot_target", where, lines.get("fewshot_target", 1) - 1)
    rows = load_rows(spec.dataset, path.parent, where)
    if not rows:
        raise ConfigError("dataset has no rows", path=where)

    rendered: list[tuple[str, Doc]] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if spec.target not in row or row[spec.target] is None:
            raise ConfigError(f"row {i}: target field {spec.target!r} is missing", path=where,
                              hint=f"row fields: {sorted(row)}; set 'target:' to one of them")
        choices = _choices_for(spec, row, where, i)
        raw_target = row[spec.target]
        gold = None
        if spec.kind == "multiple_choice":
            if choices is None:
                raise ConfigError("multiple_choice tasks need 'choices'", path=where)
            gold = _gold_index(raw_target, choices, where, i)
            targets = [choices[gold]]
        else:
            targets = [str(t) for t in raw_target] if isinstance(raw_target, list) else [str(raw_target)]
        context = {**row, "choices": choices or [], "letters": LETTERS}
        prompt = render(prompt_t, context, "prompt", where, lines.get("prompt", 1) - 1, i)
        shot = render(shot_t, {**context, "target": targets[0]}, "fewshot_target", where,
                      lines.get("fewshot_target", 1) - 1, i) if spec.n_shot else ""
        sid = str(row[spec.id_field]) if spec.id_field and spec.id_field in row else stable_sample_id(
            spec.name, row)
        if sid in seen:
            raise ConfigError(f"row {i}: duplicate sample id {sid!r}", path=where,
                              hint="ids must be unique; set id_field or remove duplicate rows")
        seen.add(sid)
        missing = [g for g in spec.group_fields if g not in row]
        if missing:
            raise ConfigError(f"row {i}: group field(s) {missing} missing", path=where)
        doc = Doc(sample_id=sid, prompt=prompt, targets=targets, choices=choices, gold_index=gold,
                  group={g: str(row[g]) for g in spec.group_fields},
                  metadata={m: row[m] for m in spec.metadata_fields if m in row})
        rendered.append((shot, doc))

    if spec.n_shot:
        _add_fewshot(spec, rendered)
    docs = [d for _, d in rendered]
    prompt_fp = fingerprint({"prompt": spec.prompt, "system": spec.system_prompt, "chat": spec.chat,
                             "n_shot": spec.n_shot, "fewshot_seed": spec.fewshot_seed,
                             **({"fewshot_sampling": spec.fewshot_sampling}
                                if spec.fewshot_sampling != "per_item" else {}),
                             "fewshot_separator": spec.fewshot_separator, "fewshot_target": shot_src})
    return LoadedTask(spec=spec, docs=docs, source=source, dataset_fingerprint=fingerprint(rows),
                      prompt_fingerprint=prompt_fp)


def _add_fewshot(spec: TaskSpec, rendered: list[tuple[str, Doc]]) -> None:
    """Prefix each doc with n_shot other items from the pool sorted by sample id.

    per_item: an RNG seeded from (fewshot_seed, sample_id) picks each doc's shots, so a doc's shots stay
    the same whatever `--limit` is or how the rows are ordered. fixed: one RNG seeded from fewshot_seed
    orders the pool once; every doc takes the first n_shot of that order that are not itself.
    """
    if spec.n_shot >= len(rendered):
        raise ConfigError(f"n_shot={spec.n_shot} needs more than {len(rendered)} rows")
    base = [(d.prompt, shot) for shot, d in rendered]
    by_id = sorted(range(len(rendered)), key=lambda j: rendered[j][1].sample_id)
    fixed = random.Random(f"{spec.fewshot_seed}:fixed").sample(by_id, spec.n_shot + 1)
    for i, (_, doc) in enumerate(rendered):
        if spec.fewshot_sampling == "fixed":
            picks = [j for j in fixed if j != i][:spec.n_shot]
        else:
            rng = random.Random(f"{spec.fewshot_seed}:{doc.sample_id}")
            picks = rng.sample([j for j in by_id if j != i], spec.n_shot)
        shots = [f"{base[j][0]} {base[j][1]}" for j in picks]
        doc.prompt = spec.fewshot_separator.join([*shots, base[i][0]])


def limit_docs(docs: list[Doc], limit: int | None, seed: int = 0) -> list[Doc]:
    """`--limit N`: N items picked by sha256(seed:sample_id) order, returned in dataset order.

    Deterministic and the same for every model (so limited runs still pair), but spread over the
    whole dataset: a plain prefix of a file sorted by category would test one category only.
    """
    if limit is None or limit >= len(docs):
        return docs
    keep = set(sorted((d.sample_id for d in docs), key=lambda sid: sha256_text(f"{seed}:{sid}"))[:limit])
    return [d for d in docs if d.sample_id in keep]
