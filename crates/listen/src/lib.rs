//! The listener policy: who may talk to an HTTP listener of ferry's (`ferry serve`, `ferry sms
//! listen`), decided once when it starts. It knows nothing about what the listener serves, so
//! every HTTP listener ferry runs follows the same rules:
//!
//! - **Loopback by default.** A listener bound to 127.0.0.0/8 or `::1` is reachable only
//!   from this machine.
//! - **Beyond loopback, only with a token and TLS.** Any other address (a LAN address,
//!   `0.0.0.0`) needs both: a shared token of at least [`MIN_TOKEN_CHARS`] characters that
//!   every request must present, compared in constant time ([`ListenPolicy::admits`]), and a
//!   TLS certificate and key (PEM files), so the token and what it guards never cross a
//!   network in clear. Otherwise the listener does not start, and says what is missing in
//!   the words of the program that asked ([`Hints`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

/// The shortest token accepted for a listener reachable beyond loopback.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why a listener may not start as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A setting is missing or wrong.
    #[error("{setting}: {problem}")]
    Setting {
        /// The setting, named as the program names it (`tls_cert`, `--tls-cert`).
        setting: &'static str,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// How a program tells its user to give each thing the policy may ask for.
#[derive(Clone, Copy, Debug)]
pub struct Hints {
    /// The setting that names the address (`listen`, `--bind`).
    pub bind: &'static str,
    /// How to give a token ("a token (listen_token_env = … in [sms])").
    pub token: &'static str,
    /// How to give TLS ("TLS (--tls-cert and --tls-key)").
    pub tls: &'static str,
    /// The certificate's setting.
    pub cert: &'static str,
    /// The key's setting.
    pub key: &'static str,
}

/// What a listener requires of every request, decided by [`ListenPolicy::decide`].
#[derive(Clone)]
pub struct ListenPolicy {
    /// The address to bind.
    pub addr: SocketAddr,
    /// The token every request must present, if any.
    pub token: Option<String>,
    /// TLS, if the listener speaks HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ListenPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenPolicy")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Whether an address is reachable only from this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

impl ListenPolicy {
    /// A loopback listener with no token and no TLS (tests, and the default).
    pub fn loopback(addr: SocketAddr) -> ListenPolicy {
        ListenPolicy {
            addr,
            token: None,
            tls: None,
        }
    }

    /// Decides the policy for a listener on `bind` with `token` (if any) and TLS from the
    /// PEM files `cert` and `key` (if given); refuses what the rules above do not allow,
    /// saying what is missing as `hints` words it.
    pub fn decide(
        bind: &str,
        token: Option<String>,
        cert: Option<&Path>,
        key: Option<&Path>,
        hints: &Hints,
    ) -> Result<ListenPolicy, ListenError> {
        let bind_err = |reason: String| ListenError::Bind {
            addr: bind.to_string(),
            reason,
        };
        let addrs: Vec<SocketAddr> = bind
            .to_socket_addrs()
            .map_err(|e| bind_err(format!("not an address to listen on ({e})")))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| bind_err("the name resolves to no address".into()))?;
        let token = token.filter(|t| !t.trim().is_empty());
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some(Arc::new(tls_config(c, k, hints)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ListenError::Setting {
                    setting: hints.key,
                    problem: format!(
                        "HTTPS needs the private key too ({}, a PEM file)",
                        hints.key
                    ),
                });
            }
            (None, Some(_)) => {
                return Err(ListenError::Setting {
                    setting: hints.cert,
                    problem: format!(
                        "HTTPS needs the certificate too ({}, a PEM file)",
                        hints.cert
                    ),
                });
            }
        };
        if addrs.iter().any(|a| !is_loopback(a)) {
            let short = token
                .as_ref()
                .is_some_and(|t| t.chars().count() < MIN_TOKEN_CHARS);
            if token.is_none() || tls.is_none() || short {
                let mut missing = Vec::new();
                if token.is_none() {
                    missing.push(hints.token.to_string());
                }
                if short {
                    missing.push(format!("a token of at least {MIN_TOKEN_CHARS} characters"));
                }
                if tls.is_none() {
                    missing.push(hints.tls.to_string());
                }
                return Err(ListenError::Setting {
                    setting: hints.bind,
                    problem: format!(
                        "{bind} is reachable from other machines, which needs {}; or listen on 127.0.0.1",
                        missing.join(" and ")
                    ),
                });
            }
        }
        Ok(ListenPolicy { addr, token, tls })
    }

    /// Whether a request's token (if any) is the one required.
    pub fn admits(&self, presented: Option<&str>) -> bool {
        match (&self.token, presented) {
            (None, _) => true,
            (Some(want), Some(got)) => same_secret(want.as_bytes(), got.as_bytes()),
            (Some(_), None) => false,
        }
    }
}

