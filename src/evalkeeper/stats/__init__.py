"""Statistics for evaluations: error bars, paired tests, multiple comparisons, power (pure numpy/scipy).

Conventions: paired differences are b - a (candidate minus baseline); SEs use ddof=1; CIs are
two-sided at 1 - alpha.
"""

from ._estimate import (
    MeanEstimate,
    bootstrap_ci,
    bootstrap_means,
    bootstrap_se,
    clt_ci,
    clt_se,
    clustered_ci,
    clustered_se,
    is_binary,
    mean_over_epochs,
)
from ._multiple import adjust_pvalues, benjamini_hochberg, holm
from ._paired import (
    McNemarResult,
    PairedResult,
    TostResult,
    mcnemar_exact,
    paired_difference,
    paired_permutation_test,
    paired_t_pvalue,
    sign_flip_null,
    tost_equivalence,
)
from ._power import (
    minimum_detectable_effect,
    omega2_paired,
    omega2_unpaired,
    power_of_test,
    required_n,
)

__all__ = [
    "McNemarResult",
    "MeanEstimate",
    "PairedResult",
    "TostResult",
    "adjust_pvalues",
    "benjamini_hochberg",
    "bootstrap_ci",
    "bootstrap_means",
    "bootstrap_se",
    "clt_ci",
    "clt_se",
    "clustered_ci",
    "clustered_se",
    "holm",
    "is_binary",
    "mcnemar_exact",
    "mean_over_epochs",
    "minimum_detectable_effect",
    "omega2_paired",
    "omega2_unpaired",
    "paired_difference",
    "paired_permutation_test",
    "paired_t_pvalue",
    "power_of_test",
    "required_n",
    "sign_flip_null",
    "tost_equivalence",
]
