//! The SQLite-backed store.

use crate::codec::{self, CodecError};
use crate::migrations::MIGRATIONS;
use ferry_model::commit::{ChainContext, CommitBytes, Form};
use ferry_model::crypto::{PublicKey, Signature};
use ferry_model::{Hash, Hlc, MemberId, Op, RecordState, Stamp, Value, VersionVector};
use ferry_sync::plan::Coverage;
use ferry_sync::{MemberInfo, Proof, StashedRun, Storage, StoredCommit};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The SQLCipher statement that sets a raw key on schema `schema`.
fn key_pragma(schema: &str, key: &[u8; 32]) -> String {
    format!("PRAGMA {schema}.key = \"x'{}'\"", hex(key))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record blob does not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A stored value does not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Something the store should hold is missing.
    #[error("the store is missing {0}")]
    Missing(String),
    /// Another program kept the database busy (a write of its own) longer than the store
    /// waits.
    #[error(
        "the database is busy: another program has been writing to it for more than {} s; wait for it to finish, then run this again",
        BUSY_TIMEOUT.as_secs()
    )]
    Busy,
    /// Another program wrote to the store between two steps of a large apply
    /// ([`ferry_sync::Storage::step`]); what was applied before stays.
    #[error(
        "another ferry wrote to this home while a large bundle was being applied; what was applied so far is kept: import the bundle again to finish it"
    )]
    Interleaved,
    /// The database was written by a newer ferry.
    #[error(
        "this home was written by a newer ferry (schema {found}, this ferry knows up to {known}); upgrade ferry"
    )]
    NewerSchema {
        /// Schema version found.
        found: u32,
        /// Newest schema this build knows.
        known: u32,
    },
    /// The database is encrypted under another key, or is not a database.
    #[error("the store does not open with this key (or it is not a ferry store)")]
    WrongKey,
}

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// How many bytes of new commits a write transaction applies before it takes a step
/// ([`Store::set_step_bytes`]): about 40,000 records of a typical form, a write-ahead log of
/// a few megabytes.
pub const STEP_BYTES: u64 = 1 << 20;

/// The metadata key a step sets ([`ferry_sync::Storage::step`]): an apply made part of a
/// bundle durable and has not finished (settled) it yet. Whoever finishes it removes it.
pub const UNSETTLED: &str = "unsettled";

/// How long a write waits for another connection's write to end.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a write waits quietly before [`Store::set_on_wait`]'s callback is told.
const WAIT_NOTICE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether SQLite said another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// sender, coverage, receipt, snapshot, size of a seen bundle.
type SeenRow = (u32, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// hash, hlc, deps, names, body of a stored commit.
type CommitRow = (Vec<u8>, i64, Vec<u8>, u32, Vec<u8>, i64);

/// Maps keyed by short local names: a fast, non-cryptographic hasher is enough here.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct NameCache {
    by_name: FastMap<String, u32>,
    by_id: FastMap<u32, String>,
    loaded: bool,
    /// Names were added by a transaction that has not committed (yet).
    uncommitted: bool,
    /// SQLite's `data_version` when the cache was checked: it changes when another
    /// connection (a listener in another process, say) commits, which may add names.
    data_version: Option<i64>,
}

/// Called when a write has waited [`WAIT_NOTICE`] for another connection.
type OnWait = Box<dyn FnMut() + Send>;

/// One node's database.
pub struct Store {
    conn: Connection,
    names: NameCache,
    on_wait: Option<OnWait>,
    step_bytes: Option<u64>,
}

/// A conflicted record.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictRow {
    /// Collection.
    pub collection: String,
    /// Record id.
    pub id: String,
    /// Its merge state.
    pub state: RecordState,
}

/// What a peer is known to hold.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    /// The peer.
    pub member: MemberId,
    /// Its version vector.
    pub vv: VersionVector,
    /// When it was last raised (ms since the epoch).
    pub updated_ms: u64,
}

/// A bundle file this node has read or written, by its content name.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleSeen {
    /// The file name (content hash).
    pub name: String,
    /// Its sender.
    pub sender: MemberId,
    /// The runs it carries.
    pub coverage: Vec<Coverage>,
    /// The sender's receipt in it, when its signature could be checked.
    pub receipt: Option<VersionVector>,
    /// The state its snapshot reflects, if it carries one.
    pub snapshot: Option<VersionVector>,
    /// Its size.
    pub bytes: u64,
}

/// A quarantined input.
#[derive(Clone, Debug, PartialEq)]
pub struct QuarantineRow {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Where it came from.
    pub source: String,
    /// Where the copy is kept; empty when no copy could be kept.
    pub stored_as: String,
    /// Why it was refused.
    pub reason: String,
    /// The refused content's name (BLAKE3, 32 hex digits).
    pub name: String,
    /// Its size.
    pub bytes: u64,
}