/// A TLS server configuration (ring, TLS 1.2 and 1.3) from PEM files.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    hints: &Hints,
) -> Result<rustls::ServerConfig, ListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |setting: &'static str, path: &Path, why: String| ListenError::Setting {
        setting,
        problem: format!("{}: {why}", path.display()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(hints.cert, cert, format!("cannot read it ({e})")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(hints.cert, cert, format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(bad(hints.cert, cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(hints.key, key, format!("no private key in it ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(hints.cert, cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(hints.cert, cert, format!("does not go with the key ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINTS: Hints = Hints {
        bind: "--bind",
        token: "a token (T)",
        tls: "TLS (--tls-cert and --tls-key)",
        cert: "--tls-cert",
        key: "--tls-key",
    };

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
        assert!(same_secret(b"", b""));
    }

    fn pem_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn beyond_loopback_needs_a_long_token_and_tls_and_says_which_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pem_pair(dir.path());
        let long = Some("0123456789abcdef0123".to_string());
        let decide = |bind: &str, token: Option<String>, tls: bool| {
            let (cert, key) = match tls {
                true => (Some(c.as_path()), Some(k.as_path())),
                false => (None, None),
            };
            ListenPolicy::decide(bind, token, cert, key, &HINTS)
        };
        assert!(decide("127.0.0.1:0", None, false).is_ok());
        assert!(decide("[::1]:0", None, false).is_ok());
        assert!(decide("localhost:0", None, false).is_ok());
        let e = decide("0.0.0.0:0", None, false).unwrap_err().to_string();
        assert!(
            e.starts_with("--bind:") && e.contains("a token (T)") && e.contains("TLS ("),
            "{e}"
        );
        let e = decide("0.0.0.0:0", long.clone(), false)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("a token (T)") && e.contains("TLS ("), "{e}");
        let e = decide("0.0.0.0:0", Some("short".into()), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16 characters"), "{e}");
        let e = decide("0.0.0.0:0", Some("   ".into()), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a token (T)"), "a blank token is none: {e}");
        let p = decide("0.0.0.0:0", long, true).unwrap();
        assert!(p.tls.is_some());
        assert!(p.admits(Some("0123456789abcdef0123")));
        assert!(!p.admits(Some("0123456789abcdef012")));
        assert!(!p.admits(None));
        assert!(decide("nowhere.invalid.:0", None, false).is_err());
    }

    #[test]
    fn broken_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pem_pair(dir.path());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = tls_config(&junk, &k, &HINTS).unwrap_err().to_string();
        assert!(
            e.starts_with("--tls-cert:") && e.contains("junk.pem"),
            "{e}"
        );
        let e = tls_config(&c, &junk, &HINTS).unwrap_err().to_string();
        assert!(e.starts_with("--tls-key:"), "{e}");
        let e = tls_config(&dir.path().join("none.pem"), &k, &HINTS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read it"), "{e}");
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, k2) = pem_pair(&other);
        let e = tls_config(&c, &k2, &HINTS).unwrap_err().to_string();
        assert!(e.contains("does not go with the key"), "{e}");
        let e = ListenPolicy::decide("127.0.0.1:0", None, Some(&c), None, &HINTS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("private key too"), "{e}");
    }
}
