"""Credential readers: sans-I/O protocol code (bytes or bits in, typed reads out)."""
