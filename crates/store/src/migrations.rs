//! Numbered schema migrations, run in order; `PRAGMA user_version` holds the number of the
//! last one applied. Migrations are added, never edited.

/// The migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE members (
        member INTEGER PRIMARY KEY,
        key BLOB NOT NULL,
        label TEXT NOT NULL
    );
    CREATE TABLE chains (
        author INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        hlc INTEGER NOT NULL,
        deps BLOB NOT NULL,
        names INTEGER NOT NULL,
        compacted INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE chain_names (
        author INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (author, idx)
    ) WITHOUT ROWID;
    CREATE TABLE commits (
        author INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        hlc INTEGER NOT NULL,
        deps BLOB NOT NULL,
        names INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (author, seq)
    ) WITHOUT ROWID;
    CREATE TABLE proofs (
        author INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        digest BLOB,
        sig BLOB NOT NULL,
        PRIMARY KEY (author, seq)
    ) WITHOUT ROWID;
    CREATE TABLE applied (author INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE local_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE records (
        coll INTEGER NOT NULL,
        id TEXT NOT NULL,
        state BLOB NOT NULL,
        live INTEGER NOT NULL,
        conflicted INTEGER NOT NULL,
        PRIMARY KEY (coll, id)
    ) WITHOUT ROWID;
    CREATE INDEX records_conflicted ON records (conflicted) WHERE conflicted = 1;
    CREATE TABLE stash_runs (
        id INTEGER PRIMARY KEY,
        author INTEGER NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        digest BLOB,
        sig BLOB
    );
    CREATE INDEX stash_runs_author ON stash_runs (author);
    CREATE TABLE stash_commits (
        run INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (run, seq)
    ) WITHOUT ROWID;
    CREATE TABLE peers (
        member INTEGER PRIMARY KEY,
        vv BLOB NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE bundles_seen (
        name TEXT PRIMARY KEY,
        sender INTEGER NOT NULL,
        coverage BLOB NOT NULL,
        receipt BLOB,
        snapshot BLOB,
        bytes INTEGER NOT NULL,
        seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        stored_as TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    "#,
];
