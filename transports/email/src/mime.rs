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
/// Header: the dataset id (hex).
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
/// Largest part header accepted.
const MAX_PART_HEADER: usize = 4096;
/// How deep forwarded emails (an email attached to an email) are searched.
const MAX_NESTING: usize = 4;

/// One bundle, or one part of one, found in an email or a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Piece {
    /// The bundle's content name (without `.ferry`).
    pub name: String,
    /// The dataset it says it belongs to (hex), when the email or part says so.
    pub dataset: Option<String>,
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
    /// The bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("name", &self.name)
            .field("dataset", &self.dataset)
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
}

/// An attachment that claims to carry ferry data but whose framing is broken (cut short,
/// altered, badly encoded). Its bytes are kept so the node can quarantine them.
#[derive(Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The attachment's file name, when it has one.
    pub file_name: Option<String>,
    /// The dataset the email says it is for (`X-Ferry-Dataset`), when it says.
    pub dataset: Option<String>,
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
    /// The email's subject (of the outermost email), for messages to a person.
    pub subject: Option<String>,
}

impl Extracted {
    /// Whether anything ferry-related was found (good or broken).
    pub fn is_ferry(&self) -> bool {
        !self.pieces.is_empty() || !self.damaged.is_empty()
    }
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
            match parse_part(bytes) {
                Ok(p) => out.pieces.push(p),
                Err(reason) => out.damaged.push(Damaged {
                    file_name: Some(file_name.to_string()),
                    dataset: None,
                    reason,
                    data: bytes.to_vec(),
                }),
            }
            out
        }
        FileKind::Other => {
            let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
            let name = base.strip_suffix(BUNDLE_SUFFIX).unwrap_or(base);
            Extracted {
                pieces: vec![Piece {
                    name: sanitize_name(name),
                    dataset: None,
                    part: 1,
                    parts: 1,
                    offset: 0,
                    size: bytes.len() as u64,
                    digest: None,
                    data: bytes.to_vec(),
                }],
                ..Extracted::default()
            }
        }
    }
}

/// Finds the bundles and parts carried by one raw email (RFC 5322 bytes), including emails
/// forwarded as attachments. Never fails: an email that is not ferry mail gives an empty
/// result, and broken ferry attachments are reported in [`Extracted::damaged`].
pub fn extract_email(raw: &[u8]) -> Extracted {
    let mut out = Extracted::default();
    let Some(msg) = MessageParser::default().parse(raw) else {
        return out;
    };
    out.subject = msg.subject().map(str::to_string);
    walk(&msg, 0, &mut out);
    out
}

fn header(msg: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    msg.header_raw(name).map(|v| v.trim().to_string())
}

fn is_ferry_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(BUNDLE_SUFFIX) || lower.ends_with(PART_SUFFIX)
}

