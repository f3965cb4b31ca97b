//! The `[sms]` table of ferry.toml.
//!
//! ```toml
//! [sms]
//! gateway = "kannel"                  # kannel | gammu | http
//! from = "+15550001"                  # this node's own number
//! sendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms"
//! username = "tester"
//! password_env = "FERRY_SMS_PASSWORD"
//! listen = "127.0.0.1:18080"          # ferry sms listen
//! outbox = "/var/spool/gammu/outbox/" # gammu
//! inbox = "/var/spool/gammu/inbox/"   # gammu
//! daily_budget = 200                  # SMS per peer per day (UTC); more wait in a queue
//! binary = false                      # 8-bit SMS (kannel, gammu, or an http template with {hex})
//! expiry_hours = 336                  # an incomplete message is given up after this long without a new part
//! keep_sent_hours = 336               # sent messages are kept this long to answer repair requests
//! repair_after_minutes = 30           # ask for missing parts after this long without a new part
//! total_daily_budget = 1000           # SMS per UTC day to all numbers together
//! listen_token_env = "FERRY_SMS_TOKEN" # the variable holding the token gateways must present
//! tls_cert = "/etc/ferry/cert.pem"    # HTTPS for the listener (needed beyond loopback)
//! tls_key = "/etc/ferry/key.pem"
//!
//! [sms.template]                      # gateway = "http": any HTTP SMS API
//! url = "https://sms.example/api/send"
//! method = "post"
//! content_type = "application/json"
//! body = '{"to": "{to}", "message": "{text}"}'
//! headers = { Authorization = "Bearer {password}" }
//! ```

use crate::error::SmsError;
use crate::phone::Phone;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which gateway carries the SMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// Kannel's smsbox: `sendsms` over HTTP; incoming SMS arrive at [`crate::Listener`].
    Kannel,
    /// Gammu SMSD's `files` service: outgoing SMS are files in its outbox folder, incoming
    /// ones files in its inbox folder ([`crate::SmsTransport::receive_spool`]).
    Gammu,
    /// Any HTTP API, described by [`HttpTemplate`]; incoming SMS arrive at the listener.
    Http,
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    /// Parameters in the URL.
    #[default]
    #[serde(alias = "GET")]
    Get,
    /// Parameters in the body.
    #[serde(alias = "POST")]
    Post,
}

/// A request to an HTTP SMS API (Android SMS-gateway apps, hosted providers).
///
/// `url`, `body` and header values may hold the placeholders `{to}`, `{from}`, `{text}`
/// (the SMS in ferry's text alphabet), `{hex}` (the binary SMS in hexadecimal, when
/// `binary = true`), `{username}` and `{password}`. Values are percent-encoded in the URL,
/// JSON-escaped in a body whose content type mentions `json`, percent-encoded in a
/// `application/x-www-form-urlencoded` body, and inserted as they are elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTemplate {
    /// The URL.
    pub url: String,
    /// GET or POST; POST when a body is given, GET otherwise.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// The request body (POST).
    #[serde(default)]
    pub body: Option<String>,
    /// The body's content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Text the answer must contain for the SMS to count as accepted (for APIs that answer
    /// 200 to everything); any 2xx answer counts when unset.
    #[serde(default)]
    pub success_contains: Option<String>,
}

fn default_budget() -> u32 {
    200
}
fn default_expiry() -> u64 {
    14 * 24
}
fn default_repair_after() -> u64 {
    30
}
fn default_text_chars() -> u16 {
    160
}
fn default_housekeeping() -> u64 {
    60
}
fn default_total_budget() -> u32 {
    1000
}
fn default_listen_rate() -> u32 {
    20
}

/// The SMS settings (`[sms]` in ferry.toml). Deserialize it with serde (TOML, JSON, …) or
/// fill it in code; [`SmsConfig::validate`] says what is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// Which gateway carries the SMS.
    pub gateway: GatewayKind,
    /// This node's own number (the sender of what it sends).
    pub from: Phone,
    /// Kannel: the smsbox `sendsms` URL, e.g. `http://127.0.0.1:13013/cgi-bin/sendsms`.
    #[serde(default)]
    pub sendsms_url: Option<String>,
    /// Kannel: the `sendsms-user`; http: the `{username}` placeholder.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the gateway password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Where `ferry sms listen` listens (`127.0.0.1:18080`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Kannel: `get` (default) or `post` to `sendsms_url`.
    #[serde(default)]
    pub method: HttpMethod,
    /// Gammu: the outbox folder (`outboxpath` of gammu-smsdrc).
    #[serde(default)]
    pub outbox: Option<PathBuf>,
    /// Gammu: the inbox folder (`inboxpath` of gammu-smsdrc).
    #[serde(default)]
    pub inbox: Option<PathBuf>,
    /// SMS per peer per UTC day; what goes beyond waits in a durable queue.
    #[serde(default = "default_budget")]
    pub daily_budget: u32,
    /// Send 8-bit binary SMS (140 bytes) instead of text (123 bytes in 160 characters).
    #[serde(default)]
    pub binary: bool,
    /// Hours without a new part after which an incomplete message is given up (and
    /// reported).
    #[serde(default = "default_expiry")]
    pub expiry_hours: u64,
    /// Hours a sent message is kept to answer repair requests; `expiry_hours` when unset.
    #[serde(default)]
    pub keep_sent_hours: Option<u64>,
    /// Minutes without a new part after which the missing parts are asked for (then after
    /// twice as long, four times, …).
    #[serde(default = "default_repair_after")]
    pub repair_after_minutes: u64,
    /// Characters per text SMS (160; lower it for gateways that add a signature).
    #[serde(default = "default_text_chars")]
    pub text_chars: u16,
    /// Accept SMS from numbers that are not a known peer's (otherwise they are kept aside
    /// and reported).
    #[serde(default)]
    pub accept_unknown: bool,
    /// Seconds between the listener's housekeeping rounds (repair requests, expiry, the
    /// queue).
    #[serde(default = "default_housekeeping")]
    pub housekeeping_seconds: u64,
    /// gateway = "http": the request to send one SMS.
    #[serde(default)]
    pub template: Option<HttpTemplate>,
    /// SMS per UTC day to all numbers together (data, repairs and control SMS alike); what
    /// goes beyond waits in the queue.
    #[serde(default = "default_total_budget")]
    pub total_daily_budget: u32,
    /// The environment variable holding the token a gateway must present to `ferry sms
    /// listen` (`?token=…` in its URL, or `Authorization: Bearer …`). Required when the
    /// listener is reachable beyond this machine.
    #[serde(default)]
    pub listen_token_env: Option<String>,
    /// The listener's TLS certificate chain (PEM). With `tls_key`, the listener speaks
    /// HTTPS; required when it is reachable beyond this machine.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The listener's TLS private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Requests per second the listener takes from one address for SMS from numbers that
    /// are no member's (a burst of five times as many is allowed); beyond that it answers
    /// 429. SMS from members' numbers are never held back by it.
    #[serde(default = "default_listen_rate")]
    pub listen_rate: u32,
}

