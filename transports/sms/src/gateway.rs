//! The gateways that carry one SMS: Kannel's sendsms, Gammu SMSD's spool folders, and any
//! HTTP API described by a template.

use crate::config::{GatewayKind, HttpMethod, HttpTemplate, SmsConfig};
use crate::error::SmsError;
use crate::phone::Phone;
use ferry_transport::fsutil;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The content of one SMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmsBody {
    /// A text SMS (GSM-7 on the air).
    Text(String),
    /// An 8-bit binary SMS.
    Binary(Vec<u8>),
}

impl SmsBody {
    /// Bytes of the body as written to a file: the text or the binary data.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            SmsBody::Text(t) => t.as_bytes(),
            SmsBody::Binary(b) => b,
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space) into bytes.
pub(crate) fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Parses `a=1&b=2` into decoded pairs.
pub(crate) fn form_pairs(s: &str) -> Vec<(String, Vec<u8>)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&form_decode(k)).into_owned(),
                form_decode(v),
            )
        })
        .collect()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Sends SMS through the configured gateway.
pub(crate) struct Gateway {
    kind: GatewayKind,
    from: Phone,
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    method: HttpMethod,
    outbox: Option<PathBuf>,
    template: Option<HttpTemplate>,
    agent: ureq::Agent,
}

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

impl Gateway {
    pub(crate) fn new(config: &SmsConfig, password: Option<String>) -> Gateway {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(60)))
                .http_status_as_error(false)
                .build(),
        );
        Gateway {
            kind: config.gateway,
            from: config.from.clone(),
            url: config.sendsms_url.clone(),
            username: config.username.clone(),
            password,
            method: config.method,
            outbox: config.outbox.clone(),
            template: config.template.clone(),
            agent,
        }
    }

    /// Hands one SMS to the gateway. `priority` orders Gammu's outbox (0 first); `note`
    /// names the file.
    pub(crate) fn send(
        &self,
        to: &Phone,
        body: &SmsBody,
        priority: u8,
        note: &str,
    ) -> Result<(), SmsError> {
        match self.kind {
            GatewayKind::Kannel => self.send_kannel(to, body),
            GatewayKind::Gammu => self.send_gammu(to, body, priority, note),
            GatewayKind::Http => self.send_template(to, body),
        }
    }

    fn send_kannel(&self, to: &Phone, body: &SmsBody) -> Result<(), SmsError> {
        let url = self.url.as_deref().unwrap_or_default();
        let mut params = vec![
            (
                "username",
                percent_encode(self.username.as_deref().unwrap_or("").as_bytes()),
            ),
            (
                "password",
                percent_encode(self.password.as_deref().unwrap_or("").as_bytes()),
            ),
            ("from", percent_encode(self.from.as_str().as_bytes())),
            ("to", percent_encode(to.as_str().as_bytes())),
            ("text", percent_encode(body.as_bytes())),
        ];
        if matches!(body, SmsBody::Binary(_)) {
            params.push(("coding", "1".into()));
        }
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        // (GET below; the POST form carries the same as headers.)
        let result = match self.method {
            HttpMethod::Get => {
                let sep = if url.contains('?') { '&' } else { '?' };
                self.agent.get(format!("{url}{sep}{query}")).call()
            }
            // Kannel's POST form: parameters as X-Kannel headers, the SMS as the body
            // (text/plain, or application/octet-stream for 8-bit).
            HttpMethod::Post => {
                let binary = matches!(body, SmsBody::Binary(_));
                let mut req = self
                    .agent
                    .post(url)
                    .header(
                        "Content-Type",
                        if binary {
                            "application/octet-stream"
                        } else {
                            "text/plain"
                        },
                    )
                    .header("X-Kannel-Username", self.username.as_deref().unwrap_or(""))
                    .header("X-Kannel-Password", self.password.as_deref().unwrap_or(""))
                    .header("X-Kannel-From", self.from.as_str())
                    .header("X-Kannel-To", to.as_str());
                if binary {
                    req = req.header("X-Kannel-Coding", "1");
                }
                req.send(body.as_bytes())
            }
        };
        check(url, result, None)
    }

    fn send_template(&self, to: &Phone, body: &SmsBody) -> Result<(), SmsError> {
        let t = self
            .template
            .as_ref()
            .expect("validated: http gateway has a template");
        let text = match body {
            SmsBody::Text(s) => s.clone(),
            SmsBody::Binary(_) => String::new(),
        };
        let hex = match body {
            SmsBody::Binary(b) => hex_upper(b),
            SmsBody::Text(_) => String::new(),
        };
        let values: [(&str, &str); 6] = [
            ("{to}", to.as_str()),
            ("{from}", self.from.as_str()),
            ("{text}", &text),
            ("{hex}", &hex),
            ("{username}", self.username.as_deref().unwrap_or("")),
            ("{password}", self.password.as_deref().unwrap_or("")),
        ];
        let fill = |pattern: &str, escape: &dyn Fn(&str) -> String| {
            let mut out = pattern.to_string();
            for (k, v) in &values {
                out = out.replace(k, &escape(v));
            }
            out
        };
        let url = fill(&t.url, &|v| percent_encode(v.as_bytes()));
        let ct = t.content_type.clone().unwrap_or_default();
        let body_text = t.body.as_ref().map(|b| {
            if ct.contains("json") {
                fill(b, &|v| {
                    let s = serde_json::to_string(v).unwrap_or_default();
                    s[1..s.len() - 1].to_string()
                })
            } else if ct.contains("x-www-form-urlencoded") {
                fill(b, &|v| percent_encode(v.as_bytes()))
            } else {
                fill(b, &|v| v.to_string())
            }
        });
        let method = t.method.unwrap_or(if body_text.is_some() {
            HttpMethod::Post
        } else {
            HttpMethod::Get
        });
        let result = match method {
            HttpMethod::Get => {
                let mut req = self.agent.get(&url);
                for (k, v) in &t.headers {
                    req = req.header(k, fill(v, &|v| v.to_string()));
                }
                req.call()
            }
            HttpMethod::Post => {
                let mut req = self.agent.post(&url);
                if !ct.is_empty() {
                    req = req.header("Content-Type", &ct);
                }
                for (k, v) in &t.headers {
                    req = req.header(k, fill(v, &|v| v.to_string()));
                }
                req.send(body_text.unwrap_or_default().as_bytes())
            }
        };
        check(&t.url, result, t.success_contains.as_deref())
    }

    fn send_gammu(
        &self,
        to: &Phone,
        body: &SmsBody,
        priority: u8,
        note: &str,
    ) -> Result<(), SmsError> {
        let outbox = self.outbox.as_deref().ok_or_else(|| SmsError::Config {
            setting: "outbox",
            problem: "sending through Gammu needs its outbox folder".into(),
        })?;
        let (date, time) = crate::store::utc_stamp(SystemTime::now());
        let seq = SPOOL_SEQ.fetch_add(1, Ordering::Relaxed) % 100;
        let prio = char::from(b'A' + priority.min(25));
        let note: String = note
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let (ext, content) = match body {
            SmsBody::Text(t) => ("txt", t.clone().into_bytes()),
            SmsBody::Binary(b) => (
                "smsbackup",
                format!(
                    "[SMSBackup000]\nPDU = Submit\nState = UnSent\nNumber = \"{to}\"\nText00 = {}\nCoding = 8bit\nFolder = 2\nLength = {}\nClass = -1\n",
                    hex_upper(b),
                    b.len()
                )
                .into_bytes(),
            ),
        };
        let name = format!(
            "OUT{prio}{date}_{time}_{seq:02}_{to}_{note}-{}.{ext}",
            std::process::id()
        );
        write_spool_file(outbox, &name, &content)
    }
}

