"""GitHub-flavoured Markdown: tables with estimate ± CI and text verdict badges.

Cells are escaped for both Markdown (pipes, backticks, newlines) and the inline HTML GitHub renders,
so a model output can neither break the table nor inject markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._charts import fmt
from ._html import _ci, _count, _evidence, _halfwidth, _pval, _signed, _when
from ._model import Estimate, Leaderboard, ReportData

_BADGES = {
    "pass": "✅ PASS",
    "fail": "❌ FAIL",
    "error": "❌ ERROR",
    "warn": "⚠️ WARN",
    "improved": "🟢 improved",
    "regressed": "🔴 regressed",
    "unchanged": "⚪ no significant change",
}


def cell(text: object, limit: int | None = None) -> str:
    s = "" if text is None else str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = (
        s.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("`", "\\`")
        .replace("*", "\\*")
        .replace("_", "\\_")
        .replace("[", "\\[")
        .replace("]", "\\]")
    )
    return " ".join(s.split())  # newlines would end the table row


def badge(kind: str) -> str:
    return _BADGES.get(kind.lower(), kind.upper())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def est(e: Estimate) -> str:
    """`0.577 ± 0.056`: the estimate with the half-width of its 95% CI."""
    return fmt(e.value) + (f" {_halfwidth(e)}" if e.ci_low is not None else " (no CI)")


def render_report_markdown(r: ReportData) -> str:
    s = r.summary
    lines = [
        f"# Evaluation report: {cell(r.run.model)}",
        "",
        f"Run `{r.run.run_id}` · backend {cell(r.run.backend)} · produced by {cell(r.run.producer)} · "
        f"created {_when(r.run.created_at)} · {r.run.n_samples:,} samples",
        "",
        "## Summary",
        "",
        f"**{cell(s.headline)}**",
        "",
    ]
    if s.gate_verdict:
        lines += [f"Quality gate: **{badge(s.gate_verdict)}**", ""]
    lines += [f"- {cell(b)}" for b in s.bullets] + [""]
    lines += ["## Metrics", ""]
    lines += table(
        ["task", "metric", "estimate ± 95% CI", "95% CI", "n", "method"],
        [
            [
                cell(m.task),
                cell(m.metric) + (" (primary)" if m.primary else ""),
                est(m.estimate),
                _ci(m.estimate),
                _count(m.estimate.n),
                m.estimate.method,
            ]
            for m in r.metrics
        ],
        right=(2, 3, 4),
    )
    if r.comparison:
        c = r.comparison
        lines += [
            f"## Comparison with baseline {cell(c.baseline_ref)}",
            "",
            f"Baseline run `{c.baseline_run_id}` ({cell(c.baseline_model)}); candidate − baseline on "
            f"shared samples, paired 95% CI, p-values {c.correction}-corrected, α = {c.alpha:g}.",
            "",
        ]
        lines += table(
            [
                "task",
                "metric",
                "baseline",
                "candidate",
                "difference ± CI",
                "95% CI",
                "p",
                "p (corrected)",
                "n paired",
                "right→wrong",
                "wrong→right",
                "verdict",
            ],
            [
                [
                    cell(x.task),
                    cell(x.metric),
                    fmt(x.baseline),
                    fmt(x.candidate),
                    f"{_signed(x.diff.value)} {_halfwidth(x.diff)}",
                    _ci(x.diff, signed=True),
                    _pval(x.p_value),
                    _pval(x.p_adjusted),
                    _count(x.n_paired),
                    _count(x.flips_to_wrong),
                    _count(x.flips_to_right),
                    badge(x.direction),
                ]
                for x in c.rows
            ],
            right=tuple(range(2, 11)),
        )
    if r.gate:
        g = r.gate
        lines += [f"## Quality gate: {badge(g.verdict)}", ""]
        if g.policy:
            lines += [
                f"Policy {cell(g.policy)}" + (f" (sha256 `{g.policy_sha256[:16]}…`)" if g.policy_sha256 else ""),
                "",
            ]
        if g.rules:
            lines += table(
                ["rule", "verdict", "explanation", "evidence"],
                [
                    [cell(x.name), badge(x.verdict), cell(x.message or ""), cell(_evidence(x.evidence), 300)]
                    for x in g.rules
                ],
            )
    if r.slices:
        lines += ["## Slices by group attribute", ""]
        lines += table(
            ["task", "metric", "attribute", "value", "estimate ± 95% CI", "95% CI", "n"],
            [
                [
                    cell(x.task),
                    cell(x.metric),
                    cell(x.attribute),
                    cell(x.value),
                    est(x.estimate),
                    _ci(x.estimate),
                    _count(x.estimate.n),
                ]
                for x in r.slices
            ],
            right=(4, 5, 6),
        )
    if r.worst_samples:
        lines += ["## Worst samples", ""]
        lines += table(
            ["task", "sample", "score", "input", "target", "prediction"],
            [
                [
                    cell(w.task),
                    f"`{w.sample_id}`",
                    fmt(w.score),
                    cell(w.input, 160),
                    cell(w.target, 80),
                    cell(w.prediction, 160),
                ]
                for w in r.worst_samples
            ],
            right=(2,),
        )
    if r.environment:
        lines += ["## Environment", ""]
        lines += [f"- {cell(k)}: {cell(v)}" for k, v in r.environment.items.items()]
        lines += [f"- {cell(k)}: `{cell(v)}`" for k, v in r.environment.packages.items()] + [""]
    if r.notes:
        lines += ["## Notes", ""] + [f"- {cell(n)}" for n in r.notes] + [""]
    lines += [
        f"<sub>evalkeeper {cell(r.evalkeeper_version)} · report schema v{r.report_schema_version} · "
        f"generated {_when(r.generated_at)} · all intervals are 95% confidence intervals</sub>",
        "",
    ]
    return "\n".join(lines)


def render_leaderboard_markdown(board: Leaderboard) -> str:
    headers = ["#", "model", "run"] + [f"{cell(t)} ({cell(board.metrics[t])})" for t in board.tasks] + ["mean"]
    rows = []
    for i, row in enumerate(board.rows, 1):
        cells = []
        for t in board.tasks:
            c = board.cell(row, t)
            cells.append(est(c.estimate) if c else "–")
        rows.append([str(i), cell(row.model), f"`{row.run_id}`", *cells, est(row.mean) if row.mean else "–"])
    lines = [
        "# Leaderboard",
        "",
        f"{len(board.rows)} run(s) × {len(board.tasks)} task(s); each cell: estimate ± half-width of the "
        "95% CI; mean: unweighted over the tasks, SE assuming independent tasks.",
        "",
    ]
    lines += table(headers, rows, right=tuple(range(3, len(headers))))
    lines += [
        f"<sub>leaderboard schema v{board.leaderboard_schema_version} · generated {_when(board.generated_at)}</sub>",
        "",
    ]
    return "\n".join(lines)
