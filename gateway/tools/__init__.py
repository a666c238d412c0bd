"""Operator tools that run beside the daemon, not in it.

Development PKI and provisioning (:mod:`.pki`, :mod:`.provision`), signing
passes and app codes (:mod:`.issuing`), the bundled example site
(:mod:`.demo`) and synthetic sites for benchmarks (:mod:`.sitegen`).
"""
