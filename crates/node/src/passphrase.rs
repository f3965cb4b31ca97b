//! `ferry passphrase set`: protect a home with a passphrase, or change it.

use crate::home::{Passphrase, replace_private_file};
use crate::lock::{PASSPHRASE_KDF, seal};
use crate::node::random;
use crate::{Home, Node, NodeError};
use ferry_store::Store;

impl Node {
    /// Protects this home with `new` (encrypting its store), or, when it has a passphrase
    /// already, changes it (with a new store key: the store is encrypted again under it).
    /// Returns whether the store was encrypted now.
    pub fn set_passphrase(&mut self, new: &Passphrase) -> Result<bool, NodeError> {
        let others = self.home.others();
        if let Some((pid, what, _)) = others.first() {
            return Err(NodeError::BadArgument(format!(
                "another ferry process uses this home (process {pid}: {what}); stop it first, then set the passphrase"
            )));
        }
        let path = self.home.store_key_file();
        if self.store_key.is_some() {
            // A new store key too, so that an old copy of `store.key` and the old
            // passphrase do not open the store from now on: sealed beside the current one,
            // the store re-encrypted under it (all or nothing), then put in place.
            let key: [u8; 32] = random();
            let next = self.home.store_key_next_file();
            let sealed = seal(&key, new.as_str(), random(), PASSPHRASE_KDF);
            replace_private_file(&next, &sealed)?;
            if let Err(e) = self.store.rekey(&key) {
                let _ = std::fs::remove_file(&next);
                return Err(e.into());
            }
            // The sealed key already on disk under its own name is moved into place: the
            // second step of the change that `open_store` finishes, not fsutil's write.
            std::fs::rename(&next, &path).map_err(|e| NodeError::io("cannot replace", &path, e))?;
            sync_dir(&path);
            self.store_key = Some(key);
            return Ok(false);
        }
        // Encrypt: seal a new store key first (a stop after this finishes the work at the
        // next open), then put the encrypted copy in place of the plain store.
        let key: [u8; 32] = random();
        let sealed = seal(&key, new.as_str(), random(), PASSPHRASE_KDF);
        replace_private_file(&path, &sealed)?;
        let plain = std::mem::replace(&mut self.store, Store::open_in_memory()?);
        replace_with_encrypted(&self.home, plain, &key)?;
        self.store = Store::open_encrypted(&self.home.db(), &key)?;
        self.store_key = Some(key);
        Ok(true)
    }
}

/// Replaces the plain store of `home` (open as `plain`) with a copy encrypted under `key`:
/// the copy is written beside it, the plain one closed (its log folded in), then the copy
/// renamed over it.
pub(crate) fn replace_with_encrypted(
    home: &Home,
    plain: Store,
    key: &[u8; 32],
) -> Result<(), NodeError> {
    let db = home.db();
    let tmp = db.with_file_name("ferry.db.encrypting");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    plain.export_encrypted(&tmp, key)?;
    drop(plain);
    // The plain store's write-ahead log must not be read as the encrypted one's.
    for suffix in ["-wal", "-shm"] {
        let p = format!("{}{suffix}", db.display());
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::io("cannot remove", p, e)),
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    // A SQLite database written by SQLCipher's export swapped in (not bytes held here), so
    // not fsutil's write; the folder is synced below all the same.
    std::fs::rename(&tmp, &db).map_err(|e| NodeError::io("cannot replace", &db, e))?;
    if let Some(dir) = db.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Makes a rename in `path`'s folder durable.
fn sync_dir(path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
