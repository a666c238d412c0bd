"""The running gateway: a small composition root and the services it runs.

:mod:`~gateway.app.gateway` opens the parts (store, hardware, network) in an
exit stack and runs the named services in one task group; each service owns
its own state: taps (the presentation pipeline), site modes, the uplink to
the platform, the event log, the sync engine, clock trust and status.
"""
