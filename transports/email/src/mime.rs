//! The email framing of a bundle: how a bundle (or one part of it) is wrapped in an email,
//! and how bundles are found again in a received email, a saved `.eml` file or a saved
//! attachment.
//!
//! An email carries one attachment. When a bundle fits in one email the attachment *is* the
//! bundle (`<name>.ferry`), so a person can save it and import it like any bundle file.
//! A larger bundle is split into parts; each part's attachment (`<name>.part-I-of-N.ferrypart`)
//! starts with a short text header ([`PART_MAGIC`], then `key: value` lines, then an empty
//! line) that says which bytes of which bundle it holds, with BLAKE3 digests of the part and
//! of the whole bundle, so parts can be put back together in any order, from any mix of
//! emails and saved files. The `X-Ferry-*` headers of the email repeat the essentials so a
//! mail filter can sort bundle emails into a folder.
//!
//! **Recognition without the dataset id.** No email names its dataset. Each carries a
//! *mark* instead (`X-Ferry-Tag`, and `tag:` in a part header): a 128-bit BLAKE3 MAC, keyed
//! with the dataset's [`DatasetTag`], over what the piece claims to be ([`Claim`]: bundle
//! name, digest and size, part number, byte range and the part's own digest). Only members
//! can compute the tag (the node derives it from the dataset key), so only a member can make
//! a mark that verifies, and a mark copied from one email does not fit any other piece.
//! Emails written before marks existed name their dataset in `X-Ferry-Dataset` (and
//! `dataset:` in a part header); they are still read, as unverified pieces.
//!
//! Only this framing is checked here. The bundle inside stays opaque: whether it is genuine
//! is for the node to decide.

use crate::error::EmailError;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use mail_parser::{MessageParser, MimeHeaders};

/// First line of a part's attachment.
pub const PART_MAGIC: &[u8] = b"ferry-part/1\n";
/// Framing version in [`HEADER_VERSION`].
pub const VERSION: &str = "1";
/// Header: framing version (`1`).
pub const HEADER_VERSION: &str = "X-Ferry-Version";
/// Header: the mark only members can make ([`DatasetTag::mark`]), in hex.
pub const HEADER_TAG: &str = "X-Ferry-Tag";
/// Header of emails written by earlier versions of ferry: the dataset id in clear. Read (an
/// email that names another dataset is left alone), never written.
pub const HEADER_DATASET: &str = "X-Ferry-Dataset";
/// Header: the bundle's content name.
pub const HEADER_BUNDLE: &str = "X-Ferry-Bundle";
/// Header: `I/N`, this email's part number and the number of parts.
pub const HEADER_PART: &str = "X-Ferry-Part";
/// Header: the whole bundle's size in bytes.
pub const HEADER_SIZE: &str = "X-Ferry-Size";
/// Header: `blake3:<hex>` of the whole bundle.
pub const HEADER_DIGEST: &str = "X-Ferry-Digest";
/// File-name suffix of a whole bundle.
pub const BUNDLE_SUFFIX: &str = ".ferry";
/// File-name suffix of one part of a bundle.
pub const PART_SUFFIX: &str = ".ferrypart";
/// Longest content name kept (longer names are cut).
pub const MAX_NAME: usize = 128;
/// Most ferry attachments taken from one email (a ferry email carries one; a person may
/// forward a few together). An email with more is refused as a whole, without reading them.
pub const MAX_PIECES_PER_EMAIL: usize = 8;
/// Most MIME boundary lines an email may have to be read in full (a ferry email has three;
/// one with more is not parsed, and if it claims ferry data it is refused whole).
pub const MAX_MIME_PARTS: usize = 256;
/// Most characters of a string from an email (a subject, a header value, a header line)
/// kept in a location or a reason; longer ones are cut.
pub const MAX_QUOTED: usize = 80;
/// Largest part header accepted.
const MAX_PART_HEADER: usize = 4096;
/// How deep forwarded emails (an email attached to an email) are searched.
const MAX_NESTING: usize = 4;
/// Bytes of a mark (a truncated BLAKE3 MAC): 128 bits.
const MARK_BYTES: usize = 16;
/// Domain separation of marks.
const MARK_CONTEXT: &[u8] = b"ferry email mark v1\0";

/// The secret by which a dataset's emails are recognised: 32 bytes that the node derives
/// from the dataset key with BLAKE3 keyed hashing and hands to the transport. It marks
/// outgoing pieces and checks incoming ones; it is never sent, cannot be turned back into the
/// dataset key, and opens nothing (bundles stay sealed and signed under the dataset's own
/// keys). Its `Debug` output hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatasetTag([u8; 32]);

impl DatasetTag {
    /// The tag from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> DatasetTag {
        DatasetTag(bytes)
    }

    /// The mark of a piece that claims `claim`: BLAKE3 keyed with this tag over the claim,
    /// cut to 128 bits, in hex.
    pub fn mark(&self, claim: &Claim) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(MARK_CONTEXT);
        h.update(&(claim.name.len() as u64).to_le_bytes());
        h.update(claim.name.as_bytes());
        h.update(claim.digest.as_bytes());
        h.update(&claim.size.to_le_bytes());
        h.update(&claim.part.to_le_bytes());
        h.update(&claim.parts.to_le_bytes());
        h.update(&claim.offset.to_le_bytes());
        h.update(&claim.length.to_le_bytes());
        h.update(claim.part_digest.as_bytes());
        h.finalize().to_hex()[..2 * MARK_BYTES].to_string()
    }

    /// Whether `mark` is this tag's mark of `claim` (compared in constant time).
    pub fn verifies(&self, claim: &Claim, mark: &str) -> bool {
        let want = self.mark(claim);
        let got = mark.trim().to_ascii_lowercase();
        want.len() == got.len()
            && want
                .bytes()
                .zip(got.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for DatasetTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatasetTag(<hidden>)")
    }
}

