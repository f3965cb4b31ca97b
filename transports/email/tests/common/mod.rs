//! Real mail servers for the email transport's tests: Postfix (SMTP) delivering into
//! Maildirs for `example.test`, and Dovecot serving those Maildirs over IMAP, both on
//! 127.0.0.1 and free high ports, with their configuration, queue, logs and mail in a
//! temporary folder. Stopped by PID when dropped. Missing programs make the test fail.
#![allow(dead_code)]

use ferry_transport_email::{DatasetMarks, DatasetTag, EmailConfig, EmailTransport};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The dataset id every test uses.
pub const DATASET: &str = "0123456789abcdef0123456789abcdef";

/// The tag every test uses (a node derives its own from the dataset key).
pub fn tag() -> DatasetTag {
    DatasetTag::new([0x42; 32])
}

/// How the tests' transports know their dataset's emails.
pub fn marks() -> DatasetMarks {
    DatasetMarks {
        tag: tag(),
        legacy_id: DATASET.into(),
    }
}

/// How long to wait for a server to start or a message to be delivered before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct MailServers {
    dir: tempfile::TempDir,
    pub base: PathBuf,
    pub smtp_port: u16,
    pub imap_port: u16,
    /// With [`MailServers::start_tls`]: SMTP with TLS from the start (0 otherwise).
    pub smtps_port: u16,
    /// With [`MailServers::start_tls`]: IMAP with TLS from the start (0 otherwise).
    pub imaps_port: u16,
    /// With [`MailServers::start_tls`]: the test certificate authority (PEM).
    pub ca_file: PathBuf,
}

/// A certificate authority and a certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ferry test authority");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca_file, cert_file, key_file)
}

