"""The store: what the gateway keeps on disk, and the only layer that speaks SQLite.

* :class:`~gateway.store.writer.CacheWriter` (aiosqlite) applies whole
  datasets and incremental changes to the cache, each in one transaction;
* :class:`~gateway.store.reader.CacheReader` (the stdlib :mod:`sqlite3`, in
  the caller's thread) serves the tap path.  aiosqlite hops every call to a
  worker thread, which costs a couple of hundred microseconds per query; a
  decision makes five indexed reads, so it reads synchronously instead;
* :class:`~gateway.store.outbox.Outbox` keeps every event until the platform
  acknowledges it;
* :mod:`gateway.store.files` writes and reads secret files (mode 0600).

Both SQLite files run in WAL mode, so readers never block the writer.  No
other layer imports :mod:`sqlite3` or :mod:`aiosqlite`; SQLite's errors leave
this package as :class:`~gateway.errors.CacheError`.
"""
