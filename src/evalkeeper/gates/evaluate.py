"""Policy + run (+ baseline) -> verdicts with their evidence. Reads the store, writes nothing.

Decision rules, in one place:
- threshold / rate, `on: estimate`: fail when the point estimate is outside [min, max];
  `on: ci`: fail unless the whole (1 - alpha) CI is inside (strict); `on: test`: fail only when a
  one-sided z-test shows a violation after multiple-comparison correction (lenient, controlled).
- no_regression: fail only when the drop vs the baseline is significant (one-sided paired test,
  corrected across the gate run) AND larger than `max_drop`; the verdict says which condition held.
- min_samples: fail when n < min; warn when n cannot detect `detect` at the target power.
- required_tasks: fail when a task is absent or has no samples.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from evalkeeper.core.errors import ConfigError, EvalkeeperError, NotFoundError
from evalkeeper.core.records import Run
from evalkeeper.stats import (
    adjust_pvalues,
    bootstrap_se,
    clt_se,
    clustered_se,
    minimum_detectable_effect,
    omega2_unpaired,
    required_n,
)

from ._data import SampleFilter, ScoreData
from ._models import GateReport, Verdict
from ._regression import decide_regression, regression_evidence
from .policy import Policy, Rule


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _z(alpha: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(1.0 - alpha / 2.0))


def _phi(x: float) -> float:
    from scipy.special import ndtr

    return float(ndtr(x))


class _Evaluator:
    def __init__(self, ws: Any, run: Run, policy: Policy, baseline: str | None) -> None:
        self.ws, self.run, self.policy, self.cli_baseline = ws, run, policy, baseline
        self.data = ScoreData(ws)
        self.baselines: dict[str, str] = {}
        self.tested: list[Verdict] = []  # verdicts whose failure is decided by a corrected p-value

    # -- selection ------------------------------------------------------------------------------
    def tasks_of(self, rule: Rule) -> list[str]:
        names = [t.name for t in self.run.tasks]
        out: list[str] = []
        for sel in rule.tasks:
            if sel == "*":
                out.extend(n for n in names if n not in out)
            elif sel not in names:
                raise NotFoundError(f"task {sel!r} is not in run {self.run.run_id}",
                                    path=self.policy.where(rule, "tasks" if "tasks" in rule.spec else "task"),
                                    hint=f"tasks of the run: {', '.join(names) or 'none'}; "
                                         "use a required_tasks rule to fail (not error) on a missing task")
            elif sel not in out:
                out.append(sel)
        return out

    def metric_of(self, rule: Rule, task: str, run: Run | None = None) -> str:
        run = run or self.run
        info = run.task(task)
        declared = list(info.metrics) if info else []
        metric = rule.get("metric") or (declared[0] if declared else None)
        if metric is None:
            raise ConfigError(f"task {task!r} declares no metric; name one", path=self.policy.where(rule),
                              hint="add `metric: <name>` to the rule")
        if declared and metric not in declared:
            raise NotFoundError(f"metric {metric!r} is not a metric of task {task!r} in run {run.run_id}",
                                path=self.policy.where(rule, "metric"), hint=f"metrics: {', '.join(declared)}")
        return str(metric)

    def higher_is_better(self, task: str, metric: str) -> bool:
        info = self.run.task(task)
        return bool(info.higher_is_better.get(metric, True)) if info else True

    def baseline_of(self, rule: Rule, required: bool = True) -> str | None:
        ref = rule.get("baseline") or self.cli_baseline or self.policy.baseline
        if ref is None:
            if not required:
                return None
            raise ConfigError(f"rule {rule.id!r} needs a baseline and none was given",
                              path=self.policy.where(rule),
                              hint="pass --baseline NAME, or set `baseline:` in the policy or the rule")
        if ref not in self.baselines:
            try:
                rid = self.ws.resolve_baseline(ref) or self.ws.get_run(ref).run_id
            except NotFoundError:
                raise NotFoundError(f"baseline {ref!r} is neither a baseline name nor a run",
                                    path=self.policy.where(rule, "baseline" if rule.get("baseline") else None),
                                    hint="set one with `evalkeeper baseline set RUN --name NAME`") from None
            self.baselines[ref] = rid
        return self.baselines[ref]

    def values(self, rule: Rule, task: str, metric: str, filt: SampleFilter) -> np.ndarray[Any, Any]:
        v = self.data.values(self.run.run_id, task, metric, filt)
        if v.size == 0:
            what = f"the subset {filt.describe()!r} of task {task!r}" if filt.describe() else f"task {task!r}"
            raise EvalkeeperError(f"no {metric!r} scores for {what} in run {self.run.run_id}",
                                  path=self.policy.where(rule), hint="check the metric name and the filter")
        return v

    # -- rules ----------------------------------------------------------------------------------
    def evaluate(self) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for rule in self.policy.rules:
            if rule.kind == "required_tasks":
                verdicts.append(self.required_tasks(rule))
                continue
            for task in self.tasks_of(rule):
                if rule.kind in ("threshold", "rate"):
                    verdicts.append(self.bounded(rule, task))
                elif rule.kind == "no_regression":
                    verdicts.append(self.no_regression(rule, task))
                elif rule.kind == "min_samples":
                    verdicts.append(self.min_samples(rule, task))
        self.finish(verdicts)
        return verdicts

    def _base(self, rule: Rule, task: str | None, metric: str | None) -> Verdict:
        return Verdict(rule_id=rule.id, kind=rule.kind, task=task, metric=metric, rule=dict(rule.spec),
                       line=rule.line, alpha=float(rule.get("alpha", self.policy.alpha)))

    def bounded(self, rule: Rule, task: str) -> Verdict:
        metric = self.metric_of(rule, task)
        filt = SampleFilter.from_spec(rule.spec)
        v = self._base(rule, task, metric)
        alpha = v.alpha or self.policy.alpha
        lo, hi = rule.get("min"), rule.get("max")
        method = rule.get("se", "clt")
        if method == "clustered":
            if not rule.get("cluster_by"):
                raise ConfigError("se: clustered needs cluster_by (group.X or metadata.X)",
                                  path=self.policy.where(rule, "se"))
            x, clusters = self.data.clustered(self.run.run_id, task, metric, filt, rule.get("cluster_by"))
            if x.size == 0:
                self.values(rule, task, metric, filt)  # raises the no-scores error
            se = clustered_se(x, clusters)
            v.details["n_clusters"] = int(len(set(clusters.tolist())))
        else:
            x = self.values(rule, task, metric, filt)
            se = bootstrap_se(x, 2000, seed=0) if method == "bootstrap" else clt_se(x)
        est = float(x.mean())
        v.estimate, v.n, v.se, v.se_method = est, int(x.size), _f(se), method
        v.subset = filt.describe() or None
        v.bound_min, v.bound_max, v.on = lo, hi, rule.get("on", "estimate")
        if v.se is not None:
            half = _z(alpha) * v.se
            v.ci_low, v.ci_high, v.ci_level = est - half, est + half, 1.0 - alpha
        if v.se == 0.0 and x.size > 1:
            v.warnings.append("all scores are identical: the CLT interval has zero width")
        if x.size < 2:
            v.warnings.append("fewer than 2 samples: no standard error")
        # one-sided p-value of a violation (small = significantly outside the bound)
        ps = []
        if lo is not None:
            ps.append(self._violation_p(est, v.se, est - lo))
        if hi is not None:
            ps.append(self._violation_p(est, v.se, hi - est))
        v.p_value = min(ps)
        if v.on == "test":
            self.tested.append(v)
        return v

    @staticmethod
    def _violation_p(est: float, se: float | None, margin: float) -> float:
        if se is None or se == 0.0:
            return 0.0 if margin < 0 else 1.0
        return _phi(margin / se)

    def no_regression(self, rule: Rule, task: str) -> Verdict:
        metric = self.metric_of(rule, task)
        base_id = self.baseline_of(rule)
        assert base_id is not None
        base = self.ws.get_run(base_id)
        if base.task(task) is None:
            raise NotFoundError(f"baseline run {base_id} has no task {task!r}", path=self.policy.where(rule),
                                hint="pick a baseline that ran the same tasks")
        filt = SampleFilter.from_spec(rule.spec)
        va, vb = self.data.paired(base_id, self.run.run_id, task, metric, filt)
        if va.size == 0:
            raise EvalkeeperError(f"run {self.run.run_id} and baseline {base_id} share no {metric!r} scores "
                                  f"on task {task!r}", path=self.policy.where(rule),
                                  hint="sample ids must match; compare runs of the same dataset")
        v = self._base(rule, task, metric)
        alpha = v.alpha or self.policy.alpha
        regression_evidence(v, va, vb, alpha=alpha, max_drop=float(rule.get("max_drop", 0.0)),
                            test=rule.get("test", "auto"), higher_is_better=self.higher_is_better(task, metric),
                            n_perm=int(rule.get("n_perm", 10_000)))
        full = self.data.values(self.run.run_id, task, metric, filt)
        v.baseline_run, v.subset, v.n = base_id, filt.describe() or None, int(full.size)
        if va.size < full.size:
            v.warnings.append(f"only {va.size} of {full.size} samples are shared with the baseline")
        res_n = int(va.size)
        detect = rule.get("detect") or (v.max_drop if v.max_drop else None)
        if detect and res_n > 1:
            omega2 = float(np.var(vb - va, ddof=1))
            self._power_check(v, res_n, omega2, float(detect), alpha, rule, "paired differences")
        self.tested.append(v)
        return v

    def _power_check(self, v: Verdict, n: int, omega2: float, detect: float, alpha: float, rule: Rule,
                     source: str) -> None:
        power = float(rule.get("power", self.policy.power))
        if omega2 <= 0:
            v.details["power"] = {"omega2": 0.0, "omega2_from": source, "note": "no variance"}
            return
        mde = minimum_detectable_effect(n, omega2, alpha, power, "one-sided")
        need = required_n(detect, omega2, alpha, power, "one-sided")
        v.details["power"] = {"omega2": omega2, "omega2_from": source, "power": power, "detect": detect,
                              "mde": mde, "required_n": need, "n": n}
        if n < need:
            v.warnings.append(f"underpowered: n={n} detects a drop of {mde:.4f} with {power:.0%} power, "
                              f"not {detect:.4f}; about {need} samples needed (omega^2 from {source})")

    def min_samples(self, rule: Rule, task: str) -> Verdict:
        metric = self.metric_of(rule, task)
        v = self._base(rule, task, metric)
        x = self.data.values(self.run.run_id, task, metric, SampleFilter())
        need = int(rule.get("min"))
        v.n, v.bound_min = int(x.size), float(need)
        v.estimate = float(x.mean()) if x.size else None
        if x.size < need:
            v.status, v.reason = "fail", f"n={x.size} samples, policy requires at least {need}"
        else:
            v.reason = f"n={x.size} ≥ {need}"
        detect = rule.get("detect")
        if detect and x.size > 1:
            alpha = v.alpha or self.policy.alpha
            base_id = self.baseline_of(rule, required=bool(rule.get("baseline")))
            va, vb = (self.data.paired(base_id, self.run.run_id, task, metric) if base_id
                      else (np.empty(0), np.empty(0)))
            if va.size > 1:
                v.baseline_run = base_id
                self._power_check(v, int(x.size), float(np.var(vb - va, ddof=1)), float(detect), alpha, rule,
                                  f"paired differences with baseline {base_id}")
            else:
                self._power_check(v, int(x.size), omega2_unpaired(x), float(detect), alpha, rule,
                                  "one run only: 2*Var(score), no pair available")
        return self._severity(v, rule)

    def required_tasks(self, rule: Rule) -> Verdict:
        v = self._base(rule, None, None)
        names = {t.name for t in self.run.tasks}
        missing = []
        for task in rule.get("tasks"):
            if task not in names or self.ws.count_samples(self.run.run_id, task=task) == 0:
                missing.append(task)
        v.details = {"required": list(rule.get("tasks")), "missing": missing}
        if missing:
            v.status, v.reason = "fail", f"missing or empty: {', '.join(missing)}"
        else:
            v.reason = f"all {len(rule.get('tasks'))} required tasks present"
        return self._severity(v, rule)

    @staticmethod
    def _severity(v: Verdict, rule: Rule) -> Verdict:
        if v.status == "fail" and rule.severity == "warning":
            v.status = "warn"
        return v

    # -- correction and final status -------------------------------------------------------------
    def finish(self, verdicts: list[Verdict]) -> None:
        if self.tested:
            adjusted = adjust_pvalues([t.p_value for t in self.tested], self.policy.correction)
            for t, p in zip(self.tested, adjusted, strict=True):
                t.p_corrected = float(p)
        rules = {r.id: r for r in self.policy.rules}
        for v in verdicts:
            if v.kind in ("threshold", "rate"):
                self._decide_bounded(v)
            elif v.kind == "no_regression":
                decide_regression(v)
            self._severity(v, rules[v.rule_id])

    @staticmethod
    def _decide_bounded(v: Verdict) -> None:
        lo, hi, est = v.bound_min, v.bound_max, v.estimate
        assert est is not None
        bounds = " and ".join(b for b in (f"≥ {lo}" if lo is not None else "",
                                          f"≤ {hi}" if hi is not None else "") if b)
        if v.on == "test":
            alpha = v.alpha or 0.05
            v.significant = (v.p_corrected or 1.0) < alpha
            ok = not v.significant
            what = (f"estimate {est:.4f} is significantly outside {bounds} (p_corr={v.p_corrected:.3g})"
                    if not ok else f"no significant violation of {bounds} (estimate {est:.4f}, "
                                   f"p_corr={v.p_corrected:.3g})")
        elif v.on == "ci":
            lo_ok = lo is None or (v.ci_low is not None and v.ci_low >= lo)
            hi_ok = hi is None or (v.ci_high is not None and v.ci_high <= hi)
            ok = lo_ok and hi_ok
            ci = f"[{v.ci_low:.4f}, {v.ci_high:.4f}]" if v.ci_low is not None else "(no CI)"
            what = f"{v.ci_level or 0.95:.0%} CI {ci} {'is' if ok else 'is not'} entirely {bounds}"
        else:
            ok = (lo is None or est >= lo) and (hi is None or est <= hi)
            what = f"estimate {est:.4f} {'meets' if ok else 'violates'} {bounds}"
        v.status = "pass" if ok else "fail"
        v.reason = what


def evaluate_policy(ws: Any, run: str | Run, policy: Policy, baseline: str | None = None) -> GateReport:
    """Apply every rule of `policy` to `run`; raises EvalkeeperError on bad input (never a silent pass)."""
    start = time.perf_counter()
    run_obj = run if isinstance(run, Run) else ws.get_run(run)
    ev = _Evaluator(ws, run_obj, policy, baseline)
    verdicts = ev.evaluate()
    failed = sum(v.status == "fail" for v in verdicts)
    warned = sum(bool(v.warnings) or v.status == "warn" for v in verdicts)
    return GateReport(run_id=run_obj.run_id, policy_name=policy.name, policy_source=policy.source,
                      policy_sha256=policy.sha256, correction=policy.correction, passed=failed == 0,
                      verdicts=verdicts, baselines=ev.baselines, n_failed=failed, n_warnings=warned,
                      elapsed_s=time.perf_counter() - start)