/// What a piece says it is: the bundle (name, BLAKE3 digest in hex, size), which part, which
/// bytes, and the BLAKE3 digest (hex) of those bytes. A mark covers all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The bundle's content name.
    pub name: String,
    /// BLAKE3 of the whole bundle (hex).
    pub digest: String,
    /// Size of the whole bundle.
    pub size: u64,
    /// Part number, from 1.
    pub part: u32,
    /// Number of parts.
    pub parts: u32,
    /// Where the bytes start in the bundle.
    pub offset: u64,
    /// How many bytes.
    pub length: u64,
    /// BLAKE3 of those bytes (hex).
    pub part_digest: String,
}

/// One bundle, or one part of one, found in an email or a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Piece {
    /// The bundle's content name (without `.ferry`).
    pub name: String,
    /// The mark it carries ([`HEADER_TAG`], or `tag:` in a part header), if any.
    pub tag: Option<String>,
    /// The dataset an email of an earlier ferry says it belongs to (hex), if it says.
    pub dataset: Option<String>,
    /// The address in the `From:` of the email that carried it (as the email says: anyone
    /// can write any address there).
    pub sender: Option<String>,
    /// Part number, from 1.
    pub part: u32,
    /// Number of parts.
    pub parts: u32,
    /// Where `data` starts in the bundle.
    pub offset: u64,
    /// Size of the whole bundle.
    pub size: u64,
    /// BLAKE3 of the whole bundle (hex), when the sender said; a bundle attached by hand has
    /// none.
    pub digest: Option<String>,
    /// BLAKE3 of `data` (hex), when the framing stated it and it was checked (so it need not
    /// be computed again).
    pub part_digest: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("name", &self.name)
            .field("tag", &self.tag)
            .field("dataset", &self.dataset)
            .field("sender", &self.sender)
            .field("part", &format_args!("{}/{}", self.part, self.parts))
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("digest", &self.digest)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl Piece {
    /// Whether this piece is the whole bundle.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.data.len() as u64 == self.size
    }

    /// What this piece says it is (its digests computed where the sender gave none).
    pub fn claim(&self) -> Claim {
        let part_digest = self
            .part_digest
            .clone()
            .unwrap_or_else(|| digest_hex(&self.data));
        Claim {
            name: self.name.clone(),
            digest: self.digest.clone().unwrap_or_else(|| part_digest.clone()),
            size: self.size,
            part: self.part,
            parts: self.parts,
            offset: self.offset,
            length: self.data.len() as u64,
            part_digest,
        }
    }
}

/// An attachment that claims to carry ferry data but whose framing is broken (cut short,
/// altered, badly encoded). Its bytes are kept so the node can quarantine them.
#[derive(Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The attachment's file name, when it has one (as the email says, cut to
    /// [`MAX_QUOTED`] characters).
    pub file_name: Option<String>,
    /// The dataset an email of an earlier ferry says it is for, when it says.
    pub dataset: Option<String>,
    /// The mark it carries, if any.
    pub tag: Option<String>,
    /// What it claimed to be, when that much could be read (to check its mark).
    pub claim: Option<Claim>,
    /// What is wrong, in one line.
    pub reason: String,
    /// The attachment's bytes as received (after base64 decoding).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Damaged")
            .field("file_name", &self.file_name)
            .field("dataset", &self.dataset)
            .field("tag", &self.tag)
            .field("claim", &self.claim)
            .field("reason", &self.reason)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// What [`extract_email`] or [`extract_file`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Bundles and parts of bundles.
    pub pieces: Vec<Piece>,
    /// Attachments that claim to be ferry data but are broken.
    pub damaged: Vec<Damaged>,
    /// The email's subject (of the outermost email), cut to [`MAX_QUOTED`] characters, for
    /// messages to a person.
    pub subject: Option<String>,
    /// The address in the outermost email's `From:`.
    pub from: Option<String>,
    /// Ferry attachments beyond [`MAX_PIECES_PER_EMAIL`], not read (or, for an email of more
    /// than [`MAX_MIME_PARTS`] parts that claims ferry data, its MIME boundary lines): an
    /// email with any is refused as a whole.
    pub excess: usize,
}

impl Extracted {
    /// Whether anything ferry-related was found (good or broken).
    pub fn is_ferry(&self) -> bool {
        !self.pieces.is_empty() || !self.damaged.is_empty() || self.excess > 0
    }
}

/// A string from an email made short enough to quote: cut to [`MAX_QUOTED`] characters,
/// with `…` when cut. (Control characters stay; whoever prints it escapes them.)
pub fn quoted(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_QUOTED).collect();
    if s.chars().nth(MAX_QUOTED).is_some() {
        out.push('…');
    }
    out
}

/// What kind of file a saved file is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A saved email (`.eml`): headers, then a body.
    Email,
    /// A saved part attachment of a split bundle.
    Part,
    /// Anything else: taken as a whole bundle file.
    Other,
}

