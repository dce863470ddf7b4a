"""Seeded simulation of the no-regression decision: false alarms under the null stay at or below alpha."""

from __future__ import annotations

import numpy as np

from evalkeeper.gates import no_regression_family

CELLS = np.array([0.55, 0.075, 0.075, 0.30])  # (both right, base only, cand only, both wrong): no true change
BASE = np.array([1.0, 1.0, 0.0, 0.0])
CAND = np.array([1.0, 0.0, 1.0, 0.0])


def _null_gate_runs(reps: int, tasks: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(4, size=(reps, tasks, n), p=CELLS)


def test_gate_family_wise_false_alarm_rate_under_the_null() -> None:
    draws = _null_gate_runs(600, 4, 300, seed=21)
    alarms_holm, alarms_raw = [], []
    for rep in draws:
        verdicts = no_regression_family([(BASE[t], CAND[t]) for t in rep], alpha=0.05, correction="holm")
        alarms_holm.append(any(v.status == "fail" for v in verdicts))
        # the uncorrected decision of the same tests: raw p < alpha with the candidate worse
        alarms_raw.append(any(v.p_value is not None and v.p_value < 0.05 and (v.diff or 0) < 0 for v in verdicts))
    assert np.mean(alarms_holm) <= 0.05
    assert np.mean(alarms_raw) > 0.08  # without correction four tests alarm far more often than alpha


def test_tolerance_only_lowers_false_alarms_and_real_drops_are_caught() -> None:
    draws = _null_gate_runs(400, 1, 300, seed=22)
    strict = [no_regression_family([(BASE[r[0]], CAND[r[0]])], max_drop=0.0)[0].status == "fail" for r in draws]
    tolerant = [no_regression_family([(BASE[r[0]], CAND[r[0]])], max_drop=0.02)[0].status == "fail"
                for r in draws]
    assert np.mean(tolerant) <= np.mean(strict) <= 0.05
    # a real 8-point drop on 300 items is caught almost always
    rng = np.random.default_rng(23)
    cells = np.array([0.55, 0.115, 0.035, 0.30])
    caught = [no_regression_family([(BASE[d], CAND[d])], max_drop=0.02)[0].status == "fail"
              for d in rng.choice(4, size=(200, 300), p=cells)]
    assert np.mean(caught) > 0.9