impl SmsConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(gateway: GatewayKind, from: Phone) -> SmsConfig {
        SmsConfig {
            gateway,
            from,
            sendsms_url: None,
            username: None,
            password_env: None,
            listen: None,
            method: HttpMethod::Get,
            outbox: None,
            inbox: None,
            daily_budget: default_budget(),
            binary: false,
            expiry_hours: default_expiry(),
            keep_sent_hours: None,
            repair_after_minutes: default_repair_after(),
            text_chars: default_text_chars(),
            accept_unknown: false,
            housekeeping_seconds: default_housekeeping(),
            template: None,
            total_daily_budget: default_total_budget(),
            listen_token_env: None,
            tls_cert: None,
            tls_key: None,
            listen_rate: default_listen_rate(),
        }
    }

    /// Checks that the settings the gateway needs are there.
    pub fn validate(&self) -> Result<(), SmsError> {
        let need = |setting: &'static str, problem: &str| SmsError::Config {
            setting,
            problem: problem.to_string(),
        };
        match self.gateway {
            GatewayKind::Kannel => {
                if self.sendsms_url.is_none() {
                    return Err(need(
                        "sendsms_url",
                        "Kannel needs its sendsms URL, e.g. http://127.0.0.1:13013/cgi-bin/sendsms",
                    ));
                }
            }
            GatewayKind::Gammu => {
                if self.outbox.is_none() && self.inbox.is_none() {
                    return Err(need(
                        "outbox",
                        "Gammu needs its outbox (and inbox) folder, as in gammu-smsdrc",
                    ));
                }
            }
            GatewayKind::Http => {
                let Some(t) = &self.template else {
                    return Err(need(
                        "template",
                        "gateway = \"http\" needs a [sms.template] with at least a url",
                    ));
                };
                let all = format!(
                    "{}{}{}",
                    t.url,
                    t.body.as_deref().unwrap_or(""),
                    t.headers.values().cloned().collect::<String>()
                );
                let wanted = if self.binary { "{hex}" } else { "{text}" };
                if !all.contains(wanted) {
                    return Err(need(
                        "template",
                        &format!(
                            "the template must carry the SMS: put {wanted} in its url or body"
                        ),
                    ));
                }
            }
        }
        if !(40..=160).contains(&self.text_chars) {
            return Err(need("text_chars", "must be between 40 and 160"));
        }
        if self.expiry_hours == 0 {
            return Err(need("expiry_hours", "must be at least 1"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(need(
                if self.tls_cert.is_some() {
                    "tls_key"
                } else {
                    "tls_cert"
                },
                "HTTPS needs both tls_cert (the certificate chain, PEM) and tls_key (its private key, PEM)",
            ));
        }
        Ok(())
    }

    /// Bytes one SMS carries in the configured mode (header included): 140 in binary mode,
    /// 123 in 160 text characters.
    pub fn frame_bytes(&self) -> usize {
        if self.binary {
            crate::frame::BINARY_FRAME
        } else {
            crate::text::bytes_for(usize::from(self.text_chars))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_deserializes() {
        let json = r#"{
            "gateway": "kannel", "from": "+15550001",
            "sendsms_url": "http://127.0.0.1:13013/cgi-bin/sendsms",
            "username": "tester", "password_env": "FERRY_SMS_PASSWORD",
            "listen": "127.0.0.1:18080",
            "outbox": "/var/spool/gammu/outbox/", "inbox": "/var/spool/gammu/inbox/",
            "daily_budget": 200, "binary": false
        }"#;
        let c: SmsConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.expiry_hours, 336);
        assert_eq!(c.frame_bytes(), 123);
        assert!(
            serde_json::from_str::<SmsConfig>(r#"{"gateway":"kannel","from":"+1555","tpyo":1}"#)
                .is_err()
        );
    }

    #[test]
    fn missing_settings_are_named() {
        let c = SmsConfig::new(GatewayKind::Http, Phone::parse("+15550001").unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("template"), "{e}");
    }
}
