"""Read a DuckDB file while another process writes it (docs/sql.md, "Reading while streaming").

DuckDB lets one process open a file while a writer holds it, not even read-only. So the writer
publishes snapshots: CHECKPOINT (the file alone is then a complete database), copy it to a
temporary name beside it and rename that over ``<db>.snapshot.duckdb`` (atomic on POSIX, so a
reader sees the old or the new snapshot, never half of one). Readers open the live file when no
writer holds it, else the newest snapshot, and are told how old the data is.
"""
from __future__ import annotations

import glob
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

SNAPSHOT_SUFFIX = ".snapshot.duckdb"
TEMPORARY_INFIX = ".tmp-"  # <snapshot>.tmp-<pid of the publishing process>
ATTACHED_AS = "reading"  # the catalog name of a file opened with open_for_read(..., attach_to=con)


def snapshot_path(db_path: str | os.PathLike) -> str:
    """Where the snapshot of ``db_path`` lives: beside it, so the rename stays on one filesystem."""
    return os.fspath(db_path) + SNAPSHOT_SUFFIX


def publish_snapshot(con: duckdb.DuckDBPyConnection, db_path: str | os.PathLike) -> str:
    """Checkpoint ``con`` and publish a copy of ``db_path``; returns the snapshot's path.

    Call it in the thread that writes, between writes: the copy is consistent only while nothing
    is written between the CHECKPOINT and the end of the copy. The snapshot's mtime is set to the
    checkpoint time, which is what readers report as the data's age.

    The copy runs in a child process (``cp``): DuckDB's lock on the file is a POSIX fcntl lock,
    which the kernel drops as soon as *this* process closes any descriptor of the file, so an
    in-process copy would silently unlock the database for other writers. A failed copy raises
    OSError with cp's reason and leaves no temporary behind.
    """
    target = snapshot_path(db_path)
    temporary = f"{target}{TEMPORARY_INFIX}{os.getpid()}"
    remove_stale_temporaries(db_path)
    checkpoint_time = time.time()
    con.execute("CHECKPOINT")
    try:
        copy = subprocess.run(["cp", os.fspath(db_path), temporary], capture_output=True, text=True)
        if copy.returncode != 0:  # the file vanished, the disk is full: one line, not a traceback
            reason = copy.stderr.strip().splitlines()[-1] if copy.stderr.strip() else f"exit {copy.returncode}"
            raise OSError(f"copying {os.fspath(db_path)} to {temporary} failed: {reason}")
        os.utime(temporary, (checkpoint_time, checkpoint_time))
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(db_path: str | os.PathLike) -> list[str]:
    """Delete half-copied snapshots left by publishers that died mid-copy; returns their paths.

    A temporary whose PID is alive (or not a number) is left alone: it may be a copy in progress.
    Files this process may not delete are skipped.
    """
    prefix = snapshot_path(db_path) + TEMPORARY_INFIX
    removed = []
    for path in glob.glob(glob.escape(prefix) + "*"):
        pid = path[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            os.remove(path)
        except OSError:
            continue
        removed.append(path)
    return removed


@dataclass
class ReadConnection:
    """A read-only connection, and whether (and as of when) it reads a snapshot.

    Close it soon (use ``with``): while a reader holds the live file open, a writer cannot open it.
    """

    con: duckdb.DuckDBPyConnection
    path: str
    is_snapshot: bool
    published_at: float | None  # epoch seconds of the snapshot's checkpoint; None for the live file
    attached_from: str | None = None  # attach_to's default catalog before the ATTACH; None: con is our own

    @property
    def age_s(self) -> float:
        """Seconds since the data was current: 0 for the live file."""
        return 0.0 if self.published_at is None else max(0.0, time.time() - self.published_at)

    def close(self) -> None:
        """Close the connection, or (attach_to) detach the file, which releases it the same way."""
        if self.attached_from is None:
            self.con.close()
        else:
            self.con.execute(f'USE "{self.attached_from}"')
            self.con.execute(f"DETACH {ATTACHED_AS}")

    def __enter__(self) -> "ReadConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    return "lock" in str(exc).lower()


def _connect_read_only(path: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(path, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con


def _attach_read_only(con: duckdb.DuckDBPyConnection, path: str) -> duckdb.DuckDBPyConnection:
    con.execute("ATTACH '{}' AS {} (READ_ONLY)".format(path.replace("'", "''"), ATTACHED_AS))
    con.execute(f"USE {ATTACHED_AS}")
    con.execute("SET TimeZone = 'UTC'")
    return con


def open_for_read(db_path: str | os.PathLike, attach_to: duckdb.DuckDBPyConnection | None = None) -> ReadConnection:
    """Open ``db_path`` read-only, or its newest snapshot when a writer holds the file.

    With ``attach_to`` (a connection of the caller's, used by one thread at a time) the file is
    ATTACHed to it read-only as its default catalog and ``close()`` detaches it: no new DuckDB
    instance per read (25-40 ms of CPU each on a 1M-item file, docs/performance.md "Dashboard").
    Raises FileNotFoundError when neither exists, and the original lock error when a writer holds
    the file and has published no snapshot yet.
    """
    live = os.fspath(db_path)
    snapshot = snapshot_path(live)
    if not Path(live).exists():
        raise FileNotFoundError(f"no such database: {live}")
    remove_stale_temporaries(live)
    attached_from = None
    if attach_to is None:
        connect = _connect_read_only
    else:
        attached_from = attach_to.execute("SELECT current_database()").fetchall()[0][0]

        def connect(path: str) -> duckdb.DuckDBPyConnection:
            return _attach_read_only(attach_to, path)
    try:
        return ReadConnection(connect(live), live, is_snapshot=False, published_at=None, attached_from=attached_from)
    except duckdb.IOException as exc:
        if not _is_lock_conflict(exc):
            raise
        if not Path(snapshot).exists():
            raise duckdb.IOException(
                f"{live} is held by a writer that has published no snapshot yet ({snapshot}); "
                "the streaming job publishes one every few seconds"
            ) from exc
    # Stat first, then open: a snapshot replaced in between is newer than reported, never older.
    published_at = os.stat(snapshot).st_mtime
    return ReadConnection(connect(snapshot), snapshot, is_snapshot=True, published_at=published_at,
                          attached_from=attached_from)
