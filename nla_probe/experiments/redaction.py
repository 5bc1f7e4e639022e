"""``redaction``: one unedited decode per activation, then post-hoc transforms scored by the AR.

The AV decodes once with the spec's ``[sampling]`` (no hooks: fully on-policy); each condition is
a chain of transforms from :mod:`nla_probe.surgery` applied to that explanation before the AR
reads it.  The baseline condition must be unedited (no transforms, or only ``identity``).
Edited texts are out of the AR's training distribution, so their FVE is a lower bound on what the
edited text carries.

Span statistics (per row, on the UNEDITED explanation, outermost spans of ``params.families``,
default ``["quotes"]``): ``n_spans``, ``span_share`` (characters inside those spans, marks
included, over the explanation's length in characters; 0 for an empty explanation); and for the
scored text ``chars`` (length in characters) and ``edited`` (differs from the explanation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import Field
from nla_probe.errors import SpecError
from nla_probe.experiments.roundtrip import _families_check


def span_stats(text: str, families: tuple[str, ...]) -> tuple[int, float]:
    """``(n_spans, span_share)`` of one explanation (see module doc)."""
    from nla_probe.text.spans import find_spans

    parsed = find_spans(text, families)
    n = len(parsed.outermost())
    return n, (parsed.span_chars() / len(text) if text else 0.0)


@register_experiment
class Redaction(ExperimentKind):
    """Post-hoc surgery on one shared decode (see module doc)."""

    name = "redaction"
    description = "one unedited decode, then post-hoc transforms per condition, reconstructed and scored"
    condition_keys = ("transforms",)
    params = {
        "families": Field((list,), lambda: ["quotes"], "delimiter families whose spans are counted",
                          _families_check),
    }
    columns = {"n_spans": "Int64", "span_share": "Float64", "chars": "Int64", "edited": "Boolean"}
    column_docs = {
        "n_spans": "outermost delimiter spans in the unedited explanation (mean per decode).",
        "span_share": "share of the unedited explanation's characters inside those spans, marks included.",
        "chars": "length of the scored (edited) text in characters.",
        "edited": "share of rows whose scored text differs from the unedited explanation.",
    }
    summary_means = {"n_spans": "n_spans", "span_share": "span_share", "chars": "chars", "edited": "edited"}

    @classmethod
    def validate(cls, spec: Any) -> None:
        base = spec.condition(spec.baseline)
        if any(t.get("name") != "identity" for t in base.transforms):
            raise SpecError(f"baseline: condition {spec.baseline!r} must be unedited for kind 'redaction' (no "
                            f"transforms, or only identity), found {[t.get('name') for t in base.transforms]}")

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.text.delimiters import expand_family_names

        families = expand_family_names(spec.params["families"])
        sampling = {**spec.sampling.to_dict(), "seed": spec.seed}
        edits = [(c, ctx.transform(c.transforms)) for c in spec.conditions]
        for chunk in ctx.chunks():
            decodes = ctx.decode(chunk, (), sampling)
            stats = [span_stats(d["explanation"], families) for d in decodes]
            batch: dict[str, list] = {}
            for cond, edit in edits:
                texts = [edit(d["explanation"]) for d in decodes]
                rows = ctx.base_rows(chunk, cond.name, decodes, texts, ctx.score(chunk, texts))
                rows["n_spans"] = [s[0] for s in stats]
                rows["span_share"] = [s[1] for s in stats]
                rows["chars"] = [len(t) for t in texts]
                rows["edited"] = [t != d["explanation"] for t, d in zip(texts, decodes)]
                for k, v in rows.items():
                    batch.setdefault(k, []).extend(v)
            yield batch

    def section_text(self, spec: Any, summary: Any) -> str:
        if summary.height == 0:
            return ""
        r = summary.row(0, named=True)
        fams = ", ".join(spec.params["families"])
        return (f"**Spans.** The unedited explanations hold {r['n_spans']:.2f} outermost {fams} spans per decode "
                f"on average, covering {r['span_share']:.1%} of their characters (n={r['n']}).")

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        out = [CAVEATS["ar_ood"]]
        if not spec.sampling.do_sample:
            out.append(CAVEATS["greedy"])
        return out