fn walk(msg: &mail_parser::Message<'_>, depth: usize, out: &mut Extracted) {
    let headed = header(msg, HEADER_BUNDLE).is_some() || header(msg, HEADER_VERSION).is_some();
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
            out.damaged.push(Damaged {
                file_name: None,
                dataset: header(msg, HEADER_DATASET),
                reason: "email has ferry headers but no attachment (removed by a mail filter?)"
                    .into(),
                data: Vec::new(),
            });
            return;
        }
    }
    for part in attachments {
        let file_name = part.attachment_name().map(str::to_string);
        let data = part.contents();
        let damaged = |reason: String| Damaged {
            file_name: file_name.clone(),
            dataset: header(msg, HEADER_DATASET),
            reason,
            data: data.to_vec(),
        };
        if part.is_encoding_problem {
            out.damaged.push(damaged(
                "the attachment's encoding is broken (cut short or altered in transit)".into(),
            ));
            continue;
        }
        if data.starts_with(PART_MAGIC) {
            match parse_part(data) {
                Ok(p) => out.pieces.push(p),
                Err(reason) => out.damaged.push(damaged(reason)),
            }
            continue;
        }
        if headed {
            match whole_from_headers(msg, data) {
                Ok(p) => out.pieces.push(p),
                Err(reason) => out.damaged.push(damaged(reason)),
            }
        } else {
            // A bundle attached by hand (from webmail, say): nothing to check it against.
            let name = file_name.as_deref().unwrap_or("attachment");
            let name = strip_suffix_ci(name, BUNDLE_SUFFIX);
            out.pieces.push(Piece {
                name: sanitize_name(name),
                dataset: None,
                part: 1,
                parts: 1,
                offset: 0,
                size: data.len() as u64,
                digest: None,
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

/// A whole bundle described by the email's `X-Ferry-*` headers, checked against them.
fn whole_from_headers(msg: &mail_parser::Message<'_>, data: &[u8]) -> Result<Piece, String> {
    let version = header(msg, HEADER_VERSION).unwrap_or_else(|| VERSION.into());
    if version != VERSION {
        return Err(format!(
            "framing version {version} is not understood; update ferry on this laptop"
        ));
    }
    let name = header(msg, HEADER_BUNDLE).ok_or("the X-Ferry-Bundle header is missing")?;
    if let Some(part) = header(msg, HEADER_PART) {
        if part != "1/1" {
            return Err(format!(
                "email says it is part {part} but its attachment has no part header"
            ));
        }
    }
    let size = header(msg, HEADER_SIZE);
    if let Some(size) = size {
        let size: u64 = size
            .parse()
            .map_err(|_| format!("bad X-Ferry-Size `{size}`"))?;
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
        dataset: header(msg, HEADER_DATASET),
        part: 1,
        parts: 1,
        offset: 0,
        size: data.len() as u64,
        digest,
        data: data.to_vec(),
    })
}

fn parse_digest(s: &str) -> Result<String, String> {
    let hex = s
        .strip_prefix("blake3:")
        .ok_or_else(|| format!("unknown digest `{s}`"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("malformed digest `{s}`"));
    }
    Ok(hex.to_ascii_lowercase())
}

/// BLAKE3 of `data`, in lowercase hex.
pub(crate) fn digest_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Reads a part attachment: the header after [`PART_MAGIC`], then the bytes.
fn parse_part(data: &[u8]) -> Result<Piece, String> {
    let rest = &data[PART_MAGIC.len()..];
    let end = rest
        .windows(2)
        .take(MAX_PART_HEADER)
        .position(|w| w == b"\n\n")
        .ok_or("part header is not terminated (cut short?)")?;
    let head = std::str::from_utf8(&rest[..end]).map_err(|_| "part header is not text")?;
    let body = &rest[end + 2..];
    let mut fields = std::collections::BTreeMap::new();
    for line in head.lines() {
        let (k, v) = line
            .split_once(": ")
            .ok_or_else(|| format!("bad part header line `{line}`"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| format!("part header has no `{k}`"))
    };
    let num = |k: &str| -> Result<u64, String> {
        let v = get(k)?;
        v.parse()
            .map_err(|_| format!("bad `{k}` in part header: `{v}`"))
    };
    let (part, parts) = get("part")?
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or("bad `part` in part header")?;
    let offset = num("offset")?;
    let length = num("length")?;
    let size = num("size")?;
    let digest = parse_digest(get("digest")?)?;
    let part_digest = parse_digest(get("part-digest")?)?;
    if part == 0 || part > parts {
        return Err(format!("part number {part}/{parts} is impossible"));
    }
    if length != body.len() as u64 {
        return Err(format!(
            "part holds {} bytes but says {length} (cut short or altered)",
            body.len()
        ));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "part covers bytes {offset}..{} of a {size}-byte bundle",
            offset.saturating_add(length)
        ));
    }
    if digest_hex(body) != part_digest {
        return Err("part does not match its digest (altered or damaged in transit)".into());
    }
    Ok(Piece {
        name: sanitize_name(get("bundle")?),
        dataset: fields.get("dataset").map(|s| s.to_string()),
        part,
        parts,
        offset,
        size,
        digest: Some(digest),
        data: body.to_vec(),
    })
}

/// The text header of a part attachment (everything before the bytes).
pub(crate) fn part_header(p: &PartSpec<'_>, data: &[u8]) -> Vec<u8> {
    let mut h = PART_MAGIC.to_vec();
    h.extend_from_slice(
        format!(
            "bundle: {}\ndataset: {}\npart: {}/{}\noffset: {}\nlength: {}\nsize: {}\ndigest: blake3:{}\npart-digest: blake3:{}\n\n",
            p.name,
            p.dataset,
            p.part,
            p.parts,
            p.offset,
            data.len(),
            p.size,
            p.digest,
            digest_hex(data)
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
    pub(crate) dataset: &'a str,
    pub(crate) name: &'a str,
    pub(crate) size: u64,
    pub(crate) digest: &'a str,
    pub(crate) part: u32,
    pub(crate) parts: u32,
    pub(crate) offset: u64,
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn short(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

/// The email that carries the whole bundle `data` named `name` from `from` to `to`, byte
/// for byte as [`crate::EmailTransport::send_bundle`] formats it when one email is enough.
/// For size figures: what a bundle costs by email, headers, text and base64 included.
pub fn render_email(
    from: &str,
    to: &str,
    dataset: &str,
    name: &str,
    data: &[u8],
) -> Result<Vec<u8>, EmailError> {
    let from = parse_address(from)?;
    let to = [parse_address(to)?];
    let digest = digest_hex(data);
    let spec = PartSpec {
        from: &from,
        to: &to,
        dataset,
        name,
        size: data.len() as u64,
        digest: &digest,
        part: 1,
        parts: 1,
        offset: 0,
    };
    build_email(&spec, data)
}

/// Builds the email carrying `data` (the bytes at `spec.offset`), formatted as sent.
pub(crate) fn build_email(spec: &PartSpec<'_>, data: &[u8]) -> Result<Vec<u8>, EmailError> {
    let whole = spec.parts == 1;
    let (file_name, content) = if whole {
        (format!("{}{BUNDLE_SUFFIX}", spec.name), data.to_vec())
    } else {
        let mut c = part_header(spec, data);
        c.extend_from_slice(data);
        (
            format!(
                "{}.part-{}-of-{}{PART_SUFFIX}",
                spec.name, spec.part, spec.parts
            ),
            c,
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
         computers without a network: {which}, for dataset {dataset}, sent by {from}.\r\n\
         \r\n\
         The attachment is encrypted and signed; only laptops that joined the dataset can \
         read it, and a mail program cannot open it.\r\n\
         \r\n\
         ferry picks this email up by itself (ferry receive email). To apply it by hand, save \
         the email (.eml) or its attachment and run: ferry import FILE\r\n\
         Please do not edit or delete this email: once applied, ferry moves it to its \
         processed folder.\r\n",
        dataset = spec.dataset,
        from = spec.from.email,
    );
    let subject = if whole {
        format!(
            "ferry bundle {} (dataset {})",
            short(spec.name, 16),
            short(spec.dataset, 8)
        )
    } else {
        format!(
            "ferry bundle {} part {}/{} (dataset {})",
            short(spec.name, 16),
            spec.part,
            spec.parts,
            short(spec.dataset, 8)
        )
    };
    let mut b = lettre::Message::builder()
        .from(spec.from.clone())
        .subject(subject)
        .date_now()
        .message_id(None)
        .raw_header(raw_header(HEADER_VERSION, VERSION.into()))
        .raw_header(raw_header(HEADER_DATASET, spec.dataset.into()))
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
            dataset: "00112233445566778899aabbccddeeff",
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
        assert_eq!(
            p.dataset.as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
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
        assert_eq!(extract_file(&framed, "x.ferrypart").pieces, got.pieces);

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
