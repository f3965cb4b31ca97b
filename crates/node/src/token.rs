//! The token apps give `ferry serve` (issue 15): `HOME/api.token`, one line of 64 hex
//! digits, readable only by the home's owner (mode 0600). `ferry serve` creates it on its
//! first start, `ferry token` prints it and `ferry token --rotate` replaces it; a running
//! server reads the file for each request, so a rotation takes effect at once.

use crate::home::write_private;
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
        if let Ok(dir) = std::fs::File::open(self.root()) {
            let _ = dir.sync_all();
        }
        Ok(token.trim().to_string())
    }
}

/// How long a link that opens the status page can be used (once).
pub const PAGE_LINK_TTL_MS: u64 = 10 * 60 * 1000;

impl Home {
    /// The file of one-time keys that open the status page (`key expiry_ms` per line).
    fn page_keys_file(&self) -> PathBuf {
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
        let now = crate::time::now_ms();
        let key = new_token().trim().to_string();
        let mut keep = self.page_keys(now);
        keep.push((key.clone(), now + PAGE_LINK_TTL_MS));
        self.write_page_keys(&keep)?;
        Ok(key)
    }

    /// Whether `key` is an unused, unexpired page key; if so it is used up now.
    pub fn take_page_key(&self, key: &str) -> Result<bool, NodeError> {
        let now = crate::time::now_ms();
        let mut keys = self.page_keys(now);
        let before = keys.len();
        keys.retain(|(k, _)| k.len() != key.len() || !constant_eq(k.as_bytes(), key.as_bytes()));
        if keys.len() == before {
            return Ok(false);
        }
        self.write_page_keys(&keys)?;
        Ok(true)
    }

    fn page_keys(&self, now: u64) -> Vec<(String, u64)> {
        let text = std::fs::read_to_string(self.page_keys_file()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (k, t) = l.split_once(' ')?;
                Some((k.to_string(), t.parse().ok()?))
            })
            .filter(|(_, t)| *t > now)
            .collect()
    }

    fn write_page_keys(&self, keys: &[(String, u64)]) -> Result<(), NodeError> {
        let text: String = keys.iter().map(|(k, t)| format!("{k} {t}\n")).collect();
        self.replace_private("page-links", &text)
    }

    /// Replaces a file of the home whole (mode 0600): readers see the old or the new.
    fn replace_private(&self, name: &str, text: &str) -> Result<(), NodeError> {
        let path = self.root().join(name);
        let tmp = self.root().join(format!(
            ".{name}.{}.tmp",
            u64::from_le_bytes(crate::node::random())
        ));
        write_private(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            NodeError::io("cannot replace", &path, e)
        })
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn new_token() -> String {
    let bytes: [u8; 32] = crate::node::random();
    let mut s = String::with_capacity(65);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('\n');
    s
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
        std::fs::write(dir.path().join("page-links"), format!("{k1} 1\n")).unwrap();
        assert!(!home.take_page_key(&k1).unwrap());
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
