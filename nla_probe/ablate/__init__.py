"""The ablation engine: declarative specs in, a resumable store of result rows, statistics and a report out.

Holds the spec format (:mod:`~nla_probe.ablate.spec`, :mod:`~nla_probe.ablate.toml_writer`), the
registry of experiment kinds (:mod:`~nla_probe.ablate.kinds`; the built-in kinds live in
:mod:`nla_probe.experiments` and are found there by name), the engine
(:mod:`~nla_probe.ablate.engine`: ``ablate()``, the run context with cached decode/score
primitives), its inputs (:mod:`~nla_probe.ablate.inputs`), the content-keyed record store
(:mod:`~nla_probe.ablate.store`), the result object (:mod:`~nla_probe.ablate.result`:
``AblationResult``), the report (:mod:`~nla_probe.ablate.report` assembles it,
:mod:`~nla_probe.ablate.markdown` writes markdown tables and sections) and figures
(:mod:`~nla_probe.ablate.plots`).

May import: :mod:`nla_probe.surgery`, :mod:`nla_probe.hooks`, :mod:`nla_probe.copying`,
:mod:`nla_probe.toy` and everything below them.  Never imports experiments, bench or cli.
"""
