"""doorgw: an edge access-control gateway for coworking spaces.

The package is laid out around a pure decision core:

* :mod:`gateway.model` - the entities synced from the platform (frozen dataclasses);
* :mod:`gateway.schedule` - weekly schedules evaluated on the site's wall clock;
* :mod:`gateway.decision` - ``decide()``: credential + door + instant -> decision;
* :mod:`gateway.access` - the windows a member may open each door in;
* :mod:`gateway.cache` - the local SQLite cache those functions read;
* :mod:`gateway.config` - the validated TOML configuration;
* :mod:`gateway.cli` - the ``doorgw`` command.
"""

__version__ = "0.1.0"
