"""What both SQL store families (the RR store, `signalgate.remediation`, and the audit store,
`signalgate.datastorage`) share about running on SQLite and PostgreSQL: the versioned
migration runner and schema-version check (`migrations`), which driver errors mean "the
database cannot serve now" as opposed to a bug in a query (`drivers`), and, for SQLite, the
journal mode (`sqlite_wal`) and the child process that owns a connection (`sqlite_process`,
`sqlite_child`).

Each family keeps its own schema — one `.sql` file per version and backend — and its own
error classes; this package decides only the mechanics, once.
"""