/// A bundle that came by a transport and cannot be checked yet, kept to be tried again.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitingRow {
    /// Its content name.
    pub name: String,
    /// Where it is kept.
    pub path: String,
    /// Where it came from (for reports).
    pub origin: String,
    /// The member its header names.
    pub sender: MemberId,
    /// Its size.
    pub bytes: u64,
    /// When it was kept (ms since the epoch).
    pub at_ms: u64,
    /// What it waits for.
    pub why: String,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA cipher_log_level = NONE")?;
        Self::init(conn)
    }

    /// Opens (or creates) the database at `path`, encrypted with SQLCipher under the raw
    /// 256-bit `key` (every page, the write-ahead log and temporary files; SQLCipher's own
    /// passphrase derivation is skipped: the caller derives `key`). A database encrypted
    /// under another key, or not encrypted, is [`StoreError::WrongKey`].
    pub fn open_encrypted(path: &Path, key: &[u8; 32]) -> Result<Store> {
        let conn = Connection::open(path)?;
        // SQLCipher logs to standard error by default: errors here are ferry's to report.
        conn.execute_batch("PRAGMA cipher_log_level = NONE")?;
        conn.execute_batch(&key_pragma("main", key))?;
        // The first read of the schema tells whether the key is the right one.
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::NotADatabase =>
            {
                return Err(StoreError::WrongKey);
            }
            Err(e) => return Err(e.into()),
        }
        Self::init(conn)
    }

    /// Writes an encrypted copy of this database to `dest` under `key` (SQLCipher's
    /// `sqlcipher_export`), schema version included. `dest` must not exist.
    pub fn export_encrypted(&self, dest: &Path, key: &[u8; 32]) -> Result<()> {
        self.export_to(dest, &format!("x'{}'", hex(key)))
    }

    /// Writes a plain (unencrypted) copy of this encrypted database to `dest`, schema version
    /// included. `dest` must not exist.
    pub fn export_plain(&self, dest: &Path) -> Result<()> {
        self.export_to(dest, "")
    }

    /// `sqlcipher_export` into `dest` attached with `key` (`""`: no encryption).
    fn export_to(&self, dest: &Path, key: &str) -> Result<()> {
        let dest = dest
            .to_str()
            .ok_or_else(|| StoreError::Corrupt("the home folder's path is not UTF-8".into()))?;
        let version: u32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        self.conn.execute(
            "ATTACH DATABASE ?1 AS exported KEY ?2",
            rusqlite::params![dest, key],
        )?;
        let result = self
            .conn
            .query_row("SELECT sqlcipher_export('exported')", [], |_| Ok(()))
            .and_then(|()| {
                self.conn
                    .execute_batch(&format!("PRAGMA exported.user_version = {version}"))
            });
        self.conn.execute_batch("DETACH DATABASE exported")?;
        Ok(result?)
    }

    /// Changes the key of this encrypted database (SQLCipher's `rekey`: every page is
    /// written again under the new key).
    pub fn rekey(&self, key: &[u8; 32]) -> Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA rekey = \"x'{}'\"", hex(key)))?;
        Ok(())
    }

    /// An in-memory database (tests, simulations).
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit that returned is on disk, even if the power fails right after.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A large import grows the write-ahead log to its size; once checkpointed, the log
        // is cut back to this instead of keeping that room on disk.
        conn.pragma_update(None, "journal_size_limit", 8 << 20)?;
        let mut store = Store {
            conn,
            names: NameCache::default(),
            on_wait: None,
            step_bytes: Some(STEP_BYTES),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: u32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(StoreError::NewerSchema {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Rewrites the database file without its free space (after compaction or purge).
    pub fn vacuum(&mut self) -> Result<()> {
        self.conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    /// SQLite's own check of the database file (`PRAGMA integrity_check`): empty when it is
    /// sound, else what is wrong (at most 20 lines).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check(20)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            let line = row?;
            if line != "ok" {
                out.push(line);
            }
        }
        Ok(out)
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Empties the name cache if the last transaction that added names rolled back.
    fn refresh_names(&mut self) {
        if self.names.uncommitted {
            self.names = NameCache::default();
        }
    }

    /// Sets how many bytes of new commits an apply takes between two steps (each its own
    /// SQLite transaction; [`ferry_sync::Storage::step`]); `None`: every bundle in one
    /// transaction. [`STEP_BYTES`] unless set. A large bundle applied in one transaction
    /// grows the write-ahead log to the size of what it writes, and SQLite copies all of it
    /// again when it commits.
    pub fn set_step_bytes(&mut self, bytes: Option<u64>) {
        self.step_bytes = bytes;
    }

    /// Calls `f` (once per write) when a write transaction has waited a second for another
    /// connection's write to end, and goes on waiting: the caller can say for whom.
    pub fn set_on_wait(&mut self, f: Option<OnWait>) {
        self.on_wait = f;
    }

    /// Whether taking the write lock waits longer than [`WAIT_NOTICE`]: tried once (and let
    /// go at once) with that as the timeout.
    fn write_waits(&mut self) -> Result<bool> {
        self.conn.busy_timeout(WAIT_NOTICE)?;
        let probe = self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        match probe {
            Ok(()) => Ok(false),
            Err(e) if is_busy(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a write transaction. `now_ms` stamps bookkeeping rows.
    pub fn transaction(&mut self, now_ms: u64) -> Result<StoreTx<'_>> {
        self.refresh_names();
        if self.on_wait.is_some() && self.write_waits()? {
            if let Some(f) = &mut self.on_wait {
                f();
            }
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| {
                if is_busy(&e) {
                    StoreError::Busy
                } else {
                    e.into()
                }
            })?;
        check_data_version(&tx, &mut self.names)?;
        Ok(StoreTx {
            tx,
            names: &mut self.names,
            step_bytes: self.step_bytes,
            now_ms,
            blob: Vec::new(),
            new_order: FieldOrder::default(),
            pending: Pending::default(),
            frozen_seen: Default::default(),
        })
    }

    /// Starts a read transaction (a consistent snapshot).
    pub fn read(&mut self) -> Result<StoreTx<'_>> {
        self.refresh_names();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        check_data_version(&tx, &mut self.names)?;
        Ok(StoreTx {
            tx,
            names: &mut self.names,
            step_bytes: None,
            now_ms: 0,
            blob: Vec::new(),
            new_order: FieldOrder::default(),
            pending: Pending::default(),
            frozen_seen: Default::default(),
        })
    }
}

/// Drops the name cache if another connection committed since it was checked. Runs inside
/// the transaction after a read, so the version belongs to the transaction's snapshot.
fn check_data_version(tx: &rusqlite::Transaction<'_>, names: &mut NameCache) -> Result<()> {
    tx.prepare_cached("SELECT count(*) FROM applied WHERE 0")?
        .query_row([], |_| Ok(()))?;
    let version: i64 = tx
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    if names.data_version != Some(version) {
        *names = NameCache {
            data_version: Some(version),
            ..NameCache::default()
        };
    }
    Ok(())
}

/// A transaction on the store. Dropping it without [`StoreTx::commit`] rolls back.
pub struct StoreTx<'a> {
    tx: rusqlite::Transaction<'a>,
    names: &'a mut NameCache,
    /// [`Store::set_step_bytes`] (`None` in a read transaction).
    step_bytes: Option<u64>,
    now_ms: u64,
    /// The buffer record states are encoded into, reused from record to record.
    blob: Vec<u8>,
    /// The fields of the last new record inserted, in name order.
    new_order: FieldOrder,
    /// What this transaction has applied and its clock, kept here and written once when it
    /// commits (an import of thousands of one-record commits would otherwise write both
    /// for each).
    pending: Pending,
    /// Freezes read in this transaction (`None`: not frozen), forgotten when one is written.
    frozen_seen: std::cell::RefCell<HashMap<u32, Option<u64>>>,
}

/// Bookkeeping a transaction writes when it commits.
#[derive(Default)]
struct Pending {
    /// The clock, once read or set; `clock_set`: set since.
    clock: std::cell::Cell<Option<Hlc>>,
    clock_set: bool,
    /// Commits applied, per author (the latest), not yet written.
    applied: BTreeMap<u32, u64>,
}

/// Makes `order` the order of `ops`' fields (as [`FieldOrder`] says) and tells whether a
/// new record made of `ops` can be written from them directly: `Some(true)` when they only
/// set fields, each once; `Some(false)` when the state must be built (a field set twice,
/// another op); `None` when a field has no local number yet. A load or an import writes
/// every record's fields in the same order, so the last record's order usually serves.
fn field_order(order: &mut FieldOrder, names: &NameCache, ops: &[Op]) -> Option<bool> {
    let alike = order.fields.len() == ops.len()
        && ops
            .iter()
            .zip(&order.fields)
            .all(|(op, f)| matches!(op, Op::Set(name, _) if name == f));
    if alike {
        return Some(!order.twice);
    }
    if !ops.iter().all(|op| matches!(op, Op::Set(..))) {
        return Some(false);
    }
    let fields: Vec<String> = ops
        .iter()
        .filter_map(|op| op.field())
        .map(String::from)
        .collect();
    let mut by_name: Vec<usize> = (0..fields.len()).collect();
    by_name.sort_unstable_by(|&a, &b| fields[a].cmp(&fields[b]));
    let twice = by_name.windows(2).any(|w| fields[w[0]] == fields[w[1]]);
    let mut numbers = Vec::with_capacity(by_name.len());
    for &k in &by_name {
        numbers.push(*names.by_name.get(fields[k].as_str())?);
    }
    *order = FieldOrder {
        fields,
        by_name,
        numbers,
        twice,
    };
    Some(!twice)
}

/// The fields a new record's ops set, as they came (`fields`), and in the state's order:
/// `by_name` (positions in `fields`), each one's local number (`numbers`).
#[derive(Default)]
struct FieldOrder {
    fields: Vec<String>,
    by_name: Vec<usize>,
    numbers: Vec<u32>,
    /// A field is set twice.
    twice: bool,
}

/// How a record's state is saved.
#[derive(Clone, Copy)]
enum Save {
    /// Whether or not it was stored.
    Replace,
    /// A record not stored before.
    Insert,
    /// A record stored before.
    Update,
}

fn i(n: u64) -> i64 {
    n as i64
}

fn u(n: i64) -> u64 {
    n as u64
}

fn blob32(b: Vec<u8>) -> Result<[u8; 32]> {
    b.try_into()
        .map_err(|_| StoreError::Corrupt("expected 32 bytes".into()))
}

/// How a commit's form is stored (migration 3).
fn form_number(f: Form) -> i64 {
    match f {
        Form::Row => 0,
        Form::Columnar => 1,
    }
}

fn form_of(n: i64) -> Result<Form> {
    match n {
        0 => Ok(Form::Row),
        1 => Ok(Form::Columnar),
        _ => Err(StoreError::Corrupt(format!("unknown commit form {n}"))),
    }
}

fn sig(b: Vec<u8>) -> Result<Signature> {
    Ok(Signature(b.try_into().map_err(|_| {
        StoreError::Corrupt("expected a 64-byte signature".into())
    })?))
}

impl StoreTx<'_> {
    /// Makes the transaction's changes durable. Dropping a transaction instead rolls it
    /// back.
    pub fn commit(mut self) -> Result<()> {
        self.write_pending()?;
        let StoreTx { tx, names, .. } = self;
        tx.commit()?;
        names.uncommitted = false;
        Ok(())
    }

    /// Sets how many bytes of new commits an apply takes between two steps in this
    /// transaction ([`Store::set_step_bytes`]); `None` for one that must stay whole (a
    /// transaction rolled back on purpose).
    pub fn set_step_bytes(&mut self, bytes: Option<u64>) {
        self.step_bytes = bytes;
    }

    /// Writes what [`Pending`] holds.
    fn write_pending(&mut self) -> Result<()> {
        for (m, seq) in std::mem::take(&mut self.pending.applied) {
            self.tx
                .prepare_cached("INSERT OR REPLACE INTO applied (author, seq) VALUES (?1, ?2)")?
                .execute(params![m, i(seq)])?;
        }
        if std::mem::take(&mut self.pending.clock_set) {
            if let Some(hlc) = self.pending.clock.get() {
                self.set_meta("clock", &hlc.0.to_le_bytes())?;
            }
        }
        Ok(())
    }

    fn load_names(&mut self) -> Result<()> {
        if self.names.loaded {
            return Ok(());
        }
        let mut stmt = self.tx.prepare_cached("SELECT id, name FROM local_names")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
        let mut cache = NameCache {
            loaded: true,
            data_version: self.names.data_version,
            ..Default::default()
        };
        for row in rows {
            let (id, name) = row?;
            cache.by_name.insert(name.clone(), id);
            cache.by_id.insert(id, name);
        }
        *self.names = cache;
        Ok(())
    }

    fn name_id(&mut self, name: &str) -> Result<u32> {
        self.load_names()?;
        if let Some(&id) = self.names.by_name.get(name) {
            return Ok(id);
        }
        // Another process (a listener and a `ferry put`, say) may have added it since the
        // cache was loaded; names are never renumbered, so a stale cache only lacks some.
        let known: Option<u32> = self
            .tx
            .prepare_cached("SELECT id FROM local_names WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))
            .optional()?;
        if let Some(id) = known {
            self.names.by_name.insert(name.to_string(), id);
            self.names.by_id.insert(id, name.to_string());
            return Ok(id);
        }
        self.tx
            .prepare_cached("INSERT INTO local_names (name) VALUES (?1)")?
            .execute(params![name])?;
        let id = self.tx.last_insert_rowid() as u32;
        self.names.uncommitted = true;
        self.names.by_name.insert(name.to_string(), id);
        self.names.by_id.insert(id, name.to_string());
        Ok(id)
    }

    fn existing_name_id(&mut self, name: &str) -> Result<Option<u32>> {
        self.load_names()?;
        Ok(self.names.by_name.get(name).copied())
    }

    /// Reloads the name cache: another process may have added names since it was loaded.
    fn reload_names(&mut self) -> Result<()> {
        self.names.loaded = false;
        let uncommitted = self.names.uncommitted;
        self.load_names()?;
        self.names.uncommitted = uncommitted;
        Ok(())
    }

    fn decode_record(&mut self, bytes: &[u8]) -> Result<RecordState> {
        self.load_names()?;
        let decode = |names: &FastMap<u32, String>| {
            codec::decode(bytes, |id| {
                names
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| codec_err(format!("unknown local name {id}")))
            })
        };
        match decode(&self.names.by_id) {
            Ok(state) => Ok(state),
            Err(_) => {
                self.reload_names()?;
                Ok(decode(&self.names.by_id)?)
            }
        }
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row(params![key], |r| r.get(0))
            .optional()?)
    }

    /// Removes a metadata value.
    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM meta WHERE key = ?1")?
            .execute(params![key])?;
        Ok(())
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }

    /// The ledger entry of what was last sent to `peer` by `transport`: what this node held
    /// then, and since when sends to it have gone unconfirmed (see `ferry_node`'s ledger).
    pub fn sent(&self, transport: &str, peer: &str) -> Result<Option<(VersionVector, u64)>> {
        let blob: Option<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT entry FROM sent WHERE transport = ?1 AND peer = ?2")?
            .query_row(params![transport, peer], |r| r.get(0))
            .optional()?;
        Ok(blob.and_then(|b| postcard::from_bytes(&b).ok()))
    }

    /// Records what was sent to `peer` by `transport`.
    pub fn set_sent(
        &self,
        transport: &str,
        peer: &str,
        held: &VersionVector,
        since_ms: u64,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO sent (transport, peer, entry) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                transport,
                peer,
                postcard::to_allocvec(&(held, since_ms))?
            ])?;
        Ok(())
    }

    /// Whether `collection` has any record (live, or deleted and not purged yet).
    pub fn has_collection(&mut self, collection: &str) -> Result<bool> {
        let Some(coll) = self.existing_name_id(collection)? else {
            return Ok(false);
        };
        let mut stmt = self
            .tx
            .prepare_cached("SELECT 1 FROM records WHERE coll = ?1 LIMIT 1")?;
        Ok(stmt.exists(params![coll])?)
    }

    /// Calls `f` with every record of `collection`, in id order (byte order of UTF-8).
    pub fn for_each_record(
        &mut self,
        collection: &str,
        live_only: bool,
        f: impl FnMut(&str, &RecordState) -> Result<()>,
    ) -> Result<()> {
        self.for_each_record_after(collection, live_only, "", f)
    }

    /// [`StoreTx::for_each_record`] from the first id after `after` on (a page of a list:
    /// the B-tree is entered there, not read from the start).
    pub fn for_each_record_after(
        &mut self,
        collection: &str,
        live_only: bool,
        after: &str,
        mut f: impl FnMut(&str, &RecordState) -> Result<()>,
    ) -> Result<()> {
        let Some(coll) = self.existing_name_id(collection)? else {
            return Ok(());
        };
        self.load_names()?;
        let names = &self.names.by_id;
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, state FROM records WHERE coll = ?1 AND (live = 1 OR ?2 = 0) AND id > ?3 ORDER BY id",
        )?;
        let mut rows = stmt.query(params![coll, live_only as i64, after])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let bytes: Vec<u8> = row.get(1)?;
            let state = codec::decode(&bytes, |n| {
                names
                    .get(&n)
                    .cloned()
                    .ok_or_else(|| codec_err(format!("unknown local name {n}")))
            })?;
            f(&id, &state)?;
        }
        Ok(())
    }

    /// Collections with records (live, or deleted and not purged yet), and how many live
    /// records each, by name.
    pub fn collections(&mut self) -> Result<Vec<(String, u64)>> {
        self.load_names()?;
        let mut stmt = self
            .tx
            .prepare_cached("SELECT coll, sum(live) FROM records GROUP BY coll")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, n) = row?;
            let name = self.names.by_id.get(&id).cloned().unwrap_or_default();
            out.push((name, u(n)));
        }
        out.sort();
        Ok(out)
    }

    /// The decoded records a query returns as (coll, id, state) rows.
    fn decoded_rows(&mut self, sql: &str) -> Result<Vec<(String, String, RecordState)>> {
        let rows: Vec<(u32, String, Vec<u8>)> = {
            let mut stmt = self.tx.prepare_cached(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (coll, id, bytes) in rows {
            let state = self.decode_record(&bytes)?;
            let collection = self.names.by_id.get(&coll).cloned().unwrap_or_default();
            out.push((collection, id, state));
        }
        Ok(out)
    }

    /// Records with concurrent values or a delete/edit conflict, by collection and id.
    pub fn conflicts(&mut self) -> Result<Vec<ConflictRow>> {
        let mut out: Vec<ConflictRow> = self
            .decoded_rows("SELECT coll, id, state FROM records WHERE conflicted = 1")?
            .into_iter()
            .map(|(collection, id, state)| ConflictRow {
                collection,
                id,
                state,
            })
            .collect();
        out.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
        Ok(out)
    }

    /// Every peer this node has heard from.
    pub fn peers(&self) -> Result<Vec<PeerRow>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT member, vv, updated_ms FROM peers ORDER BY member")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (m, vv, at) = row?;
            out.push(PeerRow {
                member: MemberId(m),
                vv: postcard::from_bytes(&vv)?,
                updated_ms: u(at),
            });
        }
        Ok(out)
    }

    /// Number of live records in all collections that are not reserved.
    pub fn record_count(&self) -> Result<u64> {
        let n: i64 = self.tx.query_row(
            "SELECT count(*) FROM records r JOIN local_names n ON n.id = r.coll
             WHERE r.live = 1 AND substr(n.name, 1, 1) <> '_'",
            [],
            |r| r.get(0),
        )?;
        Ok(u(n))
    }

    /// How many commits have had their bodies compacted away.
    pub fn compacted_count(&self) -> Result<u64> {
        let n: i64 = self.tx.query_row(
            "SELECT count(*) FROM commits WHERE length(body) = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(u(n))
    }

    /// Removes a record for good (purge).
    pub fn delete_record(&mut self, collection: &str, id: &str) -> Result<()> {
        if let Some(coll) = self.existing_name_id(collection)? {
            self.tx
                .prepare_cached("DELETE FROM records WHERE coll = ?1 AND id = ?2")?
                .execute(params![coll, id])?;
        }
        Ok(())
    }

    /// Records with no field left (deleted), as (collection, id, state).
    pub fn dead_records(&mut self) -> Result<Vec<(String, String, RecordState)>> {
        self.decoded_rows("SELECT coll, id, state FROM records WHERE live = 0")
    }

    /// The content names of the bundles from `sender` seen or written here.
    pub fn bundles_sent_by(&self, sender: MemberId) -> Result<Vec<String>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT name FROM bundles_seen WHERE sender = ?1 ORDER BY name")?;
        let rows = stmt.query_map(params![sender.0], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// A bundle file seen before, by content name.
    pub fn bundle_seen(&self, name: &str) -> Result<Option<BundleSeen>> {
        let row: Option<SeenRow> = self
            .tx
            .prepare_cached(
                "SELECT sender, coverage, receipt, snapshot, bytes FROM bundles_seen WHERE name = ?1",
            )?
            .query_row(params![name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((sender, coverage, receipt, snapshot, bytes)) = row else {
            return Ok(None);
        };
        let runs: Vec<(u32, u64, u64)> = postcard::from_bytes(&coverage)?;
        Ok(Some(BundleSeen {
            name: name.to_string(),
            sender: MemberId(sender),
            coverage: runs
                .into_iter()
                .map(|(a, first, last)| Coverage {
                    author: MemberId(a),
                    first,
                    last,
                })
                .collect(),
            receipt: receipt.map(|r| postcard::from_bytes(&r)).transpose()?,
            snapshot: snapshot.map(|r| postcard::from_bytes(&r)).transpose()?,
            bytes: u(bytes),
        }))
    }

    /// Remembers what a bundle file carries.
    pub fn put_bundle_seen(&self, seen: &BundleSeen) -> Result<()> {
        let runs: Vec<(u32, u64, u64)> = seen
            .coverage
            .iter()
            .map(|c| (c.author.0, c.first, c.last))
            .collect();
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO bundles_seen
                 (name, sender, coverage, receipt, snapshot, bytes, seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                seen.name,
                seen.sender.0,
                postcard::to_allocvec(&runs)?,
                seen.receipt
                    .as_ref()
                    .map(postcard::to_allocvec)
                    .transpose()?,
                seen.snapshot
                    .as_ref()
                    .map(postcard::to_allocvec)
                    .transpose()?,
                i(seen.bytes),
                i(self.now_ms)
            ])?;
        Ok(())
    }

    /// Records a quarantined input.
    pub fn add_quarantine(&self, row: &QuarantineRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO quarantine (at_ms, source, stored_as, reason, name, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                i(row.at_ms),
                row.source,
                row.stored_as,
                row.reason,
                row.name,
                i(row.bytes)
            ])?;
        Ok(())
    }

    fn quarantine_rows(&self, filter: &str, name: Option<&str>) -> Result<Vec<QuarantineRow>> {
        let sql = format!(
            "SELECT at_ms, source, stored_as, reason, name, bytes FROM quarantine {filter} ORDER BY id"
        );
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let map = |r: &rusqlite::Row<'_>| {
            Ok(QuarantineRow {
                at_ms: u(r.get(0)?),
                source: r.get(1)?,
                stored_as: r.get(2)?,
                reason: r.get(3)?,
                name: r.get(4)?,
                bytes: u(r.get(5)?),
            })
        };
        let rows = match name {
            Some(n) => stmt.query_map(params![n], map)?,
            None => stmt.query_map([], map)?,
        };
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every quarantined input, oldest first.
    pub fn quarantine(&self) -> Result<Vec<QuarantineRow>> {
        self.quarantine_rows("", None)
    }

    /// The quarantined inputs whose copy is still kept, oldest first.
    pub fn quarantine_copies(&self) -> Result<Vec<QuarantineRow>> {
        self.quarantine_rows("WHERE stored_as != ''", None)
    }

    /// How many inputs were refused, and the last `n` of them (oldest first).
    pub fn quarantine_recent(&self, n: usize) -> Result<(u64, Vec<QuarantineRow>)> {
        let count: i64 = self
            .tx
            .prepare_cached("SELECT count(*) FROM quarantine")?
            .query_row([], |r| r.get(0))?;
        let mut rows = self.quarantine_rows(
            &format!("WHERE id > (SELECT coalesce(max(id), 0) - {n} FROM quarantine)"),
            None,
        )?;
        rows.truncate(n);
        Ok((u(count), rows))
    }

    /// The refusal of the content named `name`, if it was refused before (found by name,
    /// or for rows older than names, by the copy's file name).
    pub fn quarantined(&self, name: &str) -> Result<Option<QuarantineRow>> {
        let mut rows = self.quarantine_rows(
            "WHERE name = ?1 OR (name = '' AND instr(stored_as, ?1) > 0)",
            Some(name),
        )?;
        Ok(rows.pop())
    }

    /// Forgets the copy of a quarantined input (dropped to keep the folder within its limit);
    /// its row and reason stay.
    pub fn forget_quarantine_copy(&self, stored_as: &str) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE quarantine SET stored_as = '' WHERE stored_as = ?1")?
            .execute(params![stored_as])?;
        Ok(())
    }

    /// The bundles waiting to be checked, oldest first.
    pub fn waiting(&self) -> Result<Vec<WaitingRow>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT name, path, origin, sender, bytes, at_ms, why FROM waiting ORDER BY at_ms, name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(WaitingRow {
                name: r.get(0)?,
                path: r.get(1)?,
                origin: r.get(2)?,
                sender: MemberId(r.get(3)?),
                bytes: u(r.get(4)?),
                at_ms: u(r.get(5)?),
                why: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Keeps a bundle waiting to be checked.
    pub fn add_waiting(&self, row: &WaitingRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO waiting (name, path, origin, sender, bytes, at_ms, why)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                row.name,
                row.path,
                row.origin,
                row.sender.0,
                i(row.bytes),
                i(row.at_ms),
                row.why
            ])?;
        Ok(())
    }

    /// Forgets a waiting bundle.
    pub fn remove_waiting(&self, name: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM waiting WHERE name = ?1")?
            .execute(params![name])?;
        Ok(())
    }
}