/// Tells a saved email or part from a bundle file by its first bytes (a few hundred are
/// enough). Bundle files are binary and never look like either.
pub fn classify(head: &[u8]) -> FileKind {
    if head.starts_with(PART_MAGIC) {
        return FileKind::Part;
    }
    // An email starts with header lines (`Name: value`, the name printable ASCII), or with
    // an mbox `From ` line; check two lines so a binary file that happens to start with
    // `x:` is not taken for an email.
    let mut lines = head.split(|b| *b == b'\n');
    let (Some(first), Some(second)) = (lines.next(), lines.next()) else {
        return FileKind::Other;
    };
    let text = |line: &[u8]| {
        line.iter()
            .all(|b| *b == b'\r' || *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
    };
    let header = |line: &[u8]| {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return false;
        };
        colon > 0 && line[..colon].iter().all(|b| b.is_ascii_graphic()) && text(line)
    };
    let second_ok = header(second)
        || (text(second) && second.starts_with(b" "))
        || (text(second) && second.starts_with(b"\t"));
    if (header(first) || (first.starts_with(b"From ") && text(first))) && second_ok {
        return FileKind::Email;
    }
    FileKind::Other
}

/// Finds the bundles and parts carried by a saved file: a `.eml` email, a saved part
/// attachment, or a bare bundle file (taken whole, named after `file_name`). Never fails:
/// what cannot be understood is reported in [`Extracted::damaged`].
pub fn extract_file(bytes: &[u8], file_name: &str) -> Extracted {
    match classify(bytes) {
        FileKind::Email => extract_email(bytes),
        FileKind::Part => {
            let mut out = Extracted::default();
            match parse_part(bytes, None) {
                Ok(p) => out.pieces.push(p),
                Err(e) => {
                    let (reason, claim, tag, dataset) = *e;
                    out.damaged.push(Damaged {
                        file_name: Some(quoted(file_name)),
                        dataset,
                        tag,
                        claim,
                        reason,
                        data: bytes.to_vec(),
                    });
                }
            }
            out
        }
        FileKind::Other => {
            let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
            let name = base.strip_suffix(BUNDLE_SUFFIX).unwrap_or(base);
            Extracted {
                pieces: vec![Piece {
                    name: sanitize_name(name),
                    tag: None,
                    dataset: None,
                    sender: None,
                    part: 1,
                    parts: 1,
                    offset: 0,
                    size: bytes.len() as u64,
                    digest: None,
                    part_digest: None,
                    data: bytes.to_vec(),
                }],
                ..Extracted::default()
            }
        }
    }
}

/// Finds the bundles and parts carried by one raw email (RFC 5322 bytes), including emails
/// forwarded as attachments. Never fails: an email that is not ferry mail gives an empty
/// result, and broken ferry attachments are reported in [`Extracted::damaged`]. At most
/// [`MAX_PIECES_PER_EMAIL`] attachments are read; the rest are only counted
/// ([`Extracted::excess`]).
pub fn extract_email(raw: &[u8]) -> Extracted {
    let mut out = Extracted::default();
    // An email of thousands of MIME parts would cost a parser hundreds of megabytes: count
    // its boundary lines first, and read only the headers of one with too many.
    let parts = raw
        .split(|b| *b == b'\n')
        .filter(|line| line.starts_with(b"--"))
        .count();
    if parts > MAX_MIME_PARTS {
        let Some(msg) = MessageParser::default().parse_headers(raw) else {
            return out;
        };
        let ferryish = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
        if ferryish(BUNDLE_SUFFIX.as_bytes()) || ferryish(PART_MAGIC) || ferryish(b"X-Ferry-") {
            out.subject = msg.subject().map(quoted);
            out.from = sender_of(&msg);
            out.excess = parts;
        }
        return out;
    }
    let Some(msg) = MessageParser::default().parse(raw) else {
        return out;
    };
    out.subject = msg.subject().map(quoted);
    out.from = sender_of(&msg);
    walk(&msg, 0, &mut out);
    out
}

/// The bare address in an email's `From:`, lowercased and cut.
fn sender_of(msg: &mail_parser::Message<'_>) -> Option<String> {
    let addr = msg.from()?.first()?.address()?;
    Some(quoted(&addr.trim().to_ascii_lowercase()))
}

fn header(msg: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    msg.header_raw(name).map(|v| v.trim().to_string())
}

fn is_ferry_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(BUNDLE_SUFFIX) || lower.ends_with(PART_SUFFIX)
}

/// Room for one more piece in `out`; counts it as excess when there is none.
fn room(out: &mut Extracted) -> bool {
    if out.pieces.len() + out.damaged.len() < MAX_PIECES_PER_EMAIL {
        true
    } else {
        out.excess += 1;
        false
    }
}

