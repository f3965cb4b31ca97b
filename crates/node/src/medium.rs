//! Reading a medium that someone else prepared (a USB stick, a shared folder): walking its
//! folders without following links, and opening files without ever blocking on a FIFO or a
//! device.
//!
//! A stick is input like any other: it may hold symbolic links (`loop -> .`, `x.ferry ->
//! /dev/zero`), FIFOs, sockets, device nodes, or folders reached twice through a bind mount.
//! The walk never follows a link, never opens anything but a regular file, and reports each
//! entry it leaves alone, so nothing on a stick can make ferry hang or read outside it.

use crate::NodeError;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

/// The file name suffixes `import` reads under a folder: bundles, and saved emails and part
/// attachments (which go to the email transport's reassembly).
const BUNDLE_SUFFIX: &str = ferry_transport_dir::SUFFIX;
const EMAIL_SUFFIXES: [&str; 2] = [".eml", ".ferrypart"];

/// How deep below a folder given to `import` the walk goes (a guard against a tree that
/// changes while it is walked; a real stick is two or three levels deep).
const MAX_DEPTH: usize = 32;

/// An entry of a medium that was not read, and why.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedEntry {
    /// The entry.
    pub path: PathBuf,
    /// Why it was left alone, in words.
    pub reason: String,
}

/// A file `import` will read: `path` is what is opened, `origin` what reports call it (the
/// same, except for a link given on the command line, which is opened at its target).
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) path: PathBuf,
    pub(crate) origin: PathBuf,
}

/// Whether a file is read as a saved email or part attachment (by its name: `.eml`,
/// `.ferrypart`) rather than as a bundle. Anything else under a bundle name is a bundle or
/// is refused.
pub(crate) fn is_saved_email(origin: &Path) -> bool {
    let name = origin.file_name().unwrap_or_default().to_string_lossy();
    EMAIL_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// What a non-regular, non-folder entry is, in a few words.
fn what(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    "neither a file nor a folder"
}

/// Why a non-regular, non-folder entry is not read, for the line that reports it.
fn kind(meta: &Metadata) -> String {
    if meta.file_type().is_symlink() {
        "a symbolic link (ferry does not follow links on a medium)".to_string()
    } else {
        format!(
            "{}, not a file (ferry reads only regular files)",
            what(meta)
        )
    }
}

/// A folder's identity, to notice a folder reached twice (a loop through a bind mount).
fn folder_id(meta: &Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

/// Opens a regular file for reading without following a link in its last component and
/// without blocking: a FIFO or device swapped in after the file was listed is opened
/// non-blocking and then refused by the check of what was actually opened (`fstat`).
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = opts.open(path).map_err(|e| {
        // O_NOFOLLOW on a link fails with ELOOP: say what it is.
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::other("it is a symbolic link (ferry does not follow links)");
        }
        e
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!("it is {}", kind(&meta))));
    }
    Ok(file)
}

/// What a path given on the command line names: itself, or the target of a link (a person
/// who types a link means its target; links are followed only there, never on a medium).
pub(crate) fn explicit_target(path: &Path) -> Result<PathBuf, NodeError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::canonicalize(path).map_err(|e| NodeError::io("cannot read", path, e))
    } else {
        Ok(path.to_path_buf())
    }
}

/// The files `import` reads under `path`, in name order: the file itself, or every `*.ferry`,
/// `*.eml` and `*.ferrypart` file below a folder — except in `ferry/<dataset id>` folders of
/// other datasets (a stick shared by several datasets), which are counted in `other`.
/// Links, FIFOs, sockets, devices and folders reached twice are never followed or opened;
/// each is listed in `skipped`. Hidden entries (temporary files of writers) are ignored.
///
/// `path` itself was given on the command line, so a link there is followed (to a regular
/// file or a folder); anything else there is refused with an error.
pub(crate) fn collect(
    path: &Path,
    ours: &str,
    out: &mut Vec<Found>,
    skipped: &mut Vec<SkippedEntry>,
    other: &mut u64,
) -> Result<(), NodeError> {
    let meta = std::fs::metadata(path).map_err(|e| NodeError::io("cannot read", path, e))?;
    let real = explicit_target(path)?;
    if meta.is_file() {
        out.push(Found {
            path: real,
            origin: path.to_path_buf(),
        });
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(NodeError::Input(format!(
            "{} is {}, not a bundle file or folder; give bundle files or folders",
            path.display(),
            what(&meta)
        )));
    }
    let mut visited = BTreeSet::new();
    visited.insert(folder_id(&meta));
    walk(&real, path, ours, 0, &mut visited, out, skipped, other)
}

