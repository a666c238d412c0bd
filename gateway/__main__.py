"""``python -m gateway`` runs the ``doorgw`` command."""

from gateway.cli import run

run()
