"""Post-hoc explanation surgery: transforms, and scoring the edited texts with the AR.

Holds the transform base class, registry and spec format (:mod:`~nla_probe.surgery.base`), the
built-in transforms as classes (:mod:`~nla_probe.surgery.transforms`) and as pure functions
(:mod:`~nla_probe.surgery.functional`, the way torchvision keeps ``functional`` beside its
classes), and the AR scoring of variants, redaction grids and span attribution
(:mod:`~nla_probe.surgery.scoring`), and their rendering as highlighted text in notebooks
(:func:`~nla_probe.surgery.view.show_attribution`).  Everything of the first three is re-exported here.

May import: :mod:`nla_probe.nla`, :mod:`nla_probe.text`, :mod:`nla_probe.analysis` and the core
modules.  Never imports hooks, copying, ablate, experiments, bench or cli.
"""

from nla_probe.surgery.base import (
                                    SPEC_VERSION,
                                    Compose,
                                    FromCallable,
                                    Transform,
                                    build_transform,
                                    from_spec,
                                    get_callable,
                                    get_transform,
                                    list_callables,
                                    list_transforms,
                                    register_callable,
                                    register_transform,
                                    to_spec,
)
from nla_probe.surgery.scoring import (
                                    redaction_grid,
                                    resolve_variants,
                                    score_variants,
                                    span_attribution,
                                    summarize_variants,
)
from nla_probe.surgery.transforms import (
                                    DeleteSpans,
                                    Identity,
                                    KeepFirstTokens,
                                    ProseOnly,
                                    ReplaceDelimiters,
                                    ReplaceSpans,
                                    ShuffleSentences,
                                    SpansOnly,
                                    SpansOnlyBare,
                                    StripDelimiters,
)
from nla_probe.surgery.view import show_attribution

__all__ = [
    "SPEC_VERSION", "Compose", "DeleteSpans", "FromCallable", "Identity", "KeepFirstTokens", "ProseOnly",
    "ReplaceDelimiters", "ReplaceSpans", "ShuffleSentences", "SpansOnly", "SpansOnlyBare", "StripDelimiters",
    "Transform", "build_transform", "from_spec", "get_callable", "get_transform", "list_callables",
    "list_transforms", "redaction_grid", "register_callable", "register_transform", "resolve_variants",
    "score_variants", "show_attribution", "span_attribution", "summarize_variants", "to_spec",
]