fn walk(msg: &mail_parser::Message<'_>, depth: usize, out: &mut Extracted) {
    let headed = header(msg, HEADER_BUNDLE).is_some() || header(msg, HEADER_VERSION).is_some();
    let sender = sender_of(msg);
    let email_tag = header(msg, HEADER_TAG).map(|t| quoted(&t));
    let email_dataset = header(msg, HEADER_DATASET).map(|d| quoted(&d));
    let mut attachments: Vec<&mail_parser::MessagePart<'_>> = Vec::new();
    let mut others = 0usize;
    for part in msg.attachments() {
        if let Some(inner) = part.message() {
            if depth < MAX_NESTING {
                walk(inner, depth + 1, out);
            }
            continue;
        }
        let named = part.attachment_name().is_some_and(is_ferry_file_name);
        if named || part.contents().starts_with(PART_MAGIC) {
            attachments.push(part);
        } else {
            others += 1;
        }
    }
    if headed && attachments.is_empty() {
        // A mail gateway may have renamed the attachment; with ferry headers and one
        // attachment, that attachment is ours.
        let all: Vec<_> = msg
            .attachments()
            .filter(|p| p.message().is_none())
            .collect();
        if all.len() == 1 {
            attachments = all;
        } else if others == 0 {
            if room(out) {
                out.damaged.push(Damaged {
                    file_name: None,
                    dataset: email_dataset,
                    tag: email_tag.clone(),
                    claim: claim_from_headers(msg, None),
                    reason: "email has ferry headers but no attachment (removed by a mail filter?)"
                        .into(),
                    data: Vec::new(),
                });
            }
            return;
        }
    }
    for part in attachments {
        if !room(out) {
            continue;
        }
        let file_name = part.attachment_name().map(quoted);
        let data = part.contents();
        let damaged = |reason: String, claim: Option<Claim>| Damaged {
            file_name: file_name.clone(),
            dataset: email_dataset.clone(),
            tag: email_tag.clone(),
            claim,
            reason,
            data: data.to_vec(),
        };
        if part.is_encoding_problem {
            out.damaged.push(damaged(
                "the attachment's encoding is broken (cut short or altered in transit)".into(),
                if data.starts_with(PART_MAGIC) {
                    None
                } else {
                    claim_from_headers(msg, None)
                },
            ));
            continue;
        }
        if data.starts_with(PART_MAGIC) {
            match parse_part(data, email_tag.as_deref()) {
                Ok(mut p) => {
                    p.sender = sender.clone();
                    if p.dataset.is_none() {
                        p.dataset = email_dataset.clone();
                    }
                    out.pieces.push(p);
                }
                Err(e) => {
                    let (reason, claim, tag, dataset) = *e;
                    let mut d = damaged(reason, claim);
                    d.tag = tag.or(d.tag);
                    d.dataset = dataset.or(d.dataset);
                    out.damaged.push(d);
                }
            }
            continue;
        }
        if headed {
            match whole_from_headers(msg, data) {
                Ok(mut p) => {
                    p.sender = sender.clone();
                    out.pieces.push(p);
                }
                Err(reason) => {
                    let claim = claim_from_headers(msg, None);
                    out.damaged.push(damaged(reason, claim));
                }
            }
        } else {
            // A bundle attached by hand (from webmail, say): nothing to check it against.
            let name = file_name.as_deref().unwrap_or("attachment");
            let name = strip_suffix_ci(name, BUNDLE_SUFFIX);
            out.pieces.push(Piece {
                name: sanitize_name(name),
                tag: None,
                dataset: None,
                sender: sender.clone(),
                part: 1,
                parts: 1,
                offset: 0,
                size: data.len() as u64,
                digest: None,
                part_digest: None,
                data: data.to_vec(),
            });
        }
    }
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> &'a str {
    if s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    {
        &s[..s.len() - suffix.len()]
    } else {
        s
    }
}

/// What a whole-bundle email claims in its headers (name, digest, size), if they say.
fn claim_from_headers(msg: &mail_parser::Message<'_>, data: Option<&[u8]>) -> Option<Claim> {
    let name = sanitize_name(&header(msg, HEADER_BUNDLE)?);
    let digest = parse_digest(&header(msg, HEADER_DIGEST)?).ok()?;
    let size: u64 = match header(msg, HEADER_SIZE) {
        Some(s) => s.parse().ok()?,
        None => data?.len() as u64,
    };
    Some(Claim {
        name,
        part_digest: digest.clone(),
        digest,
        size,
        part: 1,
        parts: 1,
        offset: 0,
        length: size,
    })
}

/// A whole bundle described by the email's `X-Ferry-*` headers, checked against them.
fn whole_from_headers(msg: &mail_parser::Message<'_>, data: &[u8]) -> Result<Piece, String> {
    let version = header(msg, HEADER_VERSION).unwrap_or_else(|| VERSION.into());
    if version != VERSION {
        return Err(format!(
            "framing version `{}` is not understood; update ferry on this laptop",
            quoted(&version)
        ));
    }
    let name = header(msg, HEADER_BUNDLE).ok_or("the X-Ferry-Bundle header is missing")?;
    if let Some(part) = header(msg, HEADER_PART) {
        if part != "1/1" {
            return Err(format!(
                "email says it is part `{}` but its attachment has no part header",
                quoted(&part)
            ));
        }
    }
    let size = header(msg, HEADER_SIZE);
    if let Some(size) = size {
        let size: u64 = size
            .parse()
            .map_err(|_| format!("bad X-Ferry-Size `{}`", quoted(&size)))?;
        if size != data.len() as u64 {
            return Err(format!(
                "attachment is {} bytes but the email says {size} (cut short or altered)",
                data.len()
            ));
        }
    }
    let digest = match header(msg, HEADER_DIGEST) {
        Some(d) => {
            let d = parse_digest(&d)?;
            if digest_hex(data) != d {
                return Err(
                    "attachment does not match its digest (altered or damaged in transit)".into(),
                );
            }
            Some(d)
        }
        None => None,
    };
    Ok(Piece {
        name: sanitize_name(&name),
        tag: header(msg, HEADER_TAG).map(|t| quoted(&t)),
        dataset: header(msg, HEADER_DATASET).map(|d| quoted(&d)),
        sender: None,
        part: 1,
        parts: 1,
        offset: 0,
        size: data.len() as u64,
        part_digest: digest.clone(),
        digest,
        data: data.to_vec(),
    })
}

