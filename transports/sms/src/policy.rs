//! The SMS listener's policy: ferry's one listener policy (`ferry-listen`: loopback by
//! default; beyond it only with a token of at least 16 characters and TLS), with the token
//! read from the environment variable `[sms]` names and the settings named as `[sms]` and
//! `ferry sms listen` name them.
//!
//! The listener adds per-source limits (in the server): at most 128 connections from one
//! address and 256 in all; a request must arrive whole within 10 s of its connection (one
//! deadline, not one per read); when a limit is reached, the connection that has been
//! sending its request longest makes room, so slow senders cannot keep a gateway out; an
//! address whose requests keep failing the token check is turned away for a while.

use crate::error::SmsError;
use ferry_listen::{Hints, ListenError};
pub use ferry_listen::{ListenPolicy, MIN_TOKEN_CHARS, is_loopback};
use std::path::Path;

/// How the SMS listener's settings are named in what the policy says.
const HINTS: Hints = Hints {
    bind: "listen",
    token: "a token (listen_token_env = \"VAR\" in [sms], or --listen-token-env VAR, with the token in $VAR)",
    tls: "TLS (tls_cert and tls_key in [sms], or --tls-cert and --tls-key)",
    cert: "tls_cert",
    key: "tls_key",
};

impl From<ListenError> for SmsError {
    fn from(e: ListenError) -> SmsError {
        match e {
            ListenError::Bind { addr, reason } => SmsError::Bind { addr, reason },
            ListenError::Setting { setting, problem } => SmsError::Config { setting, problem },
            other => SmsError::Config {
                setting: "listen",
                problem: other.to_string(),
            },
        }
    }
}

/// Decides the policy for a listener on `bind`, with the token in the environment variable
/// `token_env` (if set) and TLS from `cert` and `key` (if set).
pub fn decide(
    bind: &str,
    token_env: Option<&str>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<ListenPolicy, SmsError> {
    decide_with(bind, token_env, cert, key, |v| std::env::var(v).ok())
}

/// [`decide`] reading environment variables through `getenv`.
pub fn decide_with(
    bind: &str,
    token_env: Option<&str>,
    cert: Option<&Path>,
    key: Option<&Path>,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<ListenPolicy, SmsError> {
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
    Ok(ListenPolicy::decide(bind, token, cert, key, &HINTS)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_a_token_and_tls() {
        let env = |v: &str| (v == "TOKEN").then(|| "0123456789abcdef0123".to_string());
        let decide = |bind: &str, var: Option<&str>| decide_with(bind, var, None, None, env);
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