/// A mailbox: `user@example.test`, password `pw-user`, Maildir under the test folder.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub address: String,
    pub password: String,
    pub maildir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: the email tests need real Postfix and Dovecot. Run tests/run \
         as root, which installs the Debian packages postfix and dovecot-imapd (or: apt-get \
         install postfix dovecot-imapd)"
    );
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Starts a server that puts itself in the background. Its output goes nowhere (it logs to
/// the test folder): a daemon holding our pipes would keep `output()` waiting for ever.
fn start_daemon(cmd: &mut Command) -> std::process::ExitStatus {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn wait_until(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > PATIENCE {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{what} did not happen within {PATIENCE:?}; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn kill_and_wait(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl MailServers {
    /// Starts Postfix and Dovecot with mailboxes for `users` (see [`MailServers::account`]).
    pub fn start(users: &[&str]) -> MailServers {
        Self::start_with(users, &[])
    }

    /// Starts both servers with TLS (a test authority, [`MailServers::ca_file`]): STARTTLS
    /// offered on the plain ports, TLS from the start on `smtps_port` and `imaps_port`.
    /// Logins are required: Postfix accepts mail only from a logged-in sender (checked by
    /// Dovecot), and neither server accepts a password before TLS.
    pub fn start_tls(users: &[&str]) -> MailServers {
        Self::launch(users, &[], true)
    }

    /// Starts Postfix (with extra `main.cf` lines) and Dovecot with mailboxes for `users`.
    /// (Postfix reads its mailbox table at start, so every mailbox is made here.)
    pub fn start_with(users: &[&str], postfix_extra: &[&str]) -> MailServers {
        Self::launch(users, postfix_extra, false)
    }

    fn launch(users: &[&str], postfix_extra: &[&str], tls: bool) -> MailServers {
        let postfix = find_program("postfix");
        find_program("postconf");
        let dovecot = find_program("dovecot");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        // The mail servers' own users (postfix, nobody) must reach the folders inside.
        run(Command::new("chmod").arg("755").arg(&base));
        for d in ["pf", "spool", "data", "mail", "run", "state"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        run(Command::new("chown").arg("postfix").arg(base.join("data")));
        run(Command::new("chown")
            .arg("65534:65534")
            .arg(base.join("mail")));
        let smtp_port = free_port();
        let imap_port = free_port();
        let (smtps_port, imaps_port) = if tls {
            (free_port(), free_port())
        } else {
            (0, 0)
        };
        let (ca_file, cert_file, key_file) = if tls {
            make_certificates(&base.join("tls"))
        } else {
            Default::default()
        };
        let b = base.display();
        let mut main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {b}/spool
data_directory = {b}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
alias_maps =
alias_database =
smtputf8_enable = no
biff = no
virtual_mailbox_domains = example.test
virtual_mailbox_base = {b}/mail
virtual_mailbox_maps = texthash:{b}/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
maillog_file = {b}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {b}
"
        );
        if tls {
            main_cf.push_str(&format!(
                "smtpd_tls_cert_file = {}
smtpd_tls_key_file = {}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
",
                cert_file.display(),
                key_file.display()
            ));
        }
        for line in postfix_extra {
            main_cf.push_str(line);
            main_cf.push('\n');
        }
        std::fs::write(base.join("pf/main.cf"), main_cf).unwrap();
        std::fs::copy("/etc/postfix/master.cf", base.join("pf/master.cf"))
            .expect("/etc/postfix/master.cf (installed by the postfix package)");
        let vmailbox: String = users
            .iter()
            .map(|u| format!("{u}@example.test {u}/Maildir/\n"))
            .collect();
        std::fs::write(base.join("vmailbox"), vmailbox).unwrap();
        let pf = base.join("pf");
        let smtps = format!(
            "127.0.0.1:{smtps_port}/inet=127.0.0.1:{smtps_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes"
        );
        if tls {
            let out = run(Command::new("postconf")
                .arg("-c")
                .arg(&pf)
                .args(["-M", &smtps]));
            assert!(out.status.success(), "postconf smtps: {out:?}");
        }
        for args in [
            vec!["-M#", "smtp/inet"],
            vec![
                "-M",
                &format!("127.0.0.1:{smtp_port}/inet=127.0.0.1:{smtp_port} inet n - n - - smtpd"),
            ],
            vec!["-F", "*/*/chroot = n"],
        ] {
            let out = run(Command::new("postconf").arg("-c").arg(&pf).args(&args));
            assert!(out.status.success(), "postconf {args:?}: {out:?}");
        }
        let mut passwd = String::new();
        for u in users {
            let home = base.join("mail").join(u);
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(home.join("Maildir").join(sub)).unwrap();
            }
            passwd.push_str(&format!(
                "{u}:{{PLAIN}}pw-{u}:65534:65534::{}\n",
                home.display()
            ));
        }
        run(Command::new("chown")
            .arg("-R")
            .arg("65534:65534")
            .arg(base.join("mail")));
        std::fs::write(base.join("users"), passwd).unwrap();
        let ssl = if tls {
            format!(
                "ssl = yes
ssl_cert = <{}
ssl_key = <{}
disable_plaintext_auth = yes
service auth {{
  unix_listener {b}/spool/private/auth {{
    mode = 0666
  }}
}}",
                cert_file.display(),
                key_file.display()
            )
        } else {
            "ssl = no\ndisable_plaintext_auth = no".to_string()
        };
        std::fs::write(
            base.join("dovecot.conf"),
            format!(
                "protocols = imap
listen = 127.0.0.1
base_dir = {b}/run
state_dir = {b}/state
log_path = {b}/dovecot.log
{ssl}
auth_mechanisms = plain login
mail_location = maildir:{b}/mail/%n/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {b}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {b}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
"
            ),
        )
        .unwrap();
        let servers = MailServers {
            dir,
            base,
            smtp_port,
            imap_port,
            smtps_port,
            imaps_port,
            ca_file,
        };
        servers.start_smtp_with(&postfix);
        let status = start_daemon(
            Command::new(&dovecot)
                .arg("-c")
                .arg(servers.base.join("dovecot.conf")),
        );
        let log = std::fs::read_to_string(servers.base.join("dovecot.log")).unwrap_or_default();
        assert!(status.success(), "dovecot did not start ({status}):\n{log}");
        wait_until(
            "Dovecot listening",
            &servers.base.join("dovecot.log"),
            || accepts(imap_port) && (imaps_port == 0 || accepts(imaps_port)),
        );
        servers
    }

    fn start_smtp_with(&self, postfix: &Path) {
        let status = start_daemon(
            Command::new(postfix)
                .arg("-c")
                .arg(self.base.join("pf"))
                .arg("start"),
        );
        let log = std::fs::read_to_string(self.base.join("postfix.log")).unwrap_or_default();
        assert!(status.success(), "postfix did not start ({status}):\n{log}");
        wait_until("Postfix listening", &self.base.join("postfix.log"), || {
            accepts(self.smtp_port) && (self.smtps_port == 0 || accepts(self.smtps_port))
        });
    }

    /// Starts Postfix again after [`MailServers::stop_smtp`].
    pub fn start_smtp(&self) {
        self.start_smtp_with(&find_program("postfix"));
    }

    fn postfix_pid(&self) -> Option<u32> {
        read_pid(&self.base.join("spool/pid/master.pid"))
    }

    /// Stops Postfix (by its master's PID) and waits until it no longer accepts mail.
    pub fn stop_smtp(&self) {
        if let Some(pid) = self.postfix_pid() {
            kill_and_wait(pid);
        }
        wait_until("Postfix stopped", &self.base.join("postfix.log"), || {
            !accepts(self.smtp_port)
        });
        let _ = std::fs::remove_file(self.base.join("spool/pid/master.pid"));
    }

    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    pub fn imap_url(&self) -> String {
        format!("imap://127.0.0.1:{}", self.imap_port)
    }

    /// The mailbox of `user` (one of those given to [`MailServers::start`]).
    pub fn account(&self, user: &str) -> Account {
        let maildir = self.base.join("mail").join(user).join("Maildir");
        assert!(
            maildir.is_dir(),
            "no mailbox {user}: list it in MailServers::start"
        );
        Account {
            user: user.into(),
            address: format!("{user}@example.test"),
            password: format!("pw-{user}"),
            maildir,
        }
    }

    /// A fresh state folder.
    pub fn state(&self, name: &str) -> PathBuf {
        let p = self.base.join("state-folders").join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Settings for sending from `from` through this Postfix.
    pub fn sender_config(&self, from: &Account) -> EmailConfig {
        EmailConfig {
            from: Some(from.address.clone()),
            smtp_url: Some(self.smtp_url()),
            ..Default::default()
        }
    }

    /// Settings for receiving `acct`'s mail over IMAP.
    pub fn imap_config(&self, acct: &Account) -> EmailConfig {
        EmailConfig {
            from: Some(acct.address.clone()),
            smtp_url: Some(self.smtp_url()),
            imap_url: Some(self.imap_url()),
            imap_user: Some(acct.user.clone()),
            imap_password: Some(acct.password.clone()),
            ..Default::default()
        }
    }

    /// A transport sending from `from` to `to`, emails of at most `max` bytes.
    pub fn sender(&self, from: &Account, to: &[&Account], max: u64, state: &str) -> EmailTransport {
        let cfg = EmailConfig {
            max_message_bytes: Some(max),
            ..self.sender_config(from)
        };
        let mut t = EmailTransport::new(cfg, marks(), self.state(state)).unwrap();
        let to: Vec<&str> = to.iter().map(|a| a.address.as_str()).collect();
        t.set_recipients(&to).unwrap();
        t
    }

    /// A transport receiving `acct`'s mail over IMAP.
    pub fn imap_receiver(&self, acct: &Account, state: &str) -> EmailTransport {
        EmailTransport::new(self.imap_config(acct), marks(), self.state(state)).unwrap()
    }

    /// Waits until `acct` holds at least `n` messages in all its folders together.
    pub fn wait_for_mail(&self, acct: &Account, n: usize) {
        wait_until(
            &format!("delivery of {n} message(s) to {}", acct.address),
            &self.base.join("postfix.log"),
            || count_messages(&acct.maildir) >= n,
        );
    }

    /// Hands a raw email to Postfix over SMTP, as any mail program would.
    pub fn inject(&self, from: &str, to: &str, raw: &[u8]) {
        smtp_send(self.smtp_port, from, to, raw);
    }
}

impl Drop for MailServers {
    fn drop(&mut self) {
        if let Some(pid) = self.postfix_pid() {
            kill_and_wait(pid);
        }
        if let Some(pid) = read_pid(&self.base.join("run/master.pid")) {
            kill_and_wait(pid);
        }
        let _ = &self.dir;
    }
}

/// Message files in a Maildir's `new/` and `cur/`.
pub fn files_in(folder: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(folder.join(sub)) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}

/// Messages in a Maildir and all its Maildir++ subfolders.
pub fn count_messages(maildir: &Path) -> usize {
    let mut n = files_in(maildir).len();
    if let Ok(rd) = std::fs::read_dir(maildir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                n += files_in(&e.path()).len();
            }
        }
    }
    n
}

fn expect(reader: &mut BufReader<TcpStream>, code: &str) {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(code),
            "SMTP: expected {code}, got {line:?}"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            return;
        }
    }
}

/// A minimal SMTP client: sends `raw` as is (dot-stuffed, CRLF line ends).
pub fn smtp_send(port: u16, from: &str, to: &str, raw: &[u8]) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    expect(&mut r, "220");
    w.write_all(b"EHLO test.example.test\r\n").unwrap();
    expect(&mut r, "250");
    w.write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .unwrap();
    expect(&mut r, "250");
    w.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())
        .unwrap();
    expect(&mut r, "250");
    w.write_all(b"DATA\r\n").unwrap();
    expect(&mut r, "354");
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let mut data = Vec::new();
    for line in text.split('\n') {
        if line.starts_with('.') {
            data.push(b'.');
        }
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    w.write_all(&data).unwrap();
    expect(&mut r, "250");
    w.write_all(b"QUIT\r\n").unwrap();
}

