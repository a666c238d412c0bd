"""The decision core: pure functions and frozen values, no I/O, no clock reads.

* :mod:`~gateway.core.model` - the entities synced from the platform;
* :mod:`~gateway.core.schedule`, :mod:`~gateway.core.localtime` - weekly
  hours and instants on the site's wall clock;
* :mod:`~gateway.core.credentials` - credential reads and their encodings;
* :mod:`~gateway.core.decision` - ``decide()`` and ``decide_code()``:
  credential + door + instant + conditions -> decision;
* :mod:`~gateway.core.policy` - the rules around a decision: staleness,
  feedback, code settlement, keypad failures, command acceptance;
* :mod:`~gateway.core.access` - the windows a member may open each door in;
* :mod:`~gateway.core.qr`, :mod:`~gateway.core.base45`,
  :mod:`~gateway.core.jws` - signed QR codes and signed messages.

Everything here takes what it needs as arguments (a cache view, an instant),
so the daemon, the CLI, the simulator and the tests get the same answer for
the same inputs.  Nothing here imports asyncio, SQLite, MQTT, GPIO, serial or
HTTP libraries: ``tests/test_layers.py`` fails if anything does.
"""
