"""``python -m nla_probe`` runs the command line."""

from nla_probe.cli import main

main()