fn parse_digest(s: &str) -> Result<String, String> {
    let hex = s
        .strip_prefix("blake3:")
        .ok_or_else(|| format!("unknown digest `{}`", quoted(s)))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("malformed digest `{}`", quoted(s)));
    }
    Ok(hex.to_ascii_lowercase())
}

/// BLAKE3 of `data`, in lowercase hex.
pub(crate) fn digest_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Why a part attachment was not taken: the reason, what it claimed (when its header could
/// be read), and its mark and dataset (when it had them).
type PartError = Box<(String, Option<Claim>, Option<String>, Option<String>)>;

/// Reads a part attachment: the header after [`PART_MAGIC`], then the bytes. `email_tag` is
/// the email's own mark, used when the part header has none.
fn parse_part(data: &[u8], email_tag: Option<&str>) -> Result<Piece, PartError> {
    let fail = |r: String| -> PartError { Box::new((r, None, None, None)) };
    let rest = &data[PART_MAGIC.len()..];
    let end = rest
        .windows(2)
        .take(MAX_PART_HEADER)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| fail("part header is not terminated (cut short?)".into()))?;
    let head =
        std::str::from_utf8(&rest[..end]).map_err(|_| fail("part header is not text".into()))?;
    let body = &rest[end + 2..];
    let mut fields = std::collections::BTreeMap::new();
    for line in head.lines() {
        let (k, v) = line
            .split_once(": ")
            .ok_or_else(|| fail(format!("bad part header line `{}`", quoted(line))))?;
        fields.insert(k, v);
    }
    let tag = fields
        .get("tag")
        .map(|t| quoted(t))
        .or(email_tag.map(quoted));
    let dataset = fields.get("dataset").map(|d| quoted(d));
    let fail = |r: String| -> PartError { Box::new((r, None, tag.clone(), dataset.clone())) };
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| fail(format!("part header has no `{k}`")))
    };
    let num = |k: &str| -> Result<u64, PartError> {
        let v = get(k)?;
        v.parse()
            .map_err(|_| fail(format!("bad `{k}` in part header: `{}`", quoted(v))))
    };
    let (part, parts) = get("part")?
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| fail("bad `part` in part header".into()))?;
    let offset = num("offset")?;
    let length = num("length")?;
    let size = num("size")?;
    let digest = parse_digest(get("digest")?).map_err(fail)?;
    let part_digest = parse_digest(get("part-digest")?).map_err(fail)?;
    let name = sanitize_name(get("bundle")?);
    if part == 0 || part > parts || parts > crate::MAX_PARTS {
        return Err(fail(format!("part number {part}/{parts} is impossible")));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(fail(format!(
            "part covers bytes {offset}..{} of a {size}-byte bundle",
            offset.saturating_add(length)
        )));
    }
    let claim = Claim {
        name: name.clone(),
        digest: digest.clone(),
        size,
        part,
        parts,
        offset,
        length,
        part_digest: part_digest.clone(),
    };
    let damaged = |r: String| -> PartError {
        Box::new((r, Some(claim.clone()), tag.clone(), dataset.clone()))
    };
    if length != body.len() as u64 {
        return Err(damaged(format!(
            "part holds {} bytes but says {length} (cut short or altered)",
            body.len()
        )));
    }
    if digest_hex(body) != part_digest {
        return Err(damaged(
            "part does not match its digest (altered or damaged in transit)".into(),
        ));
    }
    Ok(Piece {
        name,
        tag,
        dataset,
        sender: None,
        part,
        parts,
        offset,
        size,
        digest: Some(digest),
        part_digest: Some(part_digest),
        data: body.to_vec(),
    })
}

/// The text header of a part attachment (everything before the bytes).
pub(crate) fn part_header(p: &PartSpec<'_>, data: &[u8]) -> Vec<u8> {
    let part_digest = digest_hex(data);
    let mark = p.tag.mark(&p.claim(data.len() as u64, &part_digest));
    let mut h = PART_MAGIC.to_vec();
    h.extend_from_slice(
        format!(
            "bundle: {}\ntag: {mark}\npart: {}/{}\noffset: {}\nlength: {}\nsize: {}\ndigest: blake3:{}\npart-digest: blake3:{part_digest}\n\n",
            p.name,
            p.part,
            p.parts,
            p.offset,
            data.len(),
            p.size,
            p.digest,
        )
        .as_bytes(),
    );
    h
}

/// Keeps a content name to safe characters and [`MAX_NAME`] bytes.
pub fn sanitize_name(name: &str) -> String {
    let name = name.strip_suffix(BUNDLE_SUFFIX).unwrap_or(name);
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    if s.is_empty() {
        s.push_str("bundle");
    }
    s
}