/// One folder of [`collect`]'s walk: `dir` is read, `shown` is what reports call it.
#[allow(clippy::too_many_arguments)]
fn walk(
    dir: &Path,
    shown: &Path,
    ours: &str,
    depth: usize,
    visited: &mut BTreeSet<(u64, u64)>,
    out: &mut Vec<Found>,
    skipped: &mut Vec<SkippedEntry>,
    other: &mut u64,
) -> Result<(), NodeError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| NodeError::io("cannot read folder", shown, e))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        let origin = shown.join(e.file_name());
        // Never follows a link: the entry itself.
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let skip = |skipped: &mut Vec<SkippedEntry>, reason: &str| {
            skipped.push(SkippedEntry {
                path: origin.clone(),
                reason: reason.to_string(),
            })
        };
        if meta.is_dir() {
            if !visited.insert(folder_id(&meta)) {
                skip(
                    skipped,
                    "a folder already read (the same folder reached twice, as through a bind mount); read once",
                );
                continue;
            }
            if depth + 1 >= MAX_DEPTH {
                skip(
                    skipped,
                    &format!("a folder more than {MAX_DEPTH} levels deep; not read"),
                );
                continue;
            }
            let foreign = dir.file_name().is_some_and(|n| n == "ferry")
                && name.len() == 16
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && name != ours;
            if foreign {
                let mut found = Vec::new();
                let mut ignored = Vec::new();
                let mut nested = 0;
                let _ = walk(
                    &p,
                    &origin,
                    "",
                    depth + 1,
                    visited,
                    &mut found,
                    &mut ignored,
                    &mut nested,
                );
                *other += found.len() as u64;
                continue;
            }
            walk(&p, &origin, ours, depth + 1, visited, out, skipped, other)?;
        } else if meta.is_file() {
            if name.ends_with(BUNDLE_SUFFIX) || EMAIL_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                out.push(Found { path: p, origin });
            }
        } else {
            skip(skipped, &kind(&meta));
        }
    }
    Ok(())
}

/// Checks that the folders between a medium's root and its bundle folder (`ROOT/ferry` and
/// `ROOT/ferry/<dataset id>`) are real folders where they exist, not links or special files
/// that would lead reads and writes elsewhere.
pub(crate) fn check_bundle_folder(root: &Path, folder: &Path) -> Result<(), NodeError> {
    let Ok(below) = folder.strip_prefix(root) else {
        return Ok(());
    };
    let mut at = root.to_path_buf();
    for part in below.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                return Err(NodeError::Input(format!(
                    "{} is {}; ferry reads and writes only real folders on a medium: remove it, or use another stick",
                    at.display(),
                    what(&meta)
                )));
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mkfifo (coreutils) is needed");
    }

    #[test]
    fn open_regular_never_blocks_on_a_fifo_and_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("y.ferry");
        mkfifo(&fifo);
        let start = Instant::now();
        let err = open_regular(&fifo).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("FIFO"), "{err}");

        let link = dir.path().join("x.ferry");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = open_regular(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");

        let file = dir.path().join("a.ferry");
        std::fs::write(&file, b"bytes").unwrap();
        assert!(open_regular(&file).is_ok());
    }

    #[test]
    fn collect_skips_links_fifos_and_sockets_with_a_reason_each() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.ferry"), b"a").unwrap();
        std::fs::write(root.join("notes.txt"), b"not read").unwrap();
        std::fs::write(root.join(".hidden.ferry"), b"a writer's temporary file").unwrap();
        std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("x.ferry")).unwrap();
        mkfifo(&root.join("y.ferry"));
        let _socket = std::os::unix::net::UnixListener::bind(root.join("s.ferry")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub").join("b.eml"), b"b").unwrap();

        let (mut found, mut skipped, mut other) = (Vec::new(), Vec::new(), 0);
        collect(root, "", &mut found, &mut skipped, &mut other).unwrap();
        let names = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
        let found: Vec<_> = found.iter().map(|f| names(&f.origin)).collect();
        assert_eq!(found, ["a.ferry", "sub/b.eml"]);
        let skipped: Vec<_> = skipped
            .iter()
            .map(|s| format!("{}: {}", names(&s.path), s.reason))
            .collect();
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(
            skipped[0].starts_with("loop: a symbolic link"),
            "{skipped:?}"
        );
        assert!(skipped[1].starts_with("s.ferry: a socket"), "{skipped:?}");
        assert!(
            skipped[2].starts_with("x.ferry: a symbolic link"),
            "{skipped:?}"
        );
        assert!(skipped[3].starts_with("y.ferry: a FIFO"), "{skipped:?}");
    }

    #[test]
    fn a_path_given_explicitly_is_followed_but_must_be_a_file_or_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.ferry");
        std::fs::write(&file, b"a").unwrap();
        let link = dir.path().join("link.ferry");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let (mut found, mut skipped, mut other) = (Vec::new(), Vec::new(), 0);
        collect(&link, "", &mut found, &mut skipped, &mut other).unwrap();
        assert_eq!(found[0].origin, link);
        assert_eq!(found[0].path, file.canonicalize().unwrap());

        let fifo = dir.path().join("y.ferry");
        mkfifo(&fifo);
        let err = collect(&fifo, "", &mut found, &mut skipped, &mut other).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn bundle_folder_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let folder = root.join("ferry").join("0123456789abcdef");
        assert!(check_bundle_folder(root, &folder).is_ok());
        std::os::unix::fs::symlink("/", root.join("ferry")).unwrap();
        let err = check_bundle_folder(root, &folder).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