fn codec_err(msg: String) -> CodecError {
    CodecError(msg)
}

impl Storage for StoreTx<'_> {
    type Error = StoreError;

    fn missing(what: String) -> StoreError {
        StoreError::Missing(what)
    }

    fn step_bytes(&self) -> Option<u64> {
        self.step_bytes
    }

    fn step(&mut self) -> Result<()> {
        self.write_pending()?;
        // Cleared by the import that finishes; found by the next command after a crash.
        self.set_meta(UNSETTLED, &[1])?;
        let version = |tx: &rusqlite::Transaction<'_>| -> Result<i64> {
            tx.prepare_cached("SELECT count(*) FROM applied WHERE 0")?
                .query_row([], |_| Ok(()))?;
            Ok(tx
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))?)
        };
        let before = version(&self.tx)?;
        self.tx.execute_batch("COMMIT")?;
        self.names.uncommitted = false;
        // (The rusqlite transaction goes on as the new one: it commits or rolls back
        // whatever is open when it ends.)
        self.tx
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| match is_busy(&e) {
                true => StoreError::Interleaved,
                false => e.into(),
            })?;
        if version(&self.tx)? != before {
            return Err(StoreError::Interleaved);
        }
        Ok(())
    }

    fn latest_proofs(&self) -> Result<VersionVector> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT author, max(seq) FROM proofs GROUP BY author")?;
        let rows = stmt.query_map([], |r| Ok((MemberId(r.get(0)?), u(r.get(1)?))))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn members(&self) -> Result<Vec<MemberInfo>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT member, key, label FROM members ORDER BY member")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (m, key, label) = row?;
            out.push(MemberInfo {
                member: MemberId(m),
                key: PublicKey(blob32(key)?),
                label,
            });
        }
        Ok(out)
    }

    fn member(&self, m: MemberId) -> Result<Option<MemberInfo>> {
        let row: Option<(Vec<u8>, String)> = self
            .tx
            .prepare_cached("SELECT key, label FROM members WHERE member = ?1")?
            .query_row(params![m.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(key, label)| {
            Ok(MemberInfo {
                member: m,
                key: PublicKey(blob32(key)?),
                label,
            })
        })
        .transpose()
    }

    fn put_member(&mut self, info: &MemberInfo) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO members (member, key, label) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![info.member.0, &info.key.0[..], info.label])?;
        Ok(())
    }

    fn chain(&self, m: MemberId) -> Result<Option<ChainContext>> {
        let row: Option<(i64, Vec<u8>, i64, Vec<u8>)> = self
            .tx
            .prepare_cached("SELECT seq, hash, hlc, deps FROM chains WHERE author = ?1")?
            .query_row(params![m.0], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((seq, hash, hlc, deps)) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .tx
            .prepare_cached("SELECT name FROM chain_names WHERE author = ?1 ORDER BY idx")?;
        let names = stmt
            .query_map(params![m.0], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(ChainContext::from_parts(
            m,
            u(seq),
            Hash(blob32(hash)?),
            Hlc(u(hlc)),
            postcard::from_bytes(&deps)?,
            names,
        )))
    }

    fn put_chain(&mut self, ctx: &ChainContext) -> Result<()> {
        let have: i64 = self
            .tx
            .prepare_cached("SELECT names FROM chains WHERE author = ?1")?
            .query_row(params![ctx.author.0], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        {
            let mut ins = self.tx.prepare_cached(
                "INSERT INTO chain_names (author, idx, name) VALUES (?1, ?2, ?3)",
            )?;
            for (idx, name) in ctx.names.iter().enumerate().skip(have as usize) {
                ins.execute(params![ctx.author.0, idx as i64, name])?;
            }
        }
        self.tx
            .prepare_cached(
                "INSERT INTO chains (author, seq, hash, hlc, deps, names)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (author) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                   hlc = excluded.hlc, deps = excluded.deps, names = excluded.names",
            )?
            .execute(params![
                ctx.author.0,
                i(ctx.seq),
                &ctx.hash.0[..],
                i(ctx.hlc.0),
                postcard::to_allocvec(&ctx.deps)?,
                ctx.names.len() as i64
            ])?;
        Ok(())
    }

    fn stored(&self) -> Result<VersionVector> {
        let mut stmt = self.tx.prepare_cached("SELECT author, seq FROM chains")?;
        let rows = stmt.query_map([], |r| Ok((MemberId(r.get(0)?), u(r.get(1)?))))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn insert_commit(&mut self, c: &StoredCommit) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO commits (author, seq, hash, hlc, deps, names, body, form)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                c.author.0,
                i(c.seq),
                &c.hash.0[..],
                i(c.hlc.0),
                postcard::to_allocvec(&c.deps)?,
                c.names,
                c.bytes,
                form_number(c.form)
            ])?;
        Ok(())
    }

    fn commit(&self, m: MemberId, seq: u64) -> Result<Option<StoredCommit>> {
        let row: Option<CommitRow> = self
            .tx
            .prepare_cached(
                "SELECT hash, hlc, deps, names, body, form FROM commits
                 WHERE author = ?1 AND seq = ?2",
            )?
            .query_row(params![m.0, i(seq)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()?;
        row.map(|(hash, hlc, deps, names, bytes, form)| {
            Ok(StoredCommit {
                author: m,
                seq,
                hash: Hash(blob32(hash)?),
                hlc: Hlc(u(hlc)),
                deps: postcard::from_bytes(&deps)?,
                names,
                bytes,
                form: form_of(form)?,
            })
        })
        .transpose()
    }

    fn columnar_in(&self, m: MemberId, first: u64, last: u64) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM commits
                 WHERE author = ?1 AND seq BETWEEN ?2 AND ?3 AND form != 0)",
            )?
            .query_row(params![m.0, i(first), i(last)], |r| r.get(0))?)
    }

    fn commit_hash(&self, m: MemberId, seq: u64) -> Result<Option<Hash>> {
        let row: Option<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT hash FROM commits WHERE author = ?1 AND seq = ?2")?
            .query_row(params![m.0, i(seq)], |r| r.get(0))
            .optional()?;
        row.map(|h| Ok(Hash(blob32(h)?))).transpose()
    }

    fn commit_hlc(&self, m: MemberId, seq: u64) -> Result<Option<Hlc>> {
        let row: Option<i64> = self
            .tx
            .prepare_cached("SELECT hlc FROM commits WHERE author = ?1 AND seq = ?2")?
            .query_row(params![m.0, i(seq)], |r| r.get(0))
            .optional()?;
        Ok(row.map(|h| Hlc(u(h))))
    }

    fn put_proof(&mut self, author: MemberId, proof: &Proof) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO proofs (author, seq, digest, sig) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                author.0,
                i(proof.seq),
                proof.digest.as_ref().map(|d| &d[..]),
                &proof.sig.0[..]
            ])?;
        Ok(())
    }

    fn proof(&self, author: MemberId, seq: u64) -> Result<Option<Proof>> {
        read_proof(&self.tx, "proofs", author, seq)
    }

    fn applied(&self) -> Result<VersionVector> {
        let mut stmt = self.tx.prepare_cached("SELECT author, seq FROM applied")?;
        let rows = stmt.query_map([], |r| Ok((MemberId(r.get(0)?), u(r.get(1)?))))?;
        let mut vv: VersionVector = rows.collect::<std::result::Result<_, _>>()?;
        for (&m, &seq) in &self.pending.applied {
            vv.set(MemberId(m), seq);
        }
        Ok(vv)
    }

    fn set_applied(&mut self, m: MemberId, seq: u64) -> Result<()> {
        self.pending.applied.insert(m.0, seq);
        Ok(())
    }

    fn record(&self, collection: &str, id: &str) -> Result<Option<RecordState>> {
        let Some(&coll) = self.names.by_name.get(collection) else {
            if self.names.loaded {
                return Ok(None);
            }
            // Load the cache through a fresh lookup.
            let coll: Option<u32> = self
                .tx
                .prepare_cached("SELECT id FROM local_names WHERE name = ?1")?
                .query_row(params![collection], |r| r.get(0))
                .optional()?;
            let Some(coll) = coll else { return Ok(None) };
            return self.record_by_id(coll, id);
        };
        self.record_by_id(coll, id)
    }

    fn put_record(&mut self, collection: &str, id: &str, state: &RecordState) -> Result<()> {
        self.save_record(collection, id, state, Save::Replace)
    }

    fn records_of(&self, collection: &str, ids: &[&str]) -> Result<Vec<Option<RecordState>>> {
        let coll = match self.names.by_name.get(collection) {
            Some(&coll) => Some(coll),
            None if self.names.loaded => None,
            None => self
                .tx
                .prepare_cached("SELECT id FROM local_names WHERE name = ?1")?
                .query_row(params![collection], |r| r.get(0))
                .optional()?,
        };
        let none = || ids.iter().map(|_| None).collect();
        let Some(coll) = coll else {
            return Ok(none());
        };
        // One probe for the whole batch: no record between the lowest id and the highest
        // (byte order, as SQLite's BINARY collation compares) means all of them are new —
        // the common case of records loaded or imported in order.
        if let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) {
            if ids.len() > 1 {
                let any: bool = self
                    .tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM records
                         WHERE coll = ?1 AND id BETWEEN ?2 AND ?3)",
                    )?
                    .query_row(params![coll, lo, hi], |r| r.get(0))?;
                if !any {
                    return Ok(none());
                }
            }
        }
        ids.iter().map(|id| self.record_by_id(coll, id)).collect()
    }

    fn insert_new_records(
        &mut self,
        collection: &str,
        stamp: Stamp,
        ctx: &VersionVector,
        mut records: Vec<(String, Vec<Op>)>,
    ) -> Result<()> {
        let coll = self.name_id(collection)?;
        let mut i = 0;
        while i < records.len() {
            {
                // One prepared statement for the run of records whose fields are all known
                // and each set once (all of them, in a load or an import).
                let mut insert = self.tx.prepare_cached(
                    "INSERT INTO records (coll, id, state, live, conflicted)
                     VALUES (?1, ?2, ?3, ?4, 0)",
                )?;
                while let Some((id, ops)) = records.get(i) {
                    if field_order(&mut self.new_order, self.names, ops) != Some(true) {
                        break;
                    }
                    let order = &self.new_order;
                    let numbered: Vec<(u32, &Value)> = order
                        .by_name
                        .iter()
                        .zip(&order.numbers)
                        .map(|(&k, &n)| match &ops[k] {
                            Op::Set(_, v) => (n, v),
                            _ => unreachable!("field_order checked: only sets"),
                        })
                        .collect();
                    codec::encode_new_into(stamp, &numbered, &mut self.blob)?;
                    insert.execute(params![coll, id, self.blob, !numbered.is_empty() as i64])?;
                    i += 1;
                }
            }
            if let Some((id, ops)) = records.get_mut(i) {
                // A field not numbered yet, or ops the state must decide: one at a time.
                let (id, ops) = (std::mem::take(id), std::mem::take(ops));
                self.insert_new_record(collection, &id, stamp, ctx, ops)?;
                i += 1;
            }
        }
        Ok(())
    }

    fn insert_new_record(
        &mut self,
        collection: &str,
        id: &str,
        stamp: Stamp,
        ctx: &VersionVector,
        ops: Vec<Op>,
    ) -> Result<()> {
        if !ops.iter().all(|op| matches!(op, Op::Set(..))) {
            return self.insert_built(collection, id, stamp, ctx, ops);
        }
        // Number the fields not numbered yet, then write it as a batch of one.
        for op in &ops {
            if let Some(f) = op.field() {
                if !self.names.by_name.contains_key(f) {
                    self.name_id(f)?;
                }
            }
        }
        match field_order(&mut self.new_order, self.names, &ops) {
            Some(true) => self.insert_new_records(collection, stamp, ctx, vec![(id.into(), ops)]),
            _ => self.insert_built(collection, id, stamp, ctx, ops),
        }
    }

    fn write_record(
        &mut self,
        collection: &str,
        id: &str,
        state: &RecordState,
        stored: bool,
    ) -> Result<()> {
        let how = match stored {
            true => Save::Update,
            false => Save::Insert,
        };
        self.save_record(collection, id, state, how)
    }

    fn stash_run(
        &mut self,
        sender: MemberId,
        author: MemberId,
        first: u64,
        last: u64,
        at_ms: u64,
    ) -> Result<u64> {
        self.tx
            .prepare_cached(
                "INSERT INTO stash_runs (sender, author, first, last, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![sender.0, author.0, i(first), i(last), i(at_ms)])?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    fn stash_commit(&mut self, run: u64, seq: u64, c: &CommitBytes) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO stash_commits (run, seq, body, form)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![i(run), i(seq), c.bytes, form_number(c.form)])?;
        let cost = (c.bytes.len() as u64).max(ferry_sync::STASH_COMMIT_COST);
        self.tx
            .prepare_cached("UPDATE stash_runs SET bytes = bytes + ?2 WHERE id = ?1")?
            .execute(params![i(run), i(cost)])?;
        Ok(())
    }

    fn stash_bytes(&self, sender: Option<MemberId>) -> Result<u64> {
        let n: i64 = match sender {
            Some(s) => self
                .tx
                .prepare_cached(
                    "SELECT coalesce(sum(bytes + ?2), 0) FROM stash_runs WHERE sender = ?1",
                )?
                .query_row(params![s.0, i(ferry_sync::STASH_RUN_COST)], |r| r.get(0))?,
            None => self
                .tx
                .prepare_cached("SELECT coalesce(sum(bytes + ?1), 0) FROM stash_runs")?
                .query_row(params![i(ferry_sync::STASH_RUN_COST)], |r| r.get(0))?,
        };
        Ok(u(n))
    }

    fn expire_stash(&mut self, before_ms: u64) -> Result<Vec<StashedRun>> {
        let ids: Vec<(i64, u32)> = {
            let mut stmt = self
                .tx
                .prepare_cached("SELECT id, author FROM stash_runs WHERE at_ms < ?1")?;
            let rows = stmt.query_map(params![i(before_ms)], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (id, author) in ids {
            if let Some(run) = self
                .stashed_runs(MemberId(author))?
                .into_iter()
                .find(|r| r.id == u(id))
            {
                self.drop_stashed(run.id)?;
                out.push(run);
            }
        }
        Ok(out)
    }

    fn frozen(&self, m: MemberId) -> Result<Option<u64>> {
        if let Some(&known) = self.frozen_seen.borrow().get(&m.0) {
            return Ok(known);
        }
        let n: Option<i64> = self
            .tx
            .prepare_cached("SELECT seq FROM frozen WHERE member = ?1")?
            .query_row(params![m.0], |r| r.get(0))
            .optional()?;
        self.frozen_seen.borrow_mut().insert(m.0, n.map(u));
        Ok(n.map(u))
    }

    fn refreeze(&mut self, m: MemberId, seq: u64) -> Result<()> {
        self.frozen_seen.get_mut().remove(&m.0);
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO frozen (member, seq) VALUES (?1, ?2)")?
            .execute(params![m.0, i(seq.min(i64::MAX as u64))])?;
        Ok(())
    }

    fn unfreeze(&mut self, m: MemberId) -> Result<()> {
        self.frozen_seen.get_mut().remove(&m.0);
        self.tx
            .prepare_cached("DELETE FROM frozen WHERE member = ?1")?
            .execute(params![m.0])?;
        Ok(())
    }

    fn freeze(&mut self, m: MemberId, seq: u64) -> Result<()> {
        if seq > i64::MAX as u64 {
            // Commit numbers fit a signed 64-bit integer; nothing past them exists to freeze.
            return Ok(());
        }
        self.frozen_seen.get_mut().remove(&m.0);
        self.tx
            .prepare_cached(
                "INSERT INTO frozen (member, seq) VALUES (?1, ?2)
                 ON CONFLICT (member) DO UPDATE SET seq = min(seq, excluded.seq)",
            )?
            .execute(params![m.0, i(seq)])?;
        Ok(())
    }

    fn set_stash_proof(&mut self, run: u64, proof: &Proof) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE stash_runs SET digest = ?2, sig = ?3 WHERE id = ?1")?
            .execute(params![
                i(run),
                proof.digest.as_ref().map(|d| &d[..]),
                &proof.sig.0[..]
            ])?;
        Ok(())
    }

    fn stashed_runs(&self, author: MemberId) -> Result<Vec<StashedRun>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, first, last, digest, sig, sender, at_ms FROM stash_runs
             WHERE author = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![author.0], |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ),
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                (r.get::<_, u32>(5)?, r.get::<_, i64>(6)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let ((id, first, last), digest, s, (sender, at_ms)) = row?;
            let proof = match s {
                Some(s) => Some(Proof {
                    seq: u(last),
                    digest: digest.map(blob32).transpose()?,
                    sig: sig(s)?,
                }),
                None => None,
            };
            out.push(StashedRun {
                id: u(id),
                sender: MemberId(sender),
                at_ms: u(at_ms),
                author,
                first: u(first),
                last: u(last),
                proof,
            });
        }
        Ok(out)
    }

    fn stashed_commit(&self, run: u64, seq: u64) -> Result<Option<CommitBytes>> {
        let row: Option<(Vec<u8>, i64)> = self
            .tx
            .prepare_cached("SELECT body, form FROM stash_commits WHERE run = ?1 AND seq = ?2")?
            .query_row(params![i(run), i(seq)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(bytes, form)| {
            Ok(CommitBytes {
                form: form_of(form)?,
                bytes,
            })
        })
        .transpose()
    }

    fn drop_stashed(&mut self, run: u64) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM stash_commits WHERE run = ?1")?
            .execute(params![i(run)])?;
        self.tx
            .prepare_cached("DELETE FROM stash_runs WHERE id = ?1")?
            .execute(params![i(run)])?;
        Ok(())
    }

    fn stashed(&self) -> Result<Vec<(MemberId, u64)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT author, sum(last - first + 1) FROM stash_runs GROUP BY author ORDER BY author",
        )?;
        let rows = stmt.query_map([], |r| Ok((MemberId(r.get(0)?), u(r.get(1)?))))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn compacted(&self, m: MemberId) -> Result<u64> {
        let n: Option<i64> = self
            .tx
            .prepare_cached("SELECT compacted FROM chains WHERE author = ?1")?
            .query_row(params![m.0], |r| r.get(0))
            .optional()?;
        Ok(n.map_or(0, u))
    }

    fn compact(&mut self, upto: &VersionVector) -> Result<u64> {
        let mut dropped = 0;
        for (m, n) in upto.iter() {
            dropped += self
                .tx
                .prepare_cached(
                    "UPDATE commits SET body = x'' WHERE author = ?1 AND seq >= 2 AND seq <= ?2
                     AND length(body) > 0",
                )?
                .execute(params![m.0, i(n)])? as u64;
            self.tx
                .prepare_cached(
                    "UPDATE chains SET compacted = max(compacted, ?2) WHERE author = ?1",
                )?
                .execute(params![m.0, i(n)])?;
            // Older proofs stay (about 100 bytes each, one per bundle received): a signature at
            // an older commit is what fork evidence needs once the commits are gone.
        }
        Ok(dropped)
    }

    fn record_count(&self) -> Result<u64> {
        Ok(self
            .tx
            .query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    fn visit_records(&self, f: &mut ferry_sync::RecordVisitor<'_, StoreError>) -> Result<()> {
        let names: FastMap<u32, String> = {
            let mut stmt = self.tx.prepare_cached("SELECT id, name FROM local_names")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut stmt = self
            .tx
            .prepare_cached("SELECT coll, id, state FROM records ORDER BY coll, id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let coll: u32 = row.get(0)?;
            let id: String = row.get(1)?;
            let bytes: Vec<u8> = row.get(2)?;
            let state = codec::decode(&bytes, |n| {
                names
                    .get(&n)
                    .cloned()
                    .ok_or_else(|| codec_err(format!("unknown local name {n}")))
            })?;
            let collection = names
                .get(&coll)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown collection {coll}")))?;
            f(collection, &id, &state)?;
        }
        Ok(())
    }

    fn clear_records(&mut self) -> Result<()> {
        self.tx.execute("DELETE FROM records", [])?;
        Ok(())
    }

    fn reset_applied(&mut self, vv: &VersionVector) -> Result<()> {
        self.pending.applied.clear();
        self.tx.execute("DELETE FROM applied", [])?;
        for (m, n) in vv.iter() {
            self.set_applied(m, n)?;
        }
        Ok(())
    }

    fn peer(&self, m: MemberId) -> Result<VersionVector> {
        let row: Option<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT vv FROM peers WHERE member = ?1")?
            .query_row(params![m.0], |r| r.get(0))
            .optional()?;
        Ok(match row {
            Some(b) => postcard::from_bytes(&b)?,
            None => VersionVector::new(),
        })
    }

    fn merge_peer(&mut self, m: MemberId, vv: &VersionVector) -> Result<()> {
        let mut have = self.peer(m)?;
        if have.dominates(vv) {
            return Ok(());
        }
        have.merge(vv);
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO peers (member, vv, updated_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![m.0, postcard::to_allocvec(&have)?, i(self.now_ms)])?;
        Ok(())
    }

    fn clock(&self) -> Result<Hlc> {
        if let Some(hlc) = self.pending.clock.get() {
            return Ok(hlc);
        }
        let hlc = match self.meta("clock")? {
            Some(b) => Hlc(u64::from_le_bytes(
                b.try_into()
                    .map_err(|_| StoreError::Corrupt("clock".into()))?,
            )),
            None => Hlc::default(),
        };
        self.pending.clock.set(Some(hlc));
        Ok(hlc)
    }

    fn set_clock(&mut self, hlc: Hlc) -> Result<()> {
        self.pending.clock.set(Some(hlc));
        self.pending.clock_set = true;
        Ok(())
    }
}

/// Keys met in one long input (the ids of a file being loaded), kept on disk rather than in
/// memory: SQLite's temporary database of this connection, which spills past a small cache.
impl StoreTx<'_> {
    /// Starts a new, empty set of keys for [`StoreTx::seen_at`].
    pub fn begin_seen(&self) -> Result<()> {
        self.tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS seen_keys (
                 key TEXT PRIMARY KEY NOT NULL,
                 line INTEGER NOT NULL
             ) WITHOUT ROWID;
             DELETE FROM temp.seen_keys;",
        )?;
        Ok(())
    }

    /// Notes that `key` was met at `line` and returns `None`, or, when it was met before
    /// (since [`StoreTx::begin_seen`]), the line where it was met first.
    pub fn seen_at(&self, key: &str, line: u64) -> Result<Option<u64>> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO temp.seen_keys (key, line) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![key, i(line)])?;
        if inserted == 1 {
            return Ok(None);
        }
        let first: i64 = self
            .tx
            .prepare_cached("SELECT line FROM temp.seen_keys WHERE key = ?1")?
            .query_row(params![key], |r| r.get(0))?;
        Ok(Some(u(first)))
    }

    /// Forgets the keys, giving their space back.
    pub fn end_seen(&self) -> Result<()> {
        self.tx
            .execute_batch("DROP TABLE IF EXISTS temp.seen_keys")?;
        Ok(())
    }
}

