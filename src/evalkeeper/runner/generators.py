"""Procedural dataset generators for the bundled suite (deterministic for a given seed).

`arithmetic` makes integer arithmetic questions; `bbq` expands the hand-written BBQ-style templates
in suites/bbq_templates.yaml into ambiguous and disambiguated items with group attributes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from evalkeeper.core.errors import ConfigError

Rows = list[dict[str, Any]]


def arithmetic(n: int = 200, seed: int = 1234, max_operand: int = 50, ops: str = "+-*",
               base_dir: Path | None = None) -> Rows:
    """`n` questions `a op b` with operands in [0, max_operand]; `*` uses operands up to 12."""
    if n < 1 or not ops or any(o not in "+-*" for o in ops):
        raise ConfigError("arithmetic generator: n >= 1 and ops drawn from '+-*'")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        op = ops[i % len(ops)]
        hi = 12 if op == "*" else max_operand
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"id": f"arith-{seed}-{i:04d}", "a": a, "b": b, "op": op, "answer": str(answer),
                     "operation": {"+": "addition", "-": "subtraction", "*": "multiplication"}[op]})
    return rows


def _indef(noun: str) -> str:
    return ("an " if noun[0].lower() in "aeiou" else "a ") + noun


def bbq(templates: str = "data/bbq_templates.yaml", seed: int = 7, base_dir: Path | None = None) -> Rows:
    """Every template x group pair x {ambiguous, disambiguated (both directions)} x {negative, non-negative}.

    In each item the 'biased' answer is the one the stereotype predicts: the stereotyped group for a
    negative question, the other group for a non-negative one. Ambiguous contexts never say who did it,
    so the correct answer is always the 'unknown' option. Choice order is shuffled with `seed`.
    """
    path = (base_dir or Path(__file__).parent / "suites") / templates
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    rows: Rows = []
    for t in data["templates"]:
        for p, (target, other) in enumerate(t["pairs"]):
            first, second = (target, other) if p % 2 == 0 else (other, target)  # mention order varies
            context = t["context"].format(A=_indef(first), B=_indef(second))
            context = context[0].upper() + context[1:]
            variants: list[tuple[str, str | None]] = [("ambig", None), ("disambig", target), ("disambig", other)]
            for condition, negative_actor in variants:
                text = context
                if negative_actor is not None:
                    non_actor = other if negative_actor == target else target
                    extra = t["disambig"].format(NEG=f"the {negative_actor}", OTHER=f"the {non_actor}")
                    text = f"{context} {extra[0].upper() + extra[1:]}"
                for polarity in ("neg", "nonneg"):
                    question = t["question_neg"] if polarity == "neg" else t["question_nonneg"]
                    names = [f"The {target}", f"The {other}", data["unknown"]]
                    order = list(range(3))
                    rng.shuffle(order)
                    choices = [names[k] for k in order]
                    biased_name = names[0] if polarity == "neg" else names[1]
                    if condition == "ambig":
                        gold_name = data["unknown"]
                    else:
                        pos_actor = other if negative_actor == target else target
                        actor = negative_actor if polarity == "neg" else pos_actor
                        gold_name = f"The {actor}"
                    rows.append({
                        "id": f"bbq-{t['id']}-{p}-{condition}-{negative_actor == target}-{polarity}",
                        "context": text, "question": question, "choices": choices,
                        "answer": choices.index(gold_name), "category": t["category"],
                        "context_condition": condition, "question_polarity": polarity,
                        "stereotyped_group": target, "biased_index": choices.index(biased_name),
                        "unknown_index": choices.index(data["unknown"]),
                    })
    return rows


GENERATORS: dict[str, Callable[..., Rows]] = {"arithmetic": arithmetic, "bbq": bbq}
