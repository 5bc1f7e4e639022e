"""The NLA pair itself: the released checkpoints' contract and everything that runs the two models.

Holds: the contract and sidecar reader (:mod:`~nla_probe.nla.contract`), checkpoint loading with
contract checks (:mod:`~nla_probe.nla.checkpoint`: ``load_pair``, ``load_av``, ``load_ar``),
architecture adapters (:mod:`~nla_probe.nla.arch`), checkpoint identity (:mod:`~nla_probe.nla.identity`),
the injection of a vector as a token embedding (:mod:`~nla_probe.nla.injection`), the AV
(:mod:`~nla_probe.nla.verbalizer`) with its generation records and backends
(:mod:`~nla_probe.nla.generation`, :mod:`~nla_probe.nla.backends`), the AR
(:mod:`~nla_probe.nla.reconstructor`), activation extraction (:mod:`~nla_probe.nla.extraction`,
:mod:`~nla_probe.nla.layers`), writing checkpoints in the released layout
(:mod:`~nla_probe.nla.export`), and the memory plan of a pair with its check before loading
(:mod:`~nla_probe.nla.plan`, :mod:`~nla_probe.nla.preflight`).

May import: the core modules (:mod:`nla_probe.errors`, :mod:`nla_probe.progress`,
:mod:`nla_probe.registry`, :mod:`nla_probe.defaults`), :mod:`nla_probe.analysis` and
:mod:`nla_probe.text`.  Never imports hooks, surgery, copying, ablate, experiments, bench, cli or toy:
generation hooks reach the backends through the :class:`~nla_probe.nla.generation.GenerationHook`
protocol.
"""
