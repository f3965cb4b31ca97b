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
    // 2: the authentication gate (issue 10). Stashed runs remember which member's
    // authenticated bundle carried them, when, and their size (quotas and expiry; runs kept
    // before this version have sender 0 and time 0, so the first settle drops them: they were
    // kept without a checked signature). Members whose history forked are frozen. Quarantine
    // rows carry the refused content's name and size, with or without a copy. Bundles that
    // cannot be checked yet wait in a bounded folder, listed here.
    r#"
    ALTER TABLE stash_runs ADD COLUMN sender INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stash_runs ADD COLUMN at_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stash_runs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX stash_runs_sender ON stash_runs (sender);
    CREATE TABLE frozen (member INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
    ALTER TABLE quarantine ADD COLUMN name TEXT NOT NULL DEFAULT '';
    ALTER TABLE quarantine ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX quarantine_name ON quarantine (name);
    CREATE TABLE waiting (
        name TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        origin TEXT NOT NULL,
        sender INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        why TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 3: commits in the columnar form (bundles/SPEC.md §17): each stored or stashed
    // commit's bytes say their form (0 row, 1 columnar); every commit before is a row one.
    r#"
    ALTER TABLE commits ADD COLUMN form INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stash_commits ADD COLUMN form INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: one ledger of what was sent and not yet confirmed, for every transport (issue 15),
    // instead of a meta key per transport and peer. `entry` is postcard (VersionVector held
    // when sent, ms since the oldest unconfirmed send). Email's last send to all its readers
    // (a bare VersionVector) and its last snapshot become peers `*` and `*snapshot`; a
    // bare vector gains a since of 0 (postcard's varint 0 is the byte 00, appended exactly
    // through hex: SQLite's || would turn the blob into text).
    r#"
    CREATE TABLE sent (
        transport TEXT NOT NULL,
        peer TEXT NOT NULL,
        entry BLOB NOT NULL,
        PRIMARY KEY (transport, peer)
    ) WITHOUT ROWID;
    INSERT INTO sent (transport, peer, entry)
        SELECT 'email', substr(key, 12), value FROM meta WHERE substr(key, 1, 11) = 'email_sent:';
    INSERT INTO sent (transport, peer, entry)
        SELECT 'sms', substr(key, 10), value FROM meta WHERE substr(key, 1, 9) = 'sms_sent:';
    INSERT INTO sent (transport, peer, entry)
        SELECT 'email', '*', unhex(hex(value) || '00') FROM meta WHERE key = 'email_receipt';
    INSERT INTO sent (transport, peer, entry)
        SELECT 'email', '*snapshot', value FROM meta WHERE key = 'email_snapshot';
    DELETE FROM meta WHERE substr(key, 1, 11) = 'email_sent:' OR substr(key, 1, 9) = 'sms_sent:'
        OR key IN ('email_receipt', 'email_snapshot');
    "#,
];
