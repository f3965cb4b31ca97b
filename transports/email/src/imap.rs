//! Receiving over IMAP with async-imap: TLS from the start, STARTTLS when the server offers
//! it, or plain; reading only new messages (by UID), looking inside only those that may carry
//! ferry data (by their headers and MIME structure), and moving processed ones.
//!
//! Nothing here changes a message's flags: bodies are read with `BODY.PEEK`.

use crate::config::{EmailConfig, Security, ServerUrl};
use crate::error::EmailError;
use async_imap::imap_proto::{self, BodyStructure, Capability as CapRef, Response, Status};
use async_imap::types::{Fetch, UnsolicitedResponse};
use futures_util::TryStreamExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Longest wait for one command (a body of several megabytes on a slow link included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages whose structure is asked for in one command.
const BATCH: usize = 100;

/// A plain or TLS connection.
#[derive(Debug)]
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Session = async_imap::Session<Conn>;

/// TLS settings: the public authorities, plus `tls_ca_file`.
pub(crate) fn tls_config(cfg: &EmailConfig) -> Result<Arc<ClientConfig>, EmailError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.tls_ca_file {
        let bad = |problem: String| EmailError::Setting {
            key: "tls_ca_file",
            problem,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| bad(format!("{}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad(format!("{} holds no certificate", path.display())));
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EmailError::Setting {
            key: "imap_url",
            problem: format!("cannot set up TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One message's first look: its UID, whether it may carry ferry data, its subject.
pub(crate) struct Glance {
    pub(crate) uid: u32,
    pub(crate) candidate: bool,
}

/// An IMAP account, connected on first use and kept open.
pub(crate) struct Imap {
    url: ServerUrl,
    user: String,
    password: String,
    tls: Arc<ClientConfig>,
    session: Option<Session>,
}

impl Imap {
    pub(crate) fn new(cfg: &EmailConfig) -> Result<Option<Imap>, EmailError> {
        let Some(url) = cfg.imap()? else {
            return Ok(None);
        };
        let (user, password) = cfg.imap_login()?;
        Ok(Some(Imap {
            url,
            user,
            password,
            tls: tls_config(cfg)?,
            session: None,
        }))
    }

    /// The account, for messages and for telling mailboxes apart in the state folder.
    pub(crate) fn account(&self) -> String {
        format!("{} ({})", self.url, self.user)
    }

    fn err(&self, what: &str, detail: impl std::fmt::Display) -> EmailError {
        EmailError::Imap {
            server: self.url.to_string(),
            detail: format!("{what}: {detail}"),
        }
    }

    /// Takes the open session, connecting first if there is none. Give it back with
    /// [`Imap::give_back`] after one command.
    async fn take(&mut self) -> Result<Session, EmailError> {
        match self.session.take() {
            Some(s) => Ok(s),
            None => self.connect().await,
        }
    }

    /// Ends one command run on a session from [`Imap::take`] with a time limit: keeps the
    /// session unless the connection broke (the next command then reconnects).
    fn give_back<T>(
        &mut self,
        session: Session,
        what: &str,
        result: Result<async_imap::error::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, EmailError> {
        match result {
            Ok(Ok(v)) => {
                self.session = Some(session);
                Ok(v)
            }
            Ok(Err(e)) => {
                let refused = matches!(
                    e,
                    async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)
                );
                let hint = if refused {
                    self.session = Some(session);
                    "the server refused"
                } else {
                    "the connection failed; ferry tries again on the next run"
                };
                Err(self.err(what, format!("{e} ({hint})")))
            }
            Err(_) => Err(self.err(
                what,
                "no answer in time (is the network up?); ferry tries again on the next run",
            )),
        }
    }

    async fn tls_wrap(&self, tcp: TcpStream) -> Result<Conn, EmailError> {
        let name = ServerName::try_from(self.url.host.clone())
            .map_err(|e| self.err("bad host name for TLS", e))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| self.err("TLS handshake", "no answer in time"))?
        .map_err(|e| {
            self.err(
                "TLS handshake failed",
                format!("{e} (check the port and scheme: imaps:// is usually port 993, imap:// port 143)"),
            )
        })?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    async fn connect(&self) -> Result<Session, EmailError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.url.host.as_str(), self.url.port)),
        )
        .await
        .map_err(|_| self.err("cannot connect", "no answer in time (is the network up?)"))?
        .map_err(|e| self.err("cannot connect", format!("{e} (is the server reachable?)")))?;
        let conn = match self.url.security {
            Security::Tls => self.tls_wrap(tcp).await?,
            Security::StartTlsIfOffered | Security::Plain => Conn::Plain(tcp),
        };
        let mut client = async_imap::Client::new(conn);
        let greeting = tokio::time::timeout(CONNECT_TIMEOUT, client.read_response())
            .await
            .map_err(|_| self.err("no greeting", "the server said nothing in time"))?
            .map_err(|e| self.err("no greeting", e))?
            .ok_or_else(|| self.err("no greeting", "the server closed the connection"))?;
        if let Response::Data { status, .. } = greeting.parsed() {
            if !matches!(status, Status::Ok | Status::PreAuth) {
                let said = match status {
                    Status::Bye => "it said BYE",
                    Status::No => "it said NO",
                    Status::Bad => "it said BAD",
                    _ => "it did not greet",
                };
                return Err(self.err("the server refused the connection", said));
            }
        }
        if self.url.security == Security::StartTlsIfOffered {
            let (tx, rx) = async_channel::bounded::<UnsolicitedResponse>(64);
            client
                .run_command_and_check_ok("CAPABILITY", Some(tx))
                .await
                .map_err(|e| self.err("CAPABILITY", e))?;
            let mut starttls = false;
            while let Ok(r) = rx.try_recv() {
                if let UnsolicitedResponse::Other(data) = r {
                    if let Response::Capabilities(caps) = data.parsed() {
                        starttls |= caps.iter().any(
                            |c| matches!(c, CapRef::Atom(a) if a.eq_ignore_ascii_case("STARTTLS")),
                        );
                    }
                }
            }
            if starttls {
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|e| self.err("STARTTLS", e))?;
                let Conn::Plain(tcp) = client.into_inner() else {
                    unreachable!("STARTTLS starts from a plain connection")
                };
                client = async_imap::Client::new(self.tls_wrap(tcp).await?);
            }
        }
        let login = tokio::time::timeout(COMMAND_TIMEOUT, client.login(&self.user, &self.password))
            .await
            .map_err(|_| self.err("login", "no answer in time"))?;
        login.map_err(|(e, _)| {
            self.err(
                &format!("login as {} refused", self.user),
                format!("{e} (check imap_user and the password)"),
            )
        })
    }

    /// Selects `folder`; returns its UIDVALIDITY.
    async fn select(&mut self, folder: &str) -> Result<u32, EmailError> {
        let mut s = self.take().await?;
        let r = timeout(COMMAND_TIMEOUT, s.select(folder)).await;
        let mailbox = self.give_back(s, &format!("cannot open folder {folder}"), r)?;
        Ok(mailbox.uid_validity.unwrap_or(0))
    }

    /// UIDs above `after` in `folder`, ascending, and the folder's UIDVALIDITY. When the
    /// UIDVALIDITY is not `known_validity` (the mailbox was rebuilt, or is new to ferry),
    /// every message is new.
    pub(crate) async fn new_uids(
        &mut self,
        folder: &str,
        after: u32,
        known_validity: u32,
    ) -> Result<(u32, Vec<u32>), EmailError> {
        let validity = self.select(folder).await?;
        let after = if validity == known_validity { after } else { 0 };
        let mut s = self.take().await?;
        let query = format!("UID {}:*", after.saturating_add(1));
        let r = timeout(COMMAND_TIMEOUT, s.uid_search(&query)).await;
        let found = self.give_back(s, "cannot search for new mail", r)?;
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > after).collect();
        uids.sort_unstable();
        Ok((validity, uids))
    }

    /// A first look at messages of the selected folder, without downloading them: which may
    /// carry ferry data (`X-Ferry-*` headers, a `.ferry`/`.ferrypart` attachment, or a
    /// forwarded email inside).
    pub(crate) async fn glance(&mut self, uids: &[u32]) -> Result<Vec<Glance>, EmailError> {
        let mut out = Vec::new();
        for batch in uids.chunks(BATCH) {
            let set = uid_set(batch);
            let mut s = self.take().await?;
            let r = timeout(COMMAND_TIMEOUT, async {
                let stream = s
                    .uid_fetch(&set, "(UID BODYSTRUCTURE BODY.PEEK[HEADER])")
                    .await?;
                stream.try_collect::<Vec<Fetch>>().await
            })
            .await;
            let fetches = self.give_back(s, "cannot read message structure", r)?;
            for f in fetches {
                let Some(uid) = f.uid else { continue };
                let headed = f.header().is_some_and(has_ferry_header);
                let attached = f.bodystructure().is_some_and(may_carry_ferry);
                out.push(Glance {
                    uid,
                    candidate: headed || attached,
                });
            }
        }
        out.sort_by_key(|g| g.uid);
        out.dedup_by_key(|g| g.uid);
        Ok(out)
    }

    /// The whole message `uid` of the selected folder, if it still exists.
    pub(crate) async fn body(&mut self, uid: u32) -> Result<Option<Vec<u8>>, EmailError> {
        let mut s = self.take().await?;
        let r = timeout(COMMAND_TIMEOUT, async {
            let stream = s.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])").await?;
            stream.try_collect::<Vec<Fetch>>().await
        })
        .await;
        let fetches = self.give_back(s, "cannot download message", r)?;
        Ok(fetches
            .into_iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.body().map(<[u8]>::to_vec)))
    }

    /// The server's name for `folder` (levels separated by `/` in ferry's settings), created
    /// when missing.
    pub(crate) async fn ensure_folder(&mut self, folder: &str) -> Result<String, EmailError> {
        let mut s = self.take().await?;
        let r = timeout(COMMAND_TIMEOUT, async {
            // The pattern goes to the server as is: quote it ourselves.
            let stream = s.list(Some(""), Some("\"\"")).await?;
            stream.try_collect::<Vec<_>>().await
        })
        .await;
        let root = self.give_back(s, "cannot list folders", r)?;
        let delim = root
            .first()
            .and_then(|n| n.delimiter().map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let name = folder.replace('/', &delim);
        let mut s = self.take().await?;
        let pattern = format!("\"{name}\"");
        let r = timeout(COMMAND_TIMEOUT, async {
            let stream = s.list(Some(""), Some(&pattern)).await?;
            stream.try_collect::<Vec<_>>().await
        })
        .await;
        let exists = !self.give_back(s, "cannot list folders", r)?.is_empty();
        if !exists {
            let mut s = self.take().await?;
            let r = timeout(COMMAND_TIMEOUT, s.create(&name)).await;
            self.give_back(s, &format!("cannot create folder {name}"), r)?;
        }
        Ok(name)
    }

    /// Moves messages `uids` of `folder` (if its UIDVALIDITY is still `validity`) to `dest`
    /// (a server name from [`Imap::ensure_folder`]). Returns how many were moved.
    pub(crate) async fn move_messages(
        &mut self,
        folder: &str,
        validity: u32,
        uids: &[u32],
        dest: &str,
    ) -> Result<usize, EmailError> {
        if uids.is_empty() {
            return Ok(0);
        }
        if self.select(folder).await? != validity {
            // The mailbox was rebuilt; these UIDs now mean other messages. Leave them.
            return Ok(0);
        }
        let set = uid_set(uids);
        let what = format!("cannot move processed mail to {dest}");
        let mut s = self.take().await?;
        let r = timeout(COMMAND_TIMEOUT, s.capabilities()).await;
        let caps = self.give_back(s, "cannot read capabilities", r)?;
        if caps.has_str("MOVE") {
            let mut s = self.take().await?;
            let r = timeout(COMMAND_TIMEOUT, s.uid_mv(&set, dest)).await;
            self.give_back(s, &what, r)?;
        } else {
            let mut s = self.take().await?;
            let r = timeout(COMMAND_TIMEOUT, s.uid_copy(&set, dest)).await;
            self.give_back(s, &what, r)?;
            let mut s = self.take().await?;
            let r = timeout(COMMAND_TIMEOUT, async {
                let stream = s.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                stream.try_collect::<Vec<_>>().await
            })
            .await;
            self.give_back(s, &what, r)?;
            if caps.has_str("UIDPLUS") {
                // Only these messages: other mail marked deleted by someone else stays.
                let mut s = self.take().await?;
                let r = timeout(COMMAND_TIMEOUT, async {
                    let stream = s.uid_expunge(&set).await?;
                    stream.try_collect::<Vec<_>>().await
                })
                .await;
                self.give_back(s, &what, r)?;
            }
            // Without UIDPLUS the copies are marked deleted and left for the mail program
            // to expunge: a plain EXPUNGE would also remove other mail marked deleted.
        }
        Ok(uids.len())
    }

    /// Says goodbye to the server, if connected.
    pub(crate) async fn logout(&mut self) {
        if let Some(mut s) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s.logout()).await;
        }
    }
}