fn check(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    success_contains: Option<&str>,
) -> Result<(), SmsError> {
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let ok = (200..300).contains(&status)
                && success_contains.is_none_or(|needle| body.contains(needle));
            if ok {
                Ok(())
            } else {
                Err(SmsError::GatewayRefused {
                    url: url.to_string(),
                    status,
                    body: body.trim().chars().take(200).collect(),
                })
            }
        }
        Err(e) => Err(SmsError::GatewayUnreachable {
            url: url.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Writes a file into a spool folder atomically and durably ([`ferry_transport::fsutil`]):
/// under a hidden temporary name (which Gammu ignores: it only takes `OUT…` files), then
/// renamed.
fn write_spool_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), SmsError> {
    fsutil::write_atomic(&dir.join(name), content).map_err(|source| SmsError::Spool {
        what: "write to",
        path: dir.to_path_buf(),
        source,
    })
}

/// One SMS found in Gammu's inbox folder.
#[derive(Debug)]
pub(crate) struct SpoolSms {
    pub path: PathBuf,
    pub from: String,
    pub body: SmsBody,
}

fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .collect();
    String::from_utf16_lossy(&units)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads a Gammu SMS backup file (`InboxFormat = detail`): the sender, and the text or
/// binary content of its parts.
fn parse_backup(text: &str) -> Option<(Option<String>, SmsBody)> {
    let mut number = None;
    let mut coding = String::new();
    let mut data: Vec<u8> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k == "Number" {
            number = Some(v.trim_matches('"').to_string());
        } else if k == "Coding" {
            coding = v.to_string();
        } else if k.starts_with("Text") {
            data.extend(unhex(v)?);
        }
    }
    let body = if coding.eq_ignore_ascii_case("8bit") {
        SmsBody::Binary(data)
    } else {
        SmsBody::Text(utf16(&data, true))
    };
    Some((number, body))
}

