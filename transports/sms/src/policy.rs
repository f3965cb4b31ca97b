//! The listener policy: who may talk to an HTTP listener of ferry's, decided once when it
//! starts. It knows nothing about SMS, so any HTTP listener ferry has follows the same one.
//!
//! - **Loopback by default.** A listener bound to 127.0.0.0/8 or `::1` is reachable only
//!   from this machine; a token is optional there.
//! - **Beyond loopback, only with a token and TLS.** Any other address (a LAN address,
//!   `0.0.0.0`) needs both: a shared token of at least 16 characters that every request
//!   must present (`?token=…`, a `token` form field, `Authorization: Bearer …` or
//!   `X-Ferry-Token: …`), compared in constant time, and a TLS certificate and key (PEM
//!   files), so the token and the SMS never cross a network in clear. Otherwise the
//!   listener does not start, and says why.
//! - **Per-source limits** (in the server): at most 128 connections from one address and
//!   256 in all; a request must arrive whole within 10 s of its connection (one deadline, not
//!   one per read); when a limit is reached, the connection that has been sending its
//!   request longest makes room, so slow senders cannot keep a gateway out; an address
//!   whose requests keep failing the token check is turned away for a while.

use crate::error::SmsError;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

/// The shortest token accepted for a listener reachable beyond loopback.
pub const MIN_TOKEN_CHARS: usize = 16;

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
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
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

    /// Decides the policy for a listener on `bind`, with the token in the environment
    /// variable `token_env` (if set) and TLS from `cert` and `key` (if set); refuses what
    /// the rules above do not allow.
    pub fn decide(
        bind: &str,
        token_env: Option<&str>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ListenPolicy, SmsError> {
        ListenPolicy::decide_with(bind, token_env, cert, key, |v| std::env::var(v).ok())
    }

    /// [`ListenPolicy::decide`] reading environment variables through `getenv`.
    pub fn decide_with(
        bind: &str,
        token_env: Option<&str>,
        cert: Option<&Path>,
        key: Option<&Path>,
        getenv: impl Fn(&str) -> Option<String>,
    ) -> Result<ListenPolicy, SmsError> {
        let bind_err = |reason: String| SmsError::Bind {
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
        let token = match token_env {
            None => None,
            Some(var) => match getenv(var) {
                Some(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => {
                    return Err(SmsError::Config {
                        setting: "listen_token_env",
                        problem: format!(
                            "the listener's token is read from ${var}, which is not set; export it first (a long random string, e.g. from `openssl rand -hex 24`)"
                        ),
                    });
                }
            },
        };
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some(Arc::new(tls_config(c, k)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SmsError::Config {
                    setting: "tls_key",
                    problem: "HTTPS needs the private key too (tls_key, a PEM file)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(SmsError::Config {
                    setting: "tls_cert",
                    problem: "HTTPS needs the certificate too (tls_cert, a PEM file)".into(),
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
                    missing.push("a token (listen_token_env = \"VAR\" in [sms], or --listen-token-env VAR, with the token in $VAR)".to_string());
                }
                if short {
                    missing.push(format!("a token of at least {MIN_TOKEN_CHARS} characters"));
                }
                if tls.is_none() {
                    missing.push(
                        "TLS (tls_cert and tls_key in [sms], or --tls-cert and --tls-key)"
                            .to_string(),
                    );
                }
                return Err(SmsError::Config {
                    setting: "listen",
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
            (Some(want), Some(got)) => constant_time_eq(want.as_bytes(), got.as_bytes()),
            (Some(_), None) => false,
        }
    }
}

/// A TLS server configuration (ring, TLS 1.2 and 1.3) from PEM files.
fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, SmsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |setting: &'static str, path: &Path, why: String| SmsError::Config {
        setting,
        problem: format!("{}: {why}", path.display()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("tls_cert", cert, format!("cannot read it ({e})")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tls_cert", cert, format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(bad("tls_cert", cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad("tls_key", key, format!("no private key in it ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls_cert", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("tls_cert", cert, format!("does not go with the key ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn beyond_loopback_needs_a_token_and_tls() {
        let env = |v: &str| (v == "TOKEN").then(|| "0123456789abcdef0123".to_string());
        let decide =
            |bind: &str, var: Option<&str>| ListenPolicy::decide_with(bind, var, None, None, env);
        assert!(decide("127.0.0.1:0", None).is_ok());
        assert!(decide("localhost:0", None).is_ok());
        let e = decide("0.0.0.0:0", None).unwrap_err().to_string();
        assert!(e.contains("a token (") && e.contains("TLS"), "{e}");
        let e = decide("0.0.0.0:0", Some("TOKEN")).unwrap_err().to_string();
        assert!(!e.contains("a token (") && e.contains("TLS"), "{e}");
        let p = decide("127.0.0.1:0", Some("TOKEN")).unwrap();
        assert!(p.admits(Some("0123456789abcdef0123")));
        assert!(!p.admits(Some("0123456789abcdef012")));
        assert!(!p.admits(None));
        let e = decide("127.0.0.1:0", Some("UNSET"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("$UNSET"), "{e}");
    }
}
