"""doorgw: an edge access-control gateway for coworking spaces.

The package is laid out in layers; each imports only those below it
(docs/architecture.md draws the arrows, tests/test_layers.py enforces them):

* :mod:`gateway.core` - the pure decision core;
* :mod:`gateway.wire` - the platform contract;
* :mod:`gateway.config` - the validated TOML configuration;
* :mod:`gateway.store` - the SQLite cache, the event outbox, secret files;
* :mod:`gateway.hw` - doors, feedback and readers;
* :mod:`gateway.net` - MQTT, the staff API, systemd;
* :mod:`gateway.app` - the running gateway and its services;
* :mod:`gateway.tools` - provisioning, issuing, the example site;
* :mod:`gateway.commands` - the ``doorgw`` command.

:mod:`gateway.errors`, :mod:`gateway.clock` and :mod:`gateway.events` are the
vocabulary every layer shares.
"""

__version__ = "0.1.0"