/// Checks one email address (`a@b.org` or `Name <a@b.org>`) and returns the bare address
/// (for `ferry contact set --email`).
pub fn check_address(s: &str) -> Result<String, EmailError> {
    Ok(parse_address(s)?.email.to_string())
}

/// Parses one email address (`a@b.org` or `Name <a@b.org>`).
pub(crate) fn parse_address(s: &str) -> Result<Mailbox, EmailError> {
    s.trim()
        .parse::<Mailbox>()
        .map_err(|e| EmailError::BadAddress {
            address: s.to_string(),
            reason: e.to_string(),
        })
}

/// One email to build: which bytes of which bundle.
pub(crate) struct PartSpec<'a> {
    pub(crate) from: &'a Mailbox,
    pub(crate) to: &'a [Mailbox],
    pub(crate) tag: &'a DatasetTag,
    pub(crate) name: &'a str,
    pub(crate) size: u64,
    pub(crate) digest: &'a str,
    pub(crate) part: u32,
    pub(crate) parts: u32,
    pub(crate) offset: u64,
}

impl PartSpec<'_> {
    /// What the piece of `length` bytes with digest `part_digest` claims.
    fn claim(&self, length: u64, part_digest: &str) -> Claim {
        Claim {
            name: self.name.to_string(),
            digest: self.digest.to_string(),
            size: self.size,
            part: self.part,
            parts: self.parts,
            offset: self.offset,
            length,
            part_digest: part_digest.to_string(),
        }
    }
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn short(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

/// The email that carries the whole bundle `data` named `name` from `from` to `to`, marked
/// with `tag`, byte for byte as [`crate::EmailTransport::send_bundle`] formats it when one
/// email is enough. For size figures: what a bundle costs by email, headers, text and base64
/// included.
pub fn render_email(
    from: &str,
    to: &str,
    tag: &DatasetTag,
    name: &str,
    data: &[u8],
) -> Result<Vec<u8>, EmailError> {
    Ok(render_emails(from, to, tag, name, data, u64::MAX)?.remove(0))
}

/// The emails that carry bundle `data` named `name` from `from` to `to`, marked with `tag`,
/// split as [`crate::EmailTransport::send_bundle`] splits it for emails of at most
/// `max_message_bytes` (one email when it fits). For tools and tests that deliver emails
/// themselves.
pub fn render_emails(
    from: &str,
    to: &str,
    tag: &DatasetTag,
    name: &str,
    data: &[u8],
    max_message_bytes: u64,
) -> Result<Vec<Vec<u8>>, EmailError> {
    let name = sanitize_name(name);
    let from = parse_address(from)?;
    let to = [parse_address(to)?];
    let digest = digest_hex(data);
    let size = data.len() as u64;
    let per = if max_message_bytes == u64::MAX {
        size.max(1)
    } else {
        crate::per_email(&from, &to, tag, &name, max_message_bytes)?
    };
    let parts = size.div_ceil(per).max(1);
    if parts > u64::from(crate::MAX_PARTS) {
        return Err(EmailError::TooLarge {
            size,
            max: per * u64::from(crate::MAX_PARTS),
            parts: crate::MAX_PARTS,
        });
    }
    let chunk = size.div_ceil(parts).max(1);
    let mut out = Vec::new();
    for part in 1..=parts as u32 {
        let offset = u64::from(part - 1) * chunk;
        let end = (offset + chunk).min(size);
        let spec = PartSpec {
            from: &from,
            to: &to,
            tag,
            name: &name,
            size,
            digest: &digest,
            part,
            parts: parts as u32,
            offset,
        };
        out.push(build_email(&spec, &data[offset as usize..end as usize])?);
    }
    Ok(out)
}

/// Builds the email carrying `data` (the bytes at `spec.offset`), formatted as sent. Neither
/// the subject, the text nor the headers name the dataset; the mark says it to members.
pub(crate) fn build_email(spec: &PartSpec<'_>, data: &[u8]) -> Result<Vec<u8>, EmailError> {
    let whole = spec.parts == 1;
    let (file_name, content, mark) = if whole {
        let mark = spec.tag.mark(&spec.claim(data.len() as u64, spec.digest));
        (format!("{}{BUNDLE_SUFFIX}", spec.name), data.to_vec(), mark)
    } else {
        let mark = spec
            .tag
            .mark(&spec.claim(data.len() as u64, &digest_hex(data)));
        let mut c = part_header(spec, data);
        c.extend_from_slice(data);
        (
            format!(
                "{}.part-{}-of-{}{PART_SUFFIX}",
                spec.name, spec.part, spec.parts
            ),
            c,
            mark,
        )
    };
    let which = if whole {
        format!("bundle {}", spec.name)
    } else {
        format!(
            "part {} of {} of bundle {}",
            spec.part, spec.parts, spec.name
        )
    };
    let text = format!(
        "This email carries data for ferry, the tool that keeps records in step between \
         computers without a network: {which}, sent by {from}.\r\n\
         \r\n\
         The attachment is encrypted and signed; only laptops that joined the dataset can \
         read it, and a mail program cannot open it.\r\n\
         \r\n\
         ferry picks this email up by itself (ferry receive email). To apply it by hand, save \
         the email (.eml) or its attachment and run: ferry import FILE\r\n\
         Please do not edit or delete this email: once applied, ferry moves it to its \
         processed folder.\r\n",
        from = spec.from.email,
    );
    let subject = if whole {
        format!("ferry bundle {}", short(spec.name, 16))
    } else {
        format!(
            "ferry bundle {} part {}/{}",
            short(spec.name, 16),
            spec.part,
            spec.parts,
        )
    };
    let mut b = lettre::Message::builder()
        .from(spec.from.clone())
        .subject(subject)
        .date_now()
        .message_id(None)
        .raw_header(raw_header(HEADER_VERSION, VERSION.into()))
        .raw_header(raw_header(HEADER_TAG, mark))
        .raw_header(raw_header(HEADER_BUNDLE, spec.name.into()))
        .raw_header(raw_header(
            HEADER_PART,
            format!("{}/{}", spec.part, spec.parts),
        ))
        .raw_header(raw_header(HEADER_SIZE, spec.size.to_string()))
        .raw_header(raw_header(HEADER_DIGEST, format!("blake3:{}", spec.digest)));
    for to in spec.to {
        b = b.to(to.clone());
    }
    let attachment = Attachment::new(file_name).body(
        Body::new(content),
        ContentType::parse("application/octet-stream").expect("a valid content type"),
    );
    let msg = b
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(text))
                .singlepart(attachment),
        )
        .map_err(|e| EmailError::Setting {
            key: "from",
            problem: format!("cannot build the email: {e}"),
        })?;
    Ok(msg.formatted())
}

