//! The token apps give `ferry serve` (issue 15): `HOME/api.token`, one line of 64 hex
//! digits, readable only by the home's owner (mode 0600). `ferry serve` creates it on its
//! first start, `ferry token` prints it and `ferry token --rotate` replaces it; a running
//! server reads the file for each request, so a rotation takes effect at once.

use crate::home::{replace_private_file, write_private};
use crate::{Home, NodeError};
use std::path::PathBuf;

impl Home {
    /// The file holding the API token.
    pub fn api_token_file(&self) -> PathBuf {
        self.root().join("api.token")
    }

    /// The API token, `None` before `ferry serve` or `ferry token` made one.
    pub fn api_token(&self) -> Result<Option<String>, NodeError> {
        let path = self.api_token_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim();
                if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(NodeError::Settings(format!(
                        "{} does not hold a token (64 hex digits): replace it with `ferry token --rotate`",
                        path.display()
                    )));
                }
                Ok(Some(token.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::io("cannot read", path, e)),
        }
    }

    /// The API token, made now if there is none.
    pub fn ensure_api_token(&self) -> Result<String, NodeError> {
        if let Some(t) = self.api_token()? {
            return Ok(t);
        }
        match write_private(&self.api_token_file(), new_token().as_bytes()) {
            // Another process made it first: use that one.
            Ok(()) | Err(NodeError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.api_token()?
            .ok_or_else(|| NodeError::Internal("the API token vanished as it was made".into()))
    }

    /// Replaces the API token with a new one (apps holding the old one are refused from
    /// now on) and returns it. The file is replaced whole: a reader sees the old token or
    /// the new one.
    pub fn rotate_api_token(&self) -> Result<String, NodeError> {
        let token = new_token();
        self.replace_private("api.token", &token)?;
        Ok(token.trim().to_string())
    }
}

/// How long a link that opens the status page can be used (once).
pub const PAGE_LINK_TTL_MS: u64 = 10 * 60 * 1000;

impl Home {
    /// Where the one-time keys that open the status page wait: one file per key, named by
    /// the key's BLAKE3 hash (the key itself is written nowhere) and holding its expiry.
    /// Taking a key removes its file, which succeeds once, whichever process (the server,
    /// a `ferry page` at the same moment) gets there first.
    fn page_keys_dir(&self) -> PathBuf {
        self.root().join("page-links")
    }

    /// Where `ferry serve` said it listens (written at its start), if it did.
    pub fn serve_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.root().join("serve.addr")).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    }

    /// Records where `ferry serve` listens, for `ferry page`.
    pub fn set_serve_addr(&self, addr: &str) -> Result<(), NodeError> {
        self.replace_private("serve.addr", addr)
    }

    /// A new one-time key that opens the status page, usable for [`PAGE_LINK_TTL_MS`].
    pub fn new_page_key(&self) -> Result<String, NodeError> {
        let dir = self.page_keys_dir();
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::io("cannot create", &dir, e))?;
        let now = crate::time::now_ms();
        self.forget_expired_page_keys(now);
        let key = new_secret();
        let expiry = format!("{}\n", now + PAGE_LINK_TTL_MS);
        write_private(&dir.join(page_key_file(&key)), expiry.as_bytes())?;
        Ok(key)
    }

    /// Whether `key` is an unused, unexpired page key; if so it is used up now.
    pub fn take_page_key(&self, key: &str) -> Result<bool, NodeError> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let path = self.page_keys_dir().join(page_key_file(key));
        let expiry = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(NodeError::io("cannot read", &path, e)),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(expiry > crate::time::now_ms()),
            // Taken by another request in between.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(NodeError::io("cannot remove", &path, e)),
        }
    }

    /// Removes the keys whose time is over (best effort: an expired key opens nothing
    /// anyway).
    fn forget_expired_page_keys(&self, now: u64) {
        let Ok(entries) = std::fs::read_dir(self.page_keys_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let expired = std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.trim().parse::<u64>().is_ok_and(|t| t <= now));
            if expired {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Replaces a file of the home whole (mode 0600): readers see the old or the new.
    fn replace_private(&self, name: &str, text: &str) -> Result<(), NodeError> {
        replace_private_file(&self.root().join(name), text.as_bytes())
    }
}

/// The name of a page key's file: its hash, so the folder does not hold the keys.
fn page_key_file(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// A fresh secret: 32 random bytes as 64 hex digits (API tokens, page keys, sessions).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = crate::node::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> String {
    new_secret() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_key_opens_once_and_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let k1 = home.new_page_key().unwrap();
        let k2 = home.new_page_key().unwrap();
        assert_ne!(k1, k2);
        assert!(!home.take_page_key("").unwrap());
        assert!(!home.take_page_key(&k1[..63]).unwrap());
        assert!(
            !home
                .take_page_key(&home.ensure_api_token().unwrap())
                .unwrap()
        );
        assert!(home.take_page_key(&k1).unwrap());
        assert!(!home.take_page_key(&k1).unwrap(), "used up");
        assert!(home.take_page_key(&k2).unwrap());
        // An expired key does not open.
        let k3 = home.new_page_key().unwrap();
        let file = dir.path().join("page-links").join(page_key_file(&k3));
        std::fs::write(&file, "1\n").unwrap();
        assert!(!home.take_page_key(&k3).unwrap());
        // The folder holds no key itself, and a name that is not a key reaches no file.
        let k4 = home.new_page_key().unwrap();
        for e in std::fs::read_dir(dir.path().join("page-links")).unwrap() {
            let e = e.unwrap();
            assert!(!std::fs::read_to_string(e.path()).unwrap().contains(&k4));
            assert_ne!(e.file_name().to_string_lossy(), k4);
        }
        assert!(!home.take_page_key("../api.token").unwrap());
        assert!(home.api_token_file().exists());
    }

    #[test]
    fn page_keys_made_and_taken_at_the_same_moment_are_neither_lost_nor_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let keys: Vec<String> = std::thread::scope(|s| {
            let made: Vec<_> = (0..8).map(|_| s.spawn(|| home.new_page_key())).collect();
            made.into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        for k in &keys {
            assert!(
                home.take_page_key(k).unwrap(),
                "a key made alongside others was lost"
            );
        }
        let k = home.new_page_key().unwrap();
        let opened: usize = std::thread::scope(|s| {
            let tries: Vec<_> = (0..8).map(|_| s.spawn(|| home.take_page_key(&k))).collect();
            tries
                .into_iter()
                .map(|h| usize::from(h.join().unwrap().unwrap()))
                .sum()
        });
        assert_eq!(opened, 1);
    }

    #[test]
    fn a_token_is_made_once_kept_private_and_replaced_whole_by_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert_eq!(home.api_token().unwrap(), None);
        let first = home.ensure_api_token().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            home.ensure_api_token().unwrap(),
            first,
            "kept, not made again"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.api_token_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = home.rotate_api_token().unwrap();
        assert_ne!(second.trim(), first);
        assert_eq!(home.api_token().unwrap().unwrap(), second.trim());
        std::fs::write(home.api_token_file(), "not a token").unwrap();
        assert!(matches!(home.api_token(), Err(NodeError::Settings(_))));
    }
}
