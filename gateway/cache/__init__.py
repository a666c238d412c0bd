"""The local cache of the site's access data, in one SQLite file.

Two sides share the file, in WAL mode so neither blocks the other:

* :class:`~gateway.cache.writer.CacheWriter` (aiosqlite) applies whole
  datasets and incremental changes, each in one transaction;
* :class:`~gateway.cache.reader.CacheReader` (the stdlib :mod:`sqlite3`, in
  the caller's thread) serves the tap path.  aiosqlite hops every call to a
  worker thread, which costs a couple of hundred microseconds per query; a
  decision makes five indexed reads, so it reads synchronously instead.
"""

from gateway.cache.reader import CacheReader, SqliteView
from gateway.cache.schema import SCHEMA_VERSION
from gateway.cache.writer import CacheWriter

__all__ = ["SCHEMA_VERSION", "CacheReader", "CacheWriter", "SqliteView"]
