"""``python -m nla_probe`` runs the command line."""

from .cli import main

main()
