"""``roundtrip``: decode under each condition's generation hooks and sampling, reconstruct, score.

Each condition is one on-policy decode of every activation (its ``hooks`` applied together, its
``sampling``/``seed`` overriding the spec's), optionally edited by ``transforms`` before the AR
reads it.  Conditions with equal hooks and sampling share one decode (content-keyed cache).

Leak audit columns (per row, from the explanation the AR scores):

* ``n_banned`` — characters of the explanation that one of the condition's hooks bans (the
  union of the hooks' ``banned_chars``, e.g. ``ban_chars``); > 0 means the ban leaked.
* ``substitutes`` — comma-separated delimiter families, other than banned ones, with at least one
  span in the explanation (``params.audit_families``, default every registered family): where the
  quoting went when quotes were banned.
* ``n_spans`` — outermost spans of those families.
* ``leaked`` / ``with_spans`` — ``n_banned > 0`` / ``n_spans > 0`` (their means are the summary's
  leak and substitution rates).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import Field


def banned_chars(hooks: tuple[dict, ...]) -> frozenset[str]:
    """Characters banned by hook specs: the union of each hook's ``banned_chars`` (ban hooks)."""
    from nla_probe.hooks import hook_from_spec

    out: set[str] = set()
    for spec in hooks:
        out |= set(getattr(hook_from_spec(dict(spec)), "banned_chars", ()))
    return frozenset(out)


def _families_check(v: list) -> str | None:
    from nla_probe.errors import NLAProbeError
    from nla_probe.text.delimiters import expand_family_names

    if not all(isinstance(x, str) for x in v):
        return "expected an array of delimiter family names"
    try:
        expand_family_names(v)
    except NLAProbeError as e:
        return str(e)
    return None


def audit(text: str, banned: frozenset[str], families: tuple[str, ...]) -> tuple[int, str, int]:
    """``(n_banned, substitutes, n_spans)`` of one explanation (see module doc)."""
    from nla_probe.text.delimiters import get_family
    from nla_probe.text.spans import find_spans

    n_banned = sum(1 for ch in text if ch in banned)
    allowed = tuple(f for f in families if not (get_family(f).charset & banned))
    if not allowed:
        return n_banned, "", 0
    spans = find_spans(text, allowed).outermost()
    used = sorted({s.family for s in spans})
    return n_banned, ",".join(used), len(spans)


@register_experiment
class Roundtrip(ExperimentKind):
    """On-policy round trip per condition (see module doc)."""

    name = "roundtrip"
    description = "decode under generation hooks and sampling per condition, optionally edit, reconstruct, score"
    condition_keys = ("hooks", "transforms", "sampling", "seed")
    params = {
        "audit_families": Field((list,), lambda: ["all"], "delimiter families counted by the leak audit",
                                _families_check),
    }
    columns = {"n_banned": "Int64", "leaked": "Boolean", "substitutes": "Utf8", "n_spans": "Int64",
               "with_spans": "Boolean"}
    column_docs = {
        "n_banned": "characters in the scored explanation that the condition's hooks ban (a leak if > 0).",
        "leaked": "share of explanations with n_banned > 0.",
        "with_spans": "share of explanations with at least one span of a delimiter family the condition "
                      "does not ban (the substitution audit).",
    }
    summary_means = {"leaked": "leaked", "with_spans": "with_spans"}

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.text.delimiters import expand_family_names

        families = expand_family_names(spec.params["audit_families"])
        plans = [(c, spec.sampling_for(c), ctx.transform(c.transforms), banned_chars(c.hooks))
                 for c in spec.conditions]
        for chunk in ctx.chunks():
            batch: dict[str, list] = {}
            for cond, sampling, edit, banned in plans:
                decodes = ctx.decode(chunk, cond.hooks, sampling)
                texts = [edit(d["explanation"]) for d in decodes]
                rows = ctx.base_rows(chunk, cond.name, decodes, texts, ctx.score(chunk, texts))
                audits = [audit(t, banned, families) for t in texts]
                rows["n_banned"] = [a[0] for a in audits]
                rows["leaked"] = [a[0] > 0 for a in audits]
                rows["substitutes"] = [a[1] for a in audits]
                rows["n_spans"] = [a[2] for a in audits]
                rows["with_spans"] = [a[2] > 0 for a in audits]
                for k, v in rows.items():
                    batch.setdefault(k, []).extend(v)
            yield batch

    def section_text(self, spec: Any, summary: Any) -> str:
        if summary.height == 0 or not any(c.hooks for c in spec.conditions):
            return ""
        lines = ["**Leak audit.** Share of explanations containing a banned character, and share using "
                 "another delimiter family instead:", ""]
        for r in summary.iter_rows(named=True):
            cond = spec.condition(r["condition"])
            if not banned_chars(cond.hooks):
                continue
            lines.append(f"- `{r['condition']}`: leaked {r['leaked']:.1%}, other delimiters {r['with_spans']:.1%} "
                         f"(n={r['n']})")
        return "\n".join(lines) if len(lines) > 2 else ""

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        out = []
        if not spec.sampling.do_sample and not any(c.sampling.get("do_sample") for c in spec.conditions):
            out.append(CAVEATS["greedy"])
        if any(c.transforms for c in spec.conditions):
            out.append(CAVEATS["ar_ood"])
        return out
