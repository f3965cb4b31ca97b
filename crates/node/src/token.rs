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
        let path = self.api_token_file();
        let tmp = self.root().join(format!(
            ".api.token.{}.tmp",
            u64::from_le_bytes(crate::node::random())
        ));
        let token = new_token();
        write_private(&tmp, token.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            NodeError::io("cannot replace", &path, e)
        })?;
        if let Ok(dir) = std::fs::File::open(self.root()) {
            let _ = dir.sync_all();
        }
        Ok(token.trim().to_string())
    }
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
