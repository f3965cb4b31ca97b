//! `ferry backup` and `ferry restore`: a laptop's store in one sealed file, and a restore
//! that never forks the laptop's history.
//!
//! A backup is an encrypted copy of the store (SQLCipher, under a random key) after a header
//! that seals that key under a one-time code, as an invitation file is sealed:
//!
//! ```text
//! backup = "ferrybk1" ‖ salt(16) ‖ m_kib u32le ‖ t u32le ‖ p u32le               (36 bytes)
//!          ‖ ChaCha20-Poly1305(Argon2id(code, salt), nonce 0, AD = header, key)  (48 bytes)
//!          ‖ the store, encrypted under key                                    (SQLCipher)
//!          ‖ BLAKE3(everything before)                                          (32 bytes)
//! ```
//!
//! A laptop restored from an old backup must not write again under its old member number:
//! what it wrote after the backup may have reached the others, and writing again would make
//! two versions of its history (a fork, refused for ever). So a restore joins again under a
//! new member number from a new invitation ([`Node::rejoin`]): everything the laptop had
//! written is written again as the new member, and the old member's later changes, which
//! the others hold, stay as they are.

use crate::home::write_private;
use crate::invite::{InviteCode, KdfParams};
use crate::lock::{LockError, SEALED_KEY_LEN, open_key, seal_key};
use crate::node::random;
use crate::{Home, InvitationFile, Node, NodeError, RejoinReport};
use ferry_store::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ferrybk1";

/// What `ferry backup` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The one-time code that opens it (`XXXX-XXXX-XXXX`): kept apart from the file.
    pub code: String,
}

impl Node {
    /// Writes a sealed copy of this laptop's store to `out` (a file that does not exist).
    pub fn backup(&mut self, out: &Path) -> Result<BackupReport, NodeError> {
        if out.symlink_metadata().is_ok() {
            return Err(NodeError::AlreadyExists(out.to_path_buf()));
        }
        let key: [u8; 32] = random();
        let tmp = self
            .home
            .root()
            .join(format!(".backup-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        self.store.export_encrypted(&tmp, &key)?;
        let db = std::fs::read(&tmp).map_err(|e| NodeError::io("cannot read", &tmp, e));
        let _ = std::fs::remove_file(&tmp);
        let db = db?;
        let code = InviteCode::from_random(random());
        let mut file = seal_key(MAGIC, &key, code.as_bytes(), random(), KdfParams::DEFAULT);
        file.extend_from_slice(&db);
        let sum = blake3::hash(&file);
        file.extend_from_slice(sum.as_bytes());
        write_private(out, &file)?;
        Ok(BackupReport {
            path: out.to_path_buf(),
            bytes: file.len() as u64,
            code: code.to_string(),
        })
    }

    /// Restores the backup `file` (opened with its `code`) into `home`, which must hold no
    /// node, and joins again with `invite` (a new invitation from the admin) so that the
    /// laptop never writes again under its old member number.
    pub fn restore_backup(
        home: &Home,
        file: &Path,
        code: &str,
        invite: &InvitationFile,
        invite_code: Option<&str>,
    ) -> Result<(Node, RejoinReport), NodeError> {
        if home.exists() {
            return Err(NodeError::AlreadyInitialized(home.root().to_path_buf()));
        }
        let bad = |why: &str| NodeError::BadBackup {
            path: file.to_path_buf(),
            reason: why.to_string(),
        };
        let bytes = std::fs::read(file).map_err(|e| NodeError::io("cannot read", file, e))?;
        if !bytes.starts_with(MAGIC) {
            return Err(bad("not a ferry backup (written by `ferry backup`)"));
        }
        if bytes.len() < SEALED_KEY_LEN + 32 {
            return Err(bad("the file is cut short: it is damaged"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad(
                "the file is damaged (its checksum does not match); use another copy",
            ));
        }
        let code = InviteCode::parse(code)
            .map_err(|_| bad("the code is not one `ferry backup` prints (XXXX-XXXX-XXXX)"))?;
        let key = open_key(MAGIC, body, code.as_bytes()).map_err(|e| match e {
            LockError::WrongPassphrase => bad(
                "the code does not open this backup; check it against what `ferry backup` printed",
            ),
            LockError::Damaged => bad("the file is damaged (its settings are out of range)"),
        })?;
        let db = &body[SEALED_KEY_LEN..];
        home.create()?;
        let result = (|| {
            // The backup's store, as it is (encrypted under its key), then as this home keeps
            // it: under the passphrase's store key, or plain.
            let copy = home.root().join(".restore.db");
            let _ = std::fs::remove_file(&copy);
            write_private(&copy, db)?;
            let store = Store::open_encrypted(&copy, &key)
                .map_err(|_| bad("the store in the backup does not open: the file is damaged"))?;
            match home.passphrase() {
                Some(p) => {
                    let store_key: [u8; 32] = random();
                    store.export_encrypted(&home.db().with_extension("db.new"), &store_key)?;
                    let sealed = crate::lock::seal(
                        &store_key,
                        p.as_str(),
                        random(),
                        crate::lock::PASSPHRASE_KDF,
                    );
                    write_private(&home.store_key_file(), &sealed)?;
                }
                None => store.export_plain(&home.db().with_extension("db.new"))?,
            }
            drop(store);
            let _ = std::fs::remove_file(&copy);
            // A SQLite database file swapped in (written by the store's export), not fsutil's
            // write of bytes held here.
            std::fs::rename(home.db().with_extension("db.new"), home.db())
                .map_err(|e| NodeError::io("cannot replace", home.db(), e))?;
            Node::rejoin(home, None, invite, invite_code, true)
        })();
        if result.is_err() {
            for f in [
                home.db(),
                home.db().with_extension("db.new"),
                home.root().join(".restore.db"),
                home.store_key_file(),
            ] {
                let _ = std::fs::remove_file(f);
            }
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", home.db().display()));
            }
        }
        result
    }
}
