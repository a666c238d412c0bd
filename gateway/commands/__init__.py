"""The ``doorgw`` command line: :mod:`.cli` builds the parser, one module per command.

Nothing in :mod:`gateway` imports this package.  Other distributions (the
simulator) add commands through the ``doorgw.commands`` entry point group.
"""