impl StoreTx<'_> {
    /// A new record's state built by applying its ops, then inserted.
    fn insert_built(
        &mut self,
        collection: &str,
        id: &str,
        stamp: Stamp,
        ctx: &VersionVector,
        ops: Vec<Op>,
    ) -> Result<()> {
        let rec = RecordState::made_by(stamp, ctx, ops);
        self.save_record(collection, id, &rec, Save::Insert)
    }

    /// Encodes and saves a record's state (see [`Save`]).
    fn save_record(
        &mut self,
        collection: &str,
        id: &str,
        state: &RecordState,
        how: Save,
    ) -> Result<()> {
        let coll = self.name_id(collection)?;
        // Every field name the blob refers to: surviving writes, retired first values and
        // ghosts (a snapshot's record may name a field no live value uses).
        let names = state
            .fields
            .keys()
            .chain(state.firsts.keys())
            .chain(state.ghosts.iter().map(|g| &g.field));
        let mut missing = Vec::new();
        for name in names {
            if !self.names.by_name.contains_key(name) {
                missing.push(name.clone());
            }
        }
        missing.sort_unstable();
        missing.dedup();
        for name in missing {
            self.name_id(&name)?;
        }
        let by_name = &self.names.by_name;
        let mut bytes = std::mem::take(&mut self.blob);
        let encoded = codec::encode_into(
            state,
            |n| {
                by_name
                    .get(n)
                    .copied()
                    .ok_or_else(|| codec_err(format!("no local name for {n}")))
            },
            &mut bytes,
        );
        let saved = encoded.map_err(StoreError::from).and_then(|()| {
            let sql = match how {
                Save::Replace => {
                    "INSERT OR REPLACE INTO records (coll, id, state, live, conflicted)
                     VALUES (?1, ?2, ?3, ?4, ?5)"
                }
                Save::Insert => {
                    "INSERT INTO records (coll, id, state, live, conflicted)
                     VALUES (?1, ?2, ?3, ?4, ?5)"
                }
                Save::Update => {
                    "UPDATE records SET state = ?3, live = ?4, conflicted = ?5
                     WHERE coll = ?1 AND id = ?2"
                }
            };
            let changed = self.tx.prepare_cached(sql)?.execute(params![
                coll,
                id,
                bytes,
                state.is_live() as i64,
                state.has_conflict() as i64
            ])?;
            match changed {
                1 => Ok(()),
                _ => Err(StoreError::Corrupt(format!(
                    "record {id} of {collection} was to be updated but is not stored"
                ))),
            }
        });
        self.blob = bytes;
        saved
    }

    fn record_by_id(&self, coll: u32, id: &str) -> Result<Option<RecordState>> {
        let row: Option<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT state FROM records WHERE coll = ?1 AND id = ?2")?
            .query_row(params![coll, id], |r| r.get(0))
            .optional()?;
        let Some(bytes) = row else { return Ok(None) };
        // Names of an existing record are always in the table; read them directly when the
        // cache is cold.
        let names = &self.names.by_id;
        let tx = &self.tx;
        Ok(Some(codec::decode(&bytes, |n| {
            if let Some(name) = names.get(&n) {
                return Ok(name.clone());
            }
            tx.query_row(
                "SELECT name FROM local_names WHERE id = ?1",
                params![n],
                |r| r.get(0),
            )
            .map_err(|e| codec_err(format!("local name {n}: {e}")))
        })?))
    }
}