/// Standard base64 (RFC 4648) in lines of 76 characters, as MIME wants it.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An email with `headers` (`Name: value` lines) and these attachments (file name, bytes),
/// as any mail program writes one.
pub fn email_with(
    from: &str,
    to: &str,
    headers: &[String],
    attachments: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str("Content-Type: multipart/mixed; boundary=\"=-ferry-test-=\"\r\n\r\n");
    m.push_str(
        "--=-ferry-test-=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n",
    );
    for (name, data) in attachments {
        m.push_str(&format!(
            "--=-ferry-test-=\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(data)
        ));
    }
    m.push_str("--=-ferry-test-=--\r\n");
    m.into_bytes()
}

/// Which part of a bundle an email of an earlier ferry carries.
pub struct LegacyPart {
    pub part: u32,
    pub parts: u32,
    pub offset: u64,
    /// The whole bundle's size and BLAKE3 digest (hex).
    pub size: u64,
    pub digest: String,
}

/// An email as ferry wrote it before marks existed (up to commit 203b295): the dataset id
/// in clear in `X-Ferry-Dataset` and in the subject, and a `dataset:` line in a part header.
/// `part`: `None` for a whole bundle, else which part `data` is.
pub fn legacy_email(
    from: &str,
    to: &str,
    dataset: &str,
    name: &str,
    data: &[u8],
    part: Option<LegacyPart>,
) -> Vec<u8> {
    let hex = |d: &[u8]| blake3::hash(d).to_hex().to_string();
    let whole = LegacyPart {
        part: 1,
        parts: 1,
        offset: 0,
        size: data.len() as u64,
        digest: hex(data),
    };
    let p = part.unwrap_or(whole);
    let (file, content) = if p.parts == 1 {
        (format!("{name}.ferry"), data.to_vec())
    } else {
        let mut c = format!(
            "ferry-part/1\nbundle: {name}\ndataset: {dataset}\npart: {}/{}\noffset: {}\nlength: {}\nsize: {}\ndigest: blake3:{}\npart-digest: blake3:{}\n\n",
            p.part,
            p.parts,
            p.offset,
            data.len(),
            p.size,
            p.digest,
            hex(data)
        )
        .into_bytes();
        c.extend_from_slice(data);
        (
            format!("{name}.part-{}-of-{}.ferrypart", p.part, p.parts),
            c,
        )
    };
    let headers = vec![
        format!("Subject: ferry bundle {name} (dataset {})", &dataset[..8]),
        "X-Ferry-Version: 1".to_string(),
        format!("X-Ferry-Dataset: {dataset}"),
        format!("X-Ferry-Bundle: {name}"),
        format!("X-Ferry-Part: {}/{}", p.part, p.parts),
        format!("X-Ferry-Size: {}", p.size),
        format!("X-Ferry-Digest: blake3:{}", p.digest),
    ];
    email_with(from, to, &headers, &[(&file, &content)])
}
