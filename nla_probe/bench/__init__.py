"""``nla-probe bench``: speed and memory benchmarks, ratios side by side in one run.

Holds the benchmark registry (:mod:`~nla_probe.bench.registry`), the runner
(:mod:`~nla_probe.bench.runner`), shared set-up (:mod:`~nla_probe.bench.common`) and one module
per subsystem (``ablate``, ``copying``, ``hooks``, ``surgery``), each registering its benchmarks.

May import: everything except :mod:`nla_probe.cli`.
"""