fn read_proof(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    author: MemberId,
    seq: u64,
) -> Result<Option<Proof>> {
    let sql = format!("SELECT digest, sig FROM {table} WHERE author = ?1 AND seq = ?2");
    let row: Option<(Option<Vec<u8>>, Vec<u8>)> = tx
        .prepare_cached(&sql)?
        .query_row(params![author.0, i(seq)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(digest, s)| {
        Ok(Proof {
            seq,
            digest: digest.map(blob32).transpose()?,
            sig: sig(s)?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_clock_and_freezes_kept_until_commit_are_what_the_transaction_reads() {
        use ferry_sync::Storage;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (MemberId(2), MemberId(3));
        {
            let mut store = Store::open(&path).unwrap();
            let mut tx = store.transaction(1).unwrap();
            tx.set_applied(a, 1).unwrap();
            tx.set_applied(a, 2).unwrap();
            tx.set_clock(Hlc(77)).unwrap();
            assert_eq!(tx.frozen(b).unwrap(), None);
            tx.freeze(b, 5).unwrap();
            // Read back inside the transaction before anything is written.
            assert_eq!(tx.applied().unwrap().get(a), 2);
            assert_eq!(tx.clock().unwrap(), Hlc(77));
            assert_eq!(tx.frozen(b).unwrap(), Some(5));
            tx.freeze(b, 3).unwrap();
            assert_eq!(tx.frozen(b).unwrap(), Some(3), "an earlier freeze counts");
            tx.unfreeze(b).unwrap();
            assert_eq!(tx.frozen(b).unwrap(), None);
            tx.commit().unwrap();
            // A transaction rolled back leaves what the last one committed.
            let mut tx = store.transaction(2).unwrap();
            tx.set_applied(a, 3).unwrap();
            tx.set_clock(Hlc(99)).unwrap();
            tx.reset_applied(&VersionVector::new()).unwrap();
            assert_eq!(tx.applied().unwrap().get(a), 0);
            drop(tx);
        }
        let mut store = Store::open(&path).unwrap();
        let tx = store.read().unwrap();
        assert_eq!(tx.applied().unwrap().get(a), 2);
        assert_eq!(tx.clock().unwrap(), Hlc(77));
        assert_eq!(tx.frozen(b).unwrap(), None);
    }

    #[test]
    fn seen_keys_name_the_first_line_and_start_empty_again() {
        let mut store = Store::open_in_memory().unwrap();
        for _ in 0..2 {
            let tx = store.transaction(1).unwrap();
            tx.begin_seen().unwrap();
            assert_eq!(tx.seen_at("v1", 1).unwrap(), None);
            assert_eq!(tx.seen_at("v2", 2).unwrap(), None);
            assert_eq!(tx.seen_at("V1", 3).unwrap(), None, "keys are exact");
            assert_eq!(tx.seen_at("v1", 9).unwrap(), Some(1));
            assert_eq!(
                tx.seen_at("v1", 12).unwrap(),
                Some(1),
                "the first line stays"
            );
            tx.end_seen().unwrap();
            tx.commit().unwrap();
        }
        let tx = store.transaction(1).unwrap();
        tx.begin_seen().unwrap();
        assert_eq!(tx.seen_at("v1", 5).unwrap(), None);
        // Dropped without commit: rolled back, and the next set starts empty too.
        drop(tx);
        let tx = store.transaction(1).unwrap();
        tx.begin_seen().unwrap();
        assert_eq!(tx.seen_at("v1", 7).unwrap(), None);
    }
}

#[cfg(test)]
mod encryption_tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn an_encrypted_store_opens_only_with_its_key_and_holds_nothing_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let key = [7u8; 32];
        {
            let mut store = Store::open_encrypted(&path, &key).unwrap();
            let tx = store.transaction(0).unwrap();
            tx.set_meta("identity", b"patient-Zyxwvut-4711").unwrap();
            tx.commit().unwrap();
        }
        assert!(matches!(
            Store::open_encrypted(&path, &[8u8; 32]),
            Err(StoreError::WrongKey)
        ));
        assert!(Store::open(&path).is_err(), "not readable without a key");
        let mut store = Store::open_encrypted(&path, &key).unwrap();
        assert_eq!(
            store.read().unwrap().meta("identity").unwrap().as_deref(),
            Some(&b"patient-Zyxwvut-4711"[..])
        );
        drop(store);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!contains(&bytes, b"Zyxwvut"));
        }
    }

    #[test]
    fn a_plain_store_is_exported_encrypted_and_rekeyed() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.db");
        let enc = dir.path().join("enc.db");
        let mut store = Store::open(&plain).unwrap();
        let tx = store.transaction(0).unwrap();
        tx.set_meta("identity", b"patient-Zyxwvut-4711").unwrap();
        tx.commit().unwrap();
        store.export_encrypted(&enc, &[1; 32]).unwrap();
        drop(store);
        let mut copy = Store::open_encrypted(&enc, &[1; 32]).unwrap();
        assert_eq!(
            copy.read().unwrap().meta("identity").unwrap().as_deref(),
            Some(&b"patient-Zyxwvut-4711"[..])
        );
        copy.rekey(&[2; 32]).unwrap();
        drop(copy);
        assert!(matches!(
            Store::open_encrypted(&enc, &[1; 32]),
            Err(StoreError::WrongKey)
        ));
        assert!(Store::open_encrypted(&enc, &[2; 32]).is_ok());
        assert!(!contains(&std::fs::read(&enc).unwrap(), b"Zyxwvut"));
    }
}

