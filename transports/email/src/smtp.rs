//! Sending over SMTP with lettre: plain, STARTTLS (when the server offers it) or TLS from
//! the start, with AUTH when a login is configured.

use crate::config::{EmailConfig, Security, ServerUrl};
use crate::error::EmailError;
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// How long one SMTP exchange may take before it is given up.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A configured SMTP server.
pub(crate) struct Smtp {
    url: ServerUrl,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

fn extra_roots(cfg: &EmailConfig) -> Result<Vec<Certificate>, EmailError> {
    let Some(path) = &cfg.tls_ca_file else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path).map_err(|e| EmailError::io("cannot read", path, e))?;
    let cert = Certificate::from_pem(&pem).map_err(|e| EmailError::Setting {
        key: "tls_ca_file",
        problem: format!("{}: not a PEM certificate ({e})", path.display()),
    })?;
    Ok(vec![cert])
}

impl Smtp {
    /// The server of `smtp_url`, with the login of `smtp_user` (the password is read from
    /// the environment now).
    pub(crate) fn new(cfg: &EmailConfig) -> Result<Smtp, EmailError> {
        let url = cfg.smtp()?.ok_or(EmailError::MissingSetting {
            key: "smtp_url",
            hint: "set `smtp_url` in [email] in ferry.toml or pass --smtp-url",
        })?;
        let tls_params = || -> Result<TlsParameters, EmailError> {
            let mut b = TlsParameters::builder(url.host.clone());
            for c in extra_roots(cfg)? {
                b = b.add_root_certificate(c);
            }
            b.build_rustls().map_err(|e| EmailError::Smtp {
                server: url.to_string(),
                detail: format!("cannot set up TLS: {e}"),
            })
        };
        let tls = match url.security {
            Security::Plain => Tls::None,
            Security::StartTlsIfOffered => Tls::Opportunistic(tls_params()?),
            Security::Tls => Tls::Wrapper(tls_params()?),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.clone())
            .port(url.port)
            .tls(tls)
            .timeout(Some(TIMEOUT));
        if let Some((user, password)) = cfg.smtp_login()? {
            b = b.credentials(Credentials::new(user, password));
        }
        Ok(Smtp {
            url,
            transport: b.build(),
        })
    }

    /// Sends one formatted email. On failure, also says whether the whole server is
    /// unusable (unreachable, login refused) rather than this one email refused.
    pub(crate) async fn send(
        &self,
        from: &Mailbox,
        to: &[Mailbox],
        email: &[u8],
    ) -> Result<(), Failure> {
        let envelope = Envelope::new(
            Some(from.email.clone()),
            to.iter().map(|m| m.email.clone()).collect(),
        )
        .map_err(|e| EmailError::BadAddress {
            address: from.to_string(),
            reason: e.to_string(),
        })?;
        self.transport
            .send_raw(&envelope, email)
            .await
            .map(|_| ())
            .map_err(|e| {
                let code = e.status().map(|c| c.to_string());
                let server_down = match code.as_deref() {
                    None => true,
                    Some(c) => matches!(c, "421" | "454" | "530" | "534" | "535" | "538"),
                };
                Failure {
                    error: EmailError::Smtp {
                        server: self.url.to_string(),
                        detail: explain(&e),
                    },
                    server_down,
                }
            })
    }
}

/// A failed send.
pub(crate) struct Failure {
    pub(crate) error: EmailError,
    /// Every other email would fail the same way now.
    pub(crate) server_down: bool,
}

impl From<EmailError> for Failure {
    fn from(error: EmailError) -> Failure {
        Failure {
            error,
            server_down: false,
        }
    }
}

/// One line saying what went wrong and what to do.
fn explain(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s = s.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        src = s_source(src);
    }
    let text = text.replace(['\r', '\n'], " ");
    let code = e.status().map(|c| c.to_string());
    let hint = match code.as_deref() {
        Some("535" | "534" | "530" | "538") => {
            "the server refused the login: check smtp_user and the password"
        }
        Some("552" | "523") => {
            "the server refused the email as too large: lower max_message_bytes in [email]"
        }
        Some("550" | "551" | "553") => {
            "the server refused an address: check `from` and the members' addresses"
        }
        Some(c) if c.starts_with('4') => "the server is busy or limiting; ferry tries again later",
        _ if e.is_timeout() => "the server did not answer in time; is the network up?",
        _ if e.is_tls() => {
            "the TLS connection failed; check the port and scheme (smtps:// is usually port 465, smtp:// port 587)"
        }
        _ => "is the server reachable? ferry tries again later",
    };
    format!("{text} ({hint})")
}

fn s_source<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(|e| e.source())
}
