"""Named exceptions of nla-probe.

Every error subclasses a builtin (``ValueError`` or ``KeyError``) so that existing ``except``
clauses keep working.  Messages name the file, the field, the expected and the found value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class NLAProbeError(Exception):
    """Base class of every nla-probe error."""


class ContractError(NLAProbeError, ValueError):
    """A checkpoint (sidecar, config, tokenizer, weights) breaks the released NLA contract."""

    def __init__(self, path: object, field: str, expected: object, found: object, hint: str = ""):
        self.path, self.field, self.expected, self.found = str(path), field, expected, found
        msg = f"{path}: field '{field}': expected {expected}, found {found!r}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class InputError(NLAProbeError, ValueError):
    """Bad user input: vectors, texts, activation files, parameters."""


class SpecError(NLAProbeError, ValueError):
    """A malformed ablation spec file (unknown key, wrong type, unknown name)."""


class ModelOutputError(NLAProbeError, ValueError):
    """A model produced non-finite outputs (NaN/inf); the message names the rows."""


class NLAProbeWarning(UserWarning):
    """Base class of nla-probe warnings: legal but surprising inputs."""


class TemplateDriftWarning(NLAProbeWarning):
    """A sidecar's prompt template differs from the released text (the pair was trained on that)."""


class TaggedTextWarning(NLAProbeWarning):
    """Texts given to the AR still hold a complete ``<explanation>…</explanation>`` pair."""


class UnknownNameError(NLAProbeError, KeyError):
    """A name that is not in a registry; the message lists the valid names."""

    def __init__(self, kind: str, name: object, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


def check_keys(given: Iterable[Any], valid: Iterable[str], where: str, error: type[Exception] = SpecError,
               shown: Iterable[str] | None = None) -> None:
    """Raise ``error`` naming the keys of ``given`` that are not in ``valid`` (in order of appearance)
    and listing the valid keys (``shown`` when the list to show differs from the accepted set).

    Message: ``"<where>: unknown key(s) ['k']; valid keys: ['a', 'b']"``.
    """
    valid = set(valid)
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid if shown is None else shown)}")
