"""The dashboard's reads of its database, cached while the file is unchanged.

Every result is kept under the file's identity (inode, size and mtime of the live file, its WAL
and its snapshot, taken before the file is opened) plus what was asked, in a bounded LRU owned
by the app (``FileCache``). A refresh of an unchanged file then opens nothing; a write (a new
snapshot, a new WAL, a checkpoint) changes the identity, so the next read misses and re-reads.
Taken before opening, an identity is never newer than the data read under it: a change while
reading is seen, at the latest, on the next refresh.

The file is opened on the first miss of a read only, ATTACHed to one in-memory DuckDB connection
the cache keeps (``open_for_read(..., attach_to=...)``), which saves starting a DuckDB instance
per callback; a lock lets one callback at a time use it.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import duckdb

from connectors.duckdb.snapshot import ReadConnection, open_for_read, snapshot_path

T = TypeVar("T")
Stat = tuple[int, int, int] | None


def file_identity(db_path: str) -> tuple[Stat, Stat, Stat]:
    """(inode, size, mtime_ns) of the live file, its WAL and its snapshot; None for one that is absent."""
    def stat(path: str) -> Stat:
        try:
            found = os.stat(path)
        except OSError:
            return None
        return found.st_ino, found.st_size, found.st_mtime_ns
    return stat(db_path), stat(db_path + ".wal"), stat(snapshot_path(db_path))


class Unreadable(Exception):
    """The database could not be opened (missing, locked without a snapshot, not a DuckDB file)."""


class FileCache:
    """Results of reads of one database file, least recently used dropped first.

    Bounded by ``max_entries`` and by ``max_bytes`` over the values that have an ``nbytes``
    (the window rows); a value larger than ``max_bytes`` is returned, not kept.
    """

    def __init__(self, db_path: str, max_entries: int = 64, max_bytes: int = 256 * 2**20) -> None:
        self.db_path = db_path
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.opens = 0  # how often the file was opened: each read that missed once
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._con = duckdb.connect()  # files are attached to it, one read at a time

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def read(self) -> Iterator["Read"]:
        """One callback's reads: one identity, the file opened at most once, closed at the end."""
        with self._lock:
            read = Read(self, file_identity(self.db_path))
            try:
                yield read
            finally:
                read.close()

    def _get(self, key: Hashable) -> tuple[bool, object]:
        if key not in self._entries:
            return False, None
        self._entries.move_to_end(key)
        return True, self._entries[key][0]

    def _put(self, key: Hashable, value: object) -> None:
        size = int(getattr(value, "nbytes", 0))
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def _open(self) -> ReadConnection:
        try:
            reader = open_for_read(self.db_path, attach_to=self._con)
        except Exception as exc:  # noqa: BLE001 - whatever the reason, the page says it and retries
            raise Unreadable(str(exc)) from exc
        self.opens += 1
        return reader


class Read:
    """Cached reads under one identity of the file (``FileCache.read``)."""

    def __init__(self, cache: FileCache, identity: tuple) -> None:
        self._cache, self.identity = cache, identity
        self._reader: ReadConnection | None = None

    def cached(self, name: str, args: tuple, compute: Callable[[ReadConnection], T]) -> T:
        """``compute(reader)`` for this identity, name and arguments, from the cache when there."""
        key = (self.identity, name, args)
        hit, value = self._cache._get(key)
        if hit:
            return value
        value = compute(self.reader())
        self._cache._put(key, value)
        return value

    def reader(self) -> ReadConnection:
        """The open file (opened on first use); raises Unreadable."""
        if self._reader is None:
            self._reader = self._cache._open()
        return self._reader

    def origin(self) -> tuple[bool, float | None]:
        """(is_snapshot, published_at) of the file these reads see."""
        return self.cached("origin", (), lambda reader: (reader.is_snapshot, reader.published_at))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
