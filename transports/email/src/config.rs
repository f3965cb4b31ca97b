//! Settings: the `[email]` table of `ferry.toml` ([`EmailConfig`]), server URLs, and
//! passwords taken from the environment.

use crate::error::EmailError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default largest email, in bytes as sent (headers, text and base64 attachment included).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 10_000_000;
/// Smallest `max_message_bytes` accepted: below this the headers leave no room for data.
pub const MIN_MAX_MESSAGE_BYTES: u64 = 16_384;
/// Default mailbox scanned for incoming bundles.
pub const DEFAULT_IMAP_FOLDER: &str = "INBOX";
/// Default folder that processed bundle emails are moved to (`/` separates levels; it is
/// translated to the server's own separator).
pub const DEFAULT_PROCESSED_FOLDER: &str = "Ferry/Processed";
/// Default folder that refused bundle emails are moved to (a bundle the node refused, a
/// piece that does not match the bundle it claims, an email with too many attachments).
pub const DEFAULT_REFUSED_FOLDER: &str = "Ferry/Refused";

/// The `[email]` table of `ferry.toml`. Every key is optional here; an operation that needs
/// one says which is missing. Flags override keys with [`EmailConfig::overridden_by`].
///
/// ```
/// let cfg: ferry_transport_email::EmailConfig = serde_json::from_str(r#"{
///     "from": "clinic-a@example.test",
///     "smtp_url": "smtp://127.0.0.1:2525",
///     "imap_url": "imap://127.0.0.1:1143",
///     "imap_user": "clinic-a",
///     "imap_password_env": "FERRY_IMAP_PASSWORD"
/// }"#).unwrap();
/// assert_eq!(cfg.max_message_bytes(), 10_000_000);
/// assert_eq!(cfg.processed_folder(), "Ferry/Processed");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// This laptop's address, the `From:` of every bundle email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Outgoing server: `smtp://host[:port]` (STARTTLS when the server offers it; port 587 by
    /// default), `smtps://host[:port]` (TLS from the start; port 465), or
    /// `smtp+plain://host[:port]` (never TLS: only for a server on this machine or network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// Login for the outgoing server; without it ferry sends without logging in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_user: Option<String>,
    /// Name of the environment variable that holds the SMTP password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_password_env: Option<String>,
    /// The SMTP password itself, in plain text in the file (see [`EmailConfig::warnings`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_password: Option<String>,
    /// Incoming server: `imap://host[:port]` (STARTTLS when offered; port 143),
    /// `imaps://host[:port]` (TLS from the start; port 993) or `imap+plain://host[:port]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_url: Option<String>,
    /// Login for the incoming server (default: `smtp_user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_user: Option<String>,
    /// Name of the environment variable that holds the IMAP password (default: the SMTP
    /// password's settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_password_env: Option<String>,
    /// The IMAP password itself, in plain text in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_password: Option<String>,
    /// Mailbox scanned for bundles (default `INBOX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_folder: Option<String>,
    /// Where processed bundle emails are moved (default `Ferry/Processed`; created when
    /// missing). Other mail is never moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed_folder: Option<String>,
    /// Where refused bundle emails are moved (default `Ferry/Refused`; created when missing),
    /// so they are not read again. Nothing is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_folder: Option<String>,
    /// Largest email sent, in bytes, counting headers and base64 growth (default
    /// 10 000 000). Larger bundles are split into several emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u64>,
    /// Read incoming mail from this local Maildir folder instead of IMAP (a mail server on
    /// this machine). Its subfolders follow the Maildir++ layout (`.Ferry.Processed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maildir: Option<PathBuf>,
    /// Extra trusted certificate authorities (a PEM file) for a mail server with a private
    /// certificate; the usual public authorities are always trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |p: &Option<String>| p.as_ref().map(|_| "<hidden>");
        f.debug_struct("EmailConfig")
            .field("from", &self.from)
            .field("smtp_url", &self.smtp_url)
            .field("smtp_user", &self.smtp_user)
            .field("smtp_password_env", &self.smtp_password_env)
            .field("smtp_password", &hidden(&self.smtp_password))
            .field("imap_url", &self.imap_url)
            .field("imap_user", &self.imap_user)
            .field("imap_password_env", &self.imap_password_env)
            .field("imap_password", &hidden(&self.imap_password))
            .field("imap_folder", &self.imap_folder)
            .field("processed_folder", &self.processed_folder)
            .field("refused_folder", &self.refused_folder)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("maildir", &self.maildir)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl EmailConfig {
    /// These settings with every key that `flags` sets replaced by the flag's value (flags
    /// win over `ferry.toml`).
    pub fn overridden_by(mut self, flags: EmailConfig) -> EmailConfig {
        macro_rules! take {
            ($($f:ident),*) => { $( if flags.$f.is_some() { self.$f = flags.$f; } )* };
        }
        take!(
            from,
            smtp_url,
            smtp_user,
            smtp_password_env,
            smtp_password,
            imap_url,
            imap_user,
            imap_password_env,
            imap_password,
            imap_folder,
            processed_folder,
            refused_folder,
            max_message_bytes,
            maildir,
            tls_ca_file
        );
        self
    }

    /// Largest email sent (`max_message_bytes` or its default).
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// The mailbox scanned for bundles (`imap_folder` or `INBOX`).
    pub fn imap_folder(&self) -> &str {
        self.imap_folder.as_deref().unwrap_or(DEFAULT_IMAP_FOLDER)
    }

    /// The folder processed emails go to (`processed_folder` or `Ferry/Processed`).
    pub fn processed_folder(&self) -> &str {
        self.processed_folder
            .as_deref()
            .unwrap_or(DEFAULT_PROCESSED_FOLDER)
    }

    /// The folder refused emails go to (`refused_folder` or `Ferry/Refused`).
    pub fn refused_folder(&self) -> &str {
        self.refused_folder
            .as_deref()
            .unwrap_or(DEFAULT_REFUSED_FOLDER)
    }

    /// Things a person should know about these settings, one line each (a password written
    /// in plain text in the file).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, env_key, set) in [
            (
                "smtp_password",
                "smtp_password_env",
                self.smtp_password.is_some(),
            ),
            (
                "imap_password",
                "imap_password_env",
                self.imap_password.is_some(),
            ),
        ] {
            if set {
                out.push(format!(
                    "`{key}` is stored in plain text in ferry.toml; prefer `{env_key}` naming an environment variable"
                ));
            }
        }
        if let Ok(Some(u)) = self.smtp() {
            if u.security == Security::Plain && !u.is_loopback() {
                out.push(format!(
                    "smtp_url {u} never uses TLS: mail and password cross the network readable"
                ));
            }
        }
        if let Ok(Some(u)) = self.imap() {
            if u.security == Security::Plain && !u.is_loopback() {
                out.push(format!(
                    "imap_url {u} never uses TLS: mail and password cross the network readable"
                ));
            }
        }
        out
    }

    /// Checks every setting that is present, without connecting anywhere or reading any
    /// password.
    pub fn validate(&self) -> Result<(), EmailError> {
        self.smtp()?;
        self.imap()?;
        if let Some(from) = &self.from {
            crate::mime::parse_address(from)?;
        }
        let max = self.max_message_bytes();
        if max < MIN_MAX_MESSAGE_BYTES {
            return Err(EmailError::Setting {
                key: "max_message_bytes",
                problem: format!("{max} is too small; use at least {MIN_MAX_MESSAGE_BYTES}"),
            });
        }
        if self.imap_url.is_some() && self.maildir.is_some() {
            return Err(EmailError::Setting {
                key: "maildir",
                problem: "set either `imap_url` or `maildir`, not both".into(),
            });
        }
        for (key, name) in [
            ("imap_folder", self.imap_folder()),
            ("processed_folder", self.processed_folder()),
            ("refused_folder", self.refused_folder()),
        ] {
            check_folder(key, name)?;
        }
        if self.imap_folder() == self.processed_folder() {
            return Err(EmailError::Setting {
                key: "processed_folder",
                problem: "must differ from `imap_folder`".into(),
            });
        }
        if self.refused_folder() == self.imap_folder()
            || self.refused_folder() == self.processed_folder()
        {
            return Err(EmailError::Setting {
                key: "refused_folder",
                problem: "must differ from `imap_folder` and `processed_folder`".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn smtp(&self) -> Result<Option<ServerUrl>, EmailError> {
        self.smtp_url
            .as_deref()
            .map(|u| ServerUrl::parse("smtp_url", u, Protocol::Smtp))
            .transpose()
    }

    pub(crate) fn imap(&self) -> Result<Option<ServerUrl>, EmailError> {
        self.imap_url
            .as_deref()
            .map(|u| ServerUrl::parse("imap_url", u, Protocol::Imap))
            .transpose()
    }

    /// SMTP login, when `smtp_user` is set: (user, password).
    pub(crate) fn smtp_login(&self) -> Result<Option<(String, String)>, EmailError> {
        self.smtp_login_from(&env)
    }

    fn smtp_login_from(&self, env: &Env<'_>) -> Result<Option<(String, String)>, EmailError> {
        let Some(user) = &self.smtp_user else {
            return Ok(None);
        };
        let password = secret(
            env,
            "smtp_password_env",
            self.smtp_password_env.as_deref(),
            "smtp_password",
            self.smtp_password.as_deref(),
        )?;
        Ok(Some((user.clone(), password)))
    }

    /// IMAP login: (user, password).
    pub(crate) fn imap_login(&self) -> Result<(String, String), EmailError> {
        self.imap_login_from(&env)
    }

    fn imap_login_from(&self, env: &Env<'_>) -> Result<(String, String), EmailError> {
        let user = self
            .imap_user
            .clone()
            .or_else(|| self.smtp_user.clone())
            .ok_or(EmailError::MissingSetting {
                key: "imap_user",
                hint: "set `imap_user` in [email] in ferry.toml or pass --imap-user",
            })?;
        let password = if self.imap_password_env.is_some() || self.imap_password.is_some() {
            secret(
                env,
                "imap_password_env",
                self.imap_password_env.as_deref(),
                "imap_password",
                self.imap_password.as_deref(),
            )?
        } else {
            secret(
                env,
                "imap_password_env",
                self.smtp_password_env.as_deref(),
                "imap_password",
                self.smtp_password.as_deref(),
            )?
        };
        Ok((user, password))
    }
}

/// Reads an environment variable (a parameter so tests need not change the environment).
type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn secret(
    lookup: &Env<'_>,
    env_key: &'static str,
    env: Option<&str>,
    key: &'static str,
    plain: Option<&str>,
) -> Result<String, EmailError> {
    if let Some(var) = env {
        return lookup(var).ok_or_else(|| EmailError::MissingSecret {
            var: var.to_string(),
            key: env_key,
        });
    }
    if let Some(p) = plain {
        return Ok(p.to_string());
    }
    Err(EmailError::MissingSetting {
        key: env_key,
        hint: if key == "smtp_password" {
            "name the environment variable holding the password with `smtp_password_env` (or --smtp-password-env)"
        } else {
            "name the environment variable holding the password with `imap_password_env` (or --imap-password-env)"
        },
    })
}

fn check_folder(key: &'static str, name: &str) -> Result<(), EmailError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("//")
        || name
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\' || c == '*' || c == '%')
        || name.split('/').any(|p| p == "." || p == "..");
    if bad {
        return Err(EmailError::Setting {
            key,
            problem: format!(
                "`{name}` is not a usable folder name (use names like `Ferry/Processed`)"
            ),
        });
    }
    Ok(())
}

/// Which protocol a URL is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Smtp,
    Imap,
}

/// How a connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte (smtps://, imaps://).
    Tls,
    /// STARTTLS when the server offers it (smtp://, imap://).
    StartTlsIfOffered,
    /// Never TLS (smtp+plain://, imap+plain://).
    Plain,
}

/// A parsed `smtp_url` or `imap_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    pub(crate) security: Security,
    pub(crate) host: String,
    pub(crate) port: u16,
    text: String,
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl ServerUrl {
    fn parse(key: &'static str, url: &str, proto: Protocol) -> Result<ServerUrl, EmailError> {
        let err = |problem: String| EmailError::Setting { key, problem };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err(format!("`{url}` is not a URL like {}", example(proto))))?;
        let (security, default_port) = match (proto, scheme.to_ascii_lowercase().as_str()) {
            (Protocol::Smtp, "smtp") => (Security::StartTlsIfOffered, 587),
            (Protocol::Smtp, "smtps") => (Security::Tls, 465),
            (Protocol::Smtp, "smtp+plain") => (Security::Plain, 587),
            (Protocol::Imap, "imap") => (Security::StartTlsIfOffered, 143),
            (Protocol::Imap, "imaps") => (Security::Tls, 993),
            (Protocol::Imap, "imap+plain") => (Security::Plain, 143),
            _ => {
                return Err(err(format!(
                    "unknown scheme `{scheme}://` (use {})",
                    match proto {
                        Protocol::Smtp => "smtp://, smtps:// or smtp+plain://",
                        Protocol::Imap => "imap://, imaps:// or imap+plain://",
                    }
                )));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') || authority.contains('#') {
            return Err(err(format!(
                "`{url}`: only a host and a port are allowed, like {}",
                example(proto)
            )));
        }
        if authority.contains('@') {
            return Err(err(format!(
                "`{url}`: put the login in `{}` and the password in an environment variable, not in the URL",
                match proto {
                    Protocol::Smtp => "smtp_user",
                    Protocol::Imap => "imap_user",
                }
            )));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err(format!("`{url}`: unclosed `[` in the host")))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err(format!("`{url}`: expected `:port` after `]`")))?,
                ),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(err(format!("`{url}` names no host")));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(format!("`{url}`: `{p}` is not a port number")))?,
        };
        Ok(ServerUrl {
            security,
            host,
            port,
            text: url.to_string(),
        })
    }

    /// Whether the server is on this machine.
    pub(crate) fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn example(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Smtp => "smtps://mail.example.org:465",
        Protocol::Imap => "imaps://mail.example.org:993",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str, p: Protocol) -> Result<ServerUrl, String> {
        ServerUrl::parse("x", u, p).map_err(|e| e.to_string())
    }

    #[test]
    fn urls_parse_with_their_security_and_default_ports() {
        let cases = [
            ("smtp://127.0.0.1:2525", Security::StartTlsIfOffered, 2525),
            ("smtps://mail.example.org", Security::Tls, 465),
            ("smtp+plain://localhost", Security::Plain, 587),
            ("SMTP://[::1]:25/", Security::StartTlsIfOffered, 25),
        ];
        for (u, sec, port) in cases {
            let s = url(u, Protocol::Smtp).unwrap();
            assert_eq!((s.security, s.port), (sec, port), "{u}");
        }
        let i = url("imaps://imap.example.org", Protocol::Imap).unwrap();
        assert_eq!(
            (i.security, i.port, i.host.as_str()),
            (Security::Tls, 993, "imap.example.org")
        );
        assert_eq!(url("imap://h", Protocol::Imap).unwrap().port, 143);
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        for (u, want) in [
            ("127.0.0.1:25", "is not a URL"),
            ("http://x", "unknown scheme"),
            ("smtp://user:pw@host", "environment variable"),
            ("smtp://host:99999", "not a port"),
            ("smtp://host/path", "only a host"),
            ("smtp://:25", "names no host"),
        ] {
            let e = url(u, Protocol::Smtp).unwrap_err();
            assert!(e.contains(want), "{u}: {e}");
        }
    }

    #[test]
    fn flags_override_file_settings() {
        let file = EmailConfig {
            from: Some("a@example.test".into()),
            smtp_url: Some("smtp://a".into()),
            ..Default::default()
        };
        let flags = EmailConfig {
            smtp_url: Some("smtp://b".into()),
            ..Default::default()
        };
        let c = file.overridden_by(flags);
        assert_eq!(c.smtp_url.as_deref(), Some("smtp://b"));
        assert_eq!(c.from.as_deref(), Some("a@example.test"));
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let c = EmailConfig {
            smtp_password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.warnings().len(), 1);
    }

    #[test]
    fn passwords_come_from_the_named_environment_variable() {
        let c = EmailConfig {
            smtp_user: Some("clinic-a".into()),
            smtp_password_env: Some("FERRY_SMTP_PASSWORD".into()),
            ..Default::default()
        };
        let env = |v: &str| (v == "FERRY_SMTP_PASSWORD").then(|| "s3cret".to_string());
        assert_eq!(
            c.smtp_login_from(&env).unwrap(),
            Some(("clinic-a".into(), "s3cret".into()))
        );
        // IMAP falls back to the SMTP login and password.
        assert_eq!(
            c.imap_login_from(&env).unwrap(),
            ("clinic-a".into(), "s3cret".into())
        );
        let e = c.smtp_login_from(&|_: &str| None).unwrap_err().to_string();
        assert!(
            e.contains("FERRY_SMTP_PASSWORD") && e.contains("not set"),
            "{e}"
        );
        let no_pw = EmailConfig {
            imap_user: Some("x".into()),
            ..Default::default()
        };
        let e = no_pw.imap_login_from(&env).unwrap_err().to_string();
        assert!(e.contains("imap_password_env"), "{e}");
    }

    #[test]
    fn the_issue_example_table_is_accepted() {
        let c: EmailConfig = serde_json::from_value(serde_json::json!({
            "from": "clinic-a@example.test",
            "smtp_url": "smtp://127.0.0.1:2525",
            "smtp_user": "clinic-a",
            "smtp_password_env": "FERRY_SMTP_PASSWORD",
            "imap_url": "imap://127.0.0.1:1143",
            "imap_user": "clinic-a",
            "imap_password_env": "FERRY_IMAP_PASSWORD",
            "imap_folder": "INBOX",
            "processed_folder": "Ferry/Processed",
            "max_message_bytes": 10000000
        }))
        .unwrap();
        c.validate().unwrap();
        let unknown: Result<EmailConfig, _> =
            serde_json::from_value(serde_json::json!({"smtp_uri": "x"}));
        assert!(unknown.is_err(), "a misspelt key must be refused");
    }
}