/// `1,2,5:9` for a sorted or unsorted list of UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

fn has_ferry_header(header: &[u8]) -> bool {
    header
        .split(|b| *b == b'\n')
        .any(|line| line.len() > 8 && line[..8].eq_ignore_ascii_case(b"x-ferry-"))
}

fn ferry_param(params: &imap_proto::BodyParams<'_>) -> bool {
    params.iter().flatten().any(|(k, v)| {
        let k = k.to_ascii_lowercase();
        let v = v.to_ascii_lowercase();
        (k.starts_with("name") || k.starts_with("filename"))
            && (v.ends_with(crate::mime::BUNDLE_SUFFIX) || v.ends_with(crate::mime::PART_SUFFIX))
    })
}

fn may_carry_ferry(b: &BodyStructure<'_>) -> bool {
    match b {
        BodyStructure::Basic { common, .. } | BodyStructure::Text { common, .. } => {
            ferry_param(&common.ty.params)
                || common
                    .disposition
                    .as_ref()
                    .is_some_and(|d| ferry_param(&d.params))
        }
        // A forwarded email may hold a bundle email: look inside it when it arrives.
        BodyStructure::Message { .. } => true,
        BodyStructure::Multipart { bodies, .. } => bodies.iter().any(may_carry_ferry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10]), "1:3,5,9:10");
        assert_eq!(uid_set(&[7]), "7");
    }

    #[test]
    fn ferry_headers_are_found_in_any_case() {
        assert!(has_ferry_header(
            b"Subject: x\r\nx-ferry-bundle: abc\r\n\r\n"
        ));
        assert!(!has_ferry_header(b"Subject: ferry\r\nX-Mailer: y\r\n\r\n"));
    }
}
