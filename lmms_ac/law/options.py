"""The named choices of the law's functions, in one light module: ``lmms-ac fit/policy/plot`` take
their argparse choices from here without importing numpy or pandas (``lmms-ac --help`` stays fast)."""

from __future__ import annotations

#: how A, C and the score are scaled before the fit (``fit_law(normalize=...)``)
NORMALIZATIONS = ("none", "minmax")
#: prediction intervals (``fit_law(interval=...)``)
INTERVALS = ("ols", "loo", "conformal")
#: how a policy's hits are ranked (``simulate(ranking=...)``; meanings in ``policy.RANKING_HELP``)
RANKINGS = ("measured", "law")
#: the prior policy's acquisition functions (``prior.next_choice``)
ACQUISITIONS = ("ei", "thompson")