#[cfg(test)]
mod ledger_tests {
    use super::*;

    fn vv(pairs: &[(u32, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for &(m, s) in pairs {
            v.set(MemberId(m), s);
        }
        v
    }

    /// A store written before the ledger table (schema 3) keeps what it had sent: the
    /// per-transport meta keys become ledger rows, and the keys go.
    #[test]
    fn the_sends_recorded_under_meta_keys_move_into_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (vv(&[(1, 5), (2, 3)]), vv(&[(1, 7)]));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            let put = |k: &str, v: Vec<u8>| {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    params![k, v],
                )
                .unwrap();
            };
            put(
                "email_sent:#2",
                postcard::to_allocvec(&(&a, 111u64)).unwrap(),
            );
            put(
                "sms_sent:+254700000001",
                postcard::to_allocvec(&(&b, 222u64)).unwrap(),
            );
            put("email_receipt", postcard::to_allocvec(&b).unwrap());
            put(
                "email_snapshot",
                postcard::to_allocvec(&(&a, 333u64)).unwrap(),
            );
            put("identity", b"kept".to_vec());
        }
        let mut store = Store::open(&path).unwrap();
        let tx = store.read().unwrap();
        assert_eq!(tx.sent("email", "#2").unwrap(), Some((a.clone(), 111)));
        assert_eq!(
            tx.sent("sms", "+254700000001").unwrap(),
            Some((b.clone(), 222))
        );
        assert_eq!(tx.sent("email", "*").unwrap(), Some((b.clone(), 0)));
        assert_eq!(
            tx.sent("email", "*snapshot").unwrap(),
            Some((a.clone(), 333))
        );
        assert_eq!(tx.sent("sms", "#2").unwrap(), None);
        for gone in [
            "email_sent:#2",
            "sms_sent:+254700000001",
            "email_receipt",
            "email_snapshot",
        ] {
            assert_eq!(tx.meta(gone).unwrap(), None, "{gone}");
        }
        assert_eq!(tx.meta("identity").unwrap(), Some(b"kept".to_vec()));
        drop(tx);
        // And the ledger is written and read back like any table.
        let tx = store.transaction(0).unwrap();
        tx.set_sent("serial", "#3", &a, 444).unwrap();
        tx.set_sent("email", "#2", &b, 555).unwrap();
        tx.commit().unwrap();
        let tx = store.read().unwrap();
        assert_eq!(tx.sent("serial", "#3").unwrap(), Some((a, 444)));
        assert_eq!(tx.sent("email", "#2").unwrap(), Some((b, 555)));
    }
}
