"""``python -m gateway`` runs the ``doorgw`` command."""

from gateway.commands.cli import run_cli

run_cli()
