"""Numbers from vectors and result frames: metrics, statistics, ridge probes, alignment, selection.

Holds :mod:`~nla_probe.analysis.metrics` (mse_nrm, fve_nrm, cosine, recall@k; the released
denominators), :mod:`~nla_probe.analysis.stats` (clustered bootstrap CIs, paired tests,
Benjamini–Hochberg), :mod:`~nla_probe.analysis.ridge` (ridge probes between layers),
:mod:`~nla_probe.analysis.alignment` (linear maps between representation spaces) and
:mod:`~nla_probe.analysis.selection` (best-of-N selection).  Pure numpy/scipy/polars: no model.

May import: the core modules only.
"""
