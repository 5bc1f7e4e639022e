"""The ``nla-probe`` command line.  Sub-commands import heavy modules only when they run."""

from __future__ import annotations

import typer

from nla_probe.cli import core
from nla_probe.cli.help import untag_flags

untag_flags()  # flags show no `<bool>` type tag in the rich help
app = typer.Typer(
    name="nla-probe",
    help="Explanation surgery on Natural Language Autoencoders: decode, edit, reconstruct, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
core.register(app)

for _name in ("ablate", "plan"):  # sub-command modules with a register(app) function
    import importlib

    try:
        _mod = importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as e:  # pragma: no cover - only while the module is absent
        if e.name != f"{__name__}.{_name}":
            raise
    else:
        _mod.register(app)


def main() -> None:
    """Console-script entry point: runs the app and turns nla-probe errors into one-line messages."""
    import sys
    import warnings

    from nla_probe.errors import NLAProbeError, NLAProbeWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # one line for our own warnings
        if issubclass(category, NLAProbeWarning):
            typer.secho(f"warning: {message}", err=True, fg="yellow")
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        app()
    except NLAProbeError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        sys.exit(2)
