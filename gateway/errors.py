"""One error hierarchy for the whole gateway.

Every error the gateway raises on purpose derives from :class:`DoorgwError`;
each leaf also inherits the builtin it resembles, so callers that only know
Python's own exceptions still catch it sensibly.  The CLI prints ``str(err)``
of these and exits with a status code; anything else is a bug.
"""

from __future__ import annotations


class DoorgwError(Exception):
    """Base of every error doorgw raises deliberately."""


class ConfigError(DoorgwError, ValueError):
    """The configuration file is missing, unreadable or invalid.

    ``path`` names the file and ``key`` the offending setting (dotted, with
    list indexes such as ``doors[2].id``) when one is known.
    """

    def __init__(
        self, path: str, message: str, key: str | None = None, problems: tuple[str, ...] = ()
    ) -> None:
        self.path = path
        self.key = key
        self.message = message
        where = f"{path}: {key}" if key else path
        #: Every problem found, ``key: message`` each (the message is the first);
        #: ``doorgw check-config`` lists them all.
        self.problems = problems or ((f"{key}: {message}" if key else message),)
        super().__init__(f"{where}: {message}")


class DatasetError(DoorgwError, ValueError):
    """A dataset or change set is malformed or internally inconsistent.

    Nothing of a dataset that raises this is applied.
    """


class CredentialFormatError(DoorgwError, ValueError):
    """A credential read (card UID, Wiegand number, PIN, ...) is not well formed."""


class CacheError(DoorgwError):
    """The local cache cannot be opened or used."""


class CacheCorruptError(CacheError):
    """A database file is damaged: not a database, or failing its integrity check."""


class CacheSchemaError(CacheError):
    """The cache file was written by a newer doorgw, or is not a doorgw cache."""


class UsageError(DoorgwError, ValueError):
    """A command-line argument is well formed for the parser but makes no sense."""


class HardwareError(DoorgwError, OSError):
    """Hardware the configuration needs is not there: no GPIO chip, no libosdp."""


class StopTimeoutError(DoorgwError, TimeoutError):
    """The gateway's tasks did not stop in time; the message shows where they were."""


class ServiceFailedError(DoorgwError, RuntimeError):
    """An essential service kept failing: the process must end for systemd to restart it."""