/// Bytes that `n` bytes take once base64-encoded in 76-character lines (upper bound).
pub(crate) fn base64_len(n: u64) -> u64 {
    let chars = n.div_ceil(3) * 4;
    chars + 2 * n.div_ceil(57)
}

/// Largest number of bundle bytes per email so that an email of `overhead` bytes besides the
/// attachment (headers, text, MIME boundaries), plus the encoded attachment (a
/// `part_header`-byte part header, then the data), stays within `max`.
pub(crate) fn capacity(max: u64, overhead: u64, part_header: u64) -> u64 {
    if max <= overhead + base64_len(part_header) {
        return 0;
    }
    // base64_len is monotonic: binary search the largest fitting length.
    let (mut lo, mut hi) = (0u64, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if overhead + base64_len(part_header + mid) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: DatasetTag = DatasetTag([5; 32]);

    fn spec<'a>(
        from: &'a Mailbox,
        to: &'a [Mailbox],
        digest: &'a str,
        part: u32,
        parts: u32,
        offset: u64,
        size: u64,
    ) -> PartSpec<'a> {
        PartSpec {
            from,
            to,
            tag: &TAG,
            name: "b1",
            size,
            digest,
            part,
            parts,
            offset,
        }
    }

    #[test]
    fn a_whole_bundle_round_trips_through_an_email() {
        let from = parse_address("a@example.test").unwrap();
        let to = [parse_address("b@example.test").unwrap()];
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let d = digest_hex(&data);
        let raw = build_email(&spec(&from, &to, &d, 1, 1, 0, 5000), &data).unwrap();
        let got = extract_email(&raw);
        assert!(got.damaged.is_empty(), "{:?}", got.damaged);
        assert_eq!(got.pieces.len(), 1);
        let p = &got.pieces[0];
        assert_eq!((p.name.as_str(), p.is_whole()), ("b1", true));
        assert_eq!(p.data, data);
        assert_eq!(p.digest.as_deref(), Some(d.as_str()));
        assert_eq!(p.sender.as_deref(), Some("a@example.test"));
        assert_eq!(p.dataset, None);
        assert!(TAG.verifies(&p.claim(), p.tag.as_deref().unwrap()));
    }

    /// Issue 18 ("say as little as possible to strangers"): no header, subject or text of
    /// a bundle email names the dataset; the mark verifies only with the dataset's tag and
    /// only for the piece it was made for.
    #[test]
    fn an_email_names_no_dataset_and_its_mark_fits_only_its_own_piece() {
        let from = parse_address("a@example.test").unwrap();
        let to = [parse_address("b@example.test").unwrap()];
        let data = vec![9u8; 100];
        let d = digest_hex(&[1u8; 300]);
        for (part, parts, offset) in [(1, 1, 0), (2, 3, 100)] {
            let size = if parts == 1 { 100 } else { 300 };
            let digest = if parts == 1 {
                digest_hex(&data)
            } else {
                d.clone()
            };
            let raw =
                build_email(&spec(&from, &to, &digest, part, parts, offset, size), &data).unwrap();
            let text = String::from_utf8(raw.clone()).unwrap();
            assert!(
                !text.to_ascii_lowercase().contains("x-ferry-dataset"),
                "{text}"
            );
            assert!(
                !text.contains("dataset "),
                "the text names no dataset: {text}"
            );
            let p = extract_email(&raw).pieces.remove(0);
            let mark = p.tag.clone().unwrap();
            assert!(TAG.verifies(&p.claim(), &mark));
            assert!(
                !DatasetTag([6; 32]).verifies(&p.claim(), &mark),
                "another dataset's tag"
            );
            let mut other = p.claim();
            other.offset += 1;
            assert!(
                !TAG.verifies(&other, &mark),
                "a mark fits only its own claim"
            );
            let mut other = p.claim();
            other.part_digest = "0".repeat(64);
            assert!(!TAG.verifies(&other, &mark));
        }
    }

    #[test]
    fn an_email_with_too_many_ferry_attachments_is_not_read() {
        let mut raw = String::from(
            "From: x@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=B\r\n\r\n",
        );
        for i in 0..1000 {
            raw.push_str(&format!(
                "--B\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=\"p{i}.ferry\"\r\n\r\nxyz\r\n"
            ));
        }
        raw.push_str("--B--\r\n");
        let got = extract_email(raw.as_bytes());
        assert!(got.pieces.is_empty(), "not parsed: {} boundary lines", 1001);
        assert_eq!(got.excess, 1001);
        assert!(got.is_ferry());
        assert_eq!(got.from.as_deref(), Some("x@example.test"));
        // A few too many are parsed, and counted.
        let few: String = raw
            .split("--B\r\n")
            .take(12)
            .collect::<Vec<_>>()
            .join("--B\r\n");
        let got = extract_email(format!("{few}--B--\r\n").as_bytes());
        assert_eq!(got.pieces.len(), MAX_PIECES_PER_EMAIL);
        assert_eq!(got.excess, 11 - MAX_PIECES_PER_EMAIL);
    }

    #[test]
    fn parts_carry_their_place_and_are_checked() {
        let from = parse_address("a@example.test").unwrap();
        let to = [parse_address("b@example.test").unwrap()];
        let data = vec![9u8; 100];
        let raw = build_email(&spec(&from, &to, &"0".repeat(64), 2, 3, 100, 300), &data).unwrap();
        let got = extract_email(&raw);
        assert_eq!(got.pieces.len(), 1, "{got:?}");
        let p = &got.pieces[0];
        assert_eq!((p.part, p.parts, p.offset, p.size), (2, 3, 100, 300));
        assert!(!p.is_whole());

        // The saved attachment alone is enough too.
        let mut framed = part_header(&spec(&from, &to, &"0".repeat(64), 2, 3, 100, 300), &data);
        framed.extend_from_slice(&data);
        let mut saved = extract_file(&framed, "x.ferrypart").pieces;
        saved[0].sender = p.sender.clone();
        assert_eq!(saved, got.pieces);

        // One flipped byte is caught by the part digest.
        let n = framed.len();
        framed[n - 1] ^= 1;
        let bad = extract_file(&framed, "x.ferrypart");
        assert!(bad.pieces.is_empty());
        assert!(bad.damaged[0].reason.contains("digest"), "{bad:?}");
    }

    #[test]
    fn a_tampered_whole_attachment_is_reported_not_returned() {
        let from = parse_address("a@example.test").unwrap();
        let to = [parse_address("b@example.test").unwrap()];
        let data = vec![1u8; 3000];
        let d = digest_hex(&data);
        let raw = build_email(&spec(&from, &to, &d, 1, 1, 0, 3000), &data).unwrap();
        let mut text = String::from_utf8(raw).unwrap();
        // base64 of 0x01 0x01 0x01 is "AQEB"; change one group.
        let at = text.rfind("AQEB").unwrap();
        text.replace_range(at..at + 4, "AQEC");
        let got = extract_email(text.as_bytes());
        assert!(got.pieces.is_empty());
        assert_eq!(got.damaged.len(), 1);
        assert!(got.damaged[0].reason.contains("digest"), "{got:?}");
    }

    #[test]
    fn files_are_told_apart_by_their_first_bytes() {
        assert_eq!(
            classify(b"Return-Path: <a@b>\r\nReceived: x\r\n"),
            FileKind::Email
        );
        assert_eq!(
            classify(b"From a@b Sat Jan  3 01:05:34 1996\nFrom: x\n"),
            FileKind::Email
        );
        assert_eq!(classify(PART_MAGIC), FileKind::Part);
        assert_eq!(classify(b"FRY\x01\x00\x00binary"), FileKind::Other);
        assert_eq!(classify(b"x:\x00\x01\x02"), FileKind::Other);
        let bare = extract_file(b"\x00\x01bundle", "/media/usb/abc.ferry");
        assert_eq!(bare.pieces[0].name, "abc");
        assert!(bare.pieces[0].is_whole());
    }

    #[test]
    fn mail_that_is_not_ferry_mail_gives_nothing() {
        let raw =
            b"From: a@example.test\r\nTo: b@example.test\r\nSubject: lunch\r\n\r\nat noon?\r\n";
        let got = extract_email(raw);
        assert!(!got.is_ferry());
        assert_eq!(got.subject.as_deref(), Some("lunch"));
        assert!(!extract_email(b"\x00\xff garbage").is_ferry());
    }

    #[test]
    fn capacity_fits_exactly() {
        for max in [20_000u64, 1_000_000, 10_000_000] {
            let c = capacity(max, 1500, 300);
            assert!(1500 + base64_len(300 + c) <= max);
            assert!(1500 + base64_len(300 + c + 1) > max);
        }
        assert_eq!(capacity(100, 1500, 300), 0);
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            check_address(" Clinic A <clinic-a@example.org> ").unwrap(),
            "clinic-a@example.org"
        );
        let e = check_address("clinic-a.example.org").unwrap_err();
        assert!(e.to_string().contains("not a valid email address"), "{e}");
    }

    #[test]
    fn names_are_kept_safe() {
        assert_eq!(sanitize_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize_name("abc.ferry"), "abc");
        assert_eq!(sanitize_name(""), "bundle");
        assert_eq!(sanitize_name(&"x".repeat(500)).len(), MAX_NAME);
    }
}