/// How long an empty file in Gammu's inbox is taken for one still being written.
const EMPTY_SPOOL_FILE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Lists the SMS in Gammu's inbox folder, oldest name first. Files that are not Gammu's
/// (`IN…` with `.txt`, `.bin` or `.smsbackup`) are left alone.
pub(crate) fn read_spool(inbox: &Path) -> Result<Vec<SpoolSms>, SmsError> {
    let entries = match fs::read_dir(inbox) {
        Ok(e) => e,
        Err(source) => {
            return Err(SmsError::Spool {
                what: "read",
                path: inbox.to_path_buf(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("IN"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !matches!(ext, "txt" | "bin" | "smsbackup") {
            continue;
        }
        // IN<date>_<time>_<serial>_<sender>_<sequence>
        let fields: Vec<&str> = stem[2..].split('_').collect();
        let from_name = if fields.len() >= 5 {
            fields[3..fields.len() - 1].join("_")
        } else {
            String::new()
        };
        let path = inbox.join(&name);
        // gammu-smsd creates the file, then writes it: an empty file younger than a minute
        // is one it is still writing, taken at the next pass (an older one is taken, and
        // refused as empty).
        if let Ok(meta) = fs::metadata(&path) {
            let young = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < EMPTY_SPOOL_FILE_GRACE);
            if meta.len() == 0 && young {
                continue;
            }
        }
        let bytes = fs::read(&path).map_err(|source| SmsError::Spool {
            what: "read",
            path: path.clone(),
            source,
        })?;
        let (from, body) = match ext {
            "bin" => (from_name, SmsBody::Binary(bytes)),
            "smsbackup" => match parse_backup(&String::from_utf8_lossy(&bytes)) {
                Some((number, body)) => (number.unwrap_or(from_name), body),
                None => (
                    from_name,
                    SmsBody::Text(String::from_utf8_lossy(&bytes).into_owned()),
                ),
            },
            _ => {
                let text = match bytes.as_slice() {
                    [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
                    [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
                    _ => String::from_utf8_lossy(&bytes).into_owned(),
                };
                (from_name, SmsBody::Text(text))
            }
        };
        out.push(SpoolSms { path, from, body });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_reads_what_kannel_writes() {
        assert_eq!(
            form_decode("%00%FF%C0+ab"),
            vec![0, 255, 0xC0, b' ', b'a', b'b']
        );
        assert_eq!(form_decode("a%2"), b"a%2".to_vec());
        assert_eq!(form_decode("%zz"), b"%zz".to_vec());
        let pairs = form_pairs("from=%2B15550001&to=+15550002&text=Hi!");
        assert_eq!(pairs[0], ("from".into(), b"+15550001".to_vec()));
        assert_eq!(pairs[1], ("to".into(), b" 15550002".to_vec()));
        assert_eq!(percent_encode(b"+1 a/b"), "%2B1%20a%2Fb");
    }

    #[test]
    fn a_spool_file_gammu_is_still_writing_is_taken_at_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let name = "IN20261122_052902_00_+15550001_00.txt";
        let path = dir.path().join(name);
        // Created, not written yet: left for the next pass.
        fs::write(&path, b"").unwrap();
        assert!(read_spool(dir.path()).unwrap().is_empty());
        // Written: taken.
        fs::write(&path, b"Hello").unwrap();
        let got = read_spool(dir.path()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, SmsBody::Text("Hello".into()));
        // An empty file left for more than a minute is taken (and refused by the caller).
        fs::write(&path, b"").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(read_spool(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn gammu_backup_files_are_read() {
        let (n, b) = parse_backup(
            "[SMSBackup000]\nNumber = \"+15550009\"\nText00 = 00480069\nCoding = Default_No_Compression\n",
        )
        .unwrap();
        assert_eq!(n.as_deref(), Some("+15550009"));
        assert_eq!(b, SmsBody::Text("Hi".into()));
        let (_, b) = parse_backup("Number = \"1\"\nText00 = 00FF\nCoding = 8bit\n").unwrap();
        assert_eq!(b, SmsBody::Binary(vec![0, 255]));
    }
}
