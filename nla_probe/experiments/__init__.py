"""The built-in experiment kinds that ``nla-probe ablate`` runs, one module per kind.

Each module subclasses :class:`~nla_probe.ablate.kinds.ExperimentKind` and registers it with
:func:`~nla_probe.ablate.kinds.register_experiment`; the registry (:mod:`nla_probe.ablate.kinds`)
imports the module of a kind the first time that kind is looked up.  Generation kinds
(``roundtrip``, ``quote_ban``, ``length``, ``best_of_n``), text kinds (``redaction``,
``corroborate``, ``copying``) and vector kinds (``adjacent_layer``, ``layer_sweep``,
``cross_family``, ``ridge``; shared helpers in :mod:`~nla_probe.experiments.vector_common`).

May import: :mod:`nla_probe.ablate` and everything below it.  Never imports bench or cli.
"""

from nla_probe.ablate.kinds import BUILTIN_KINDS, ExperimentKind, get_experiment, list_experiments, register_experiment

__all__ = ["BUILTIN_KINDS", "ExperimentKind", "get_experiment", "list_experiments", "register_experiment"]
