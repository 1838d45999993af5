"""A DuckDB connection locked down for untrusted SQL (``tickerpulse query``; docs/sql.md, "Sandbox").

After ``lock_down`` the connection cannot touch the file system or other databases (no COPY TO,
EXPORT, read_csv/read_text/glob on paths, ATTACH, INSTALL/LOAD), and no setting can be changed
back (``lock_configuration``). ``single_statement`` refuses SQL that is not exactly one
read-only statement. Macros must be installed before ``lock_down``.
"""
from __future__ import annotations

import duckdb

# SELECT covers WITH, FROM-first, VALUES, DESCRIBE, SHOW and SUMMARIZE; PRAGMA and CALL run
# table functions (settings cannot change once locked).
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN,
                             duckdb.StatementType.PRAGMA, duckdb.StatementType.CALL})


class Refused(Exception):
    """SQL the sandbox does not run; the message says why, in one line."""


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def single_statement(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """The one read-only statement in ``sql``; Refused if there are none, several or a write."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise Refused(f"SQL failed: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise Refused(f"one SQL statement at a time, not {len(statements)}")
    (statement,) = statements
    if statement.type not in READ_STATEMENTS:
        raise Refused(f"read-only: {statement.type.name} statements are refused "
                      "(SELECT, EXPLAIN, PRAGMA and CALL run)")
    return statement
