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
use std::collections::{BTreeMap, BTreeSet};
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

/// What a walk saw besides the files it returns: enough to tell a person who gave the wrong
/// folder what is there instead.
#[derive(Debug, Default)]
pub(crate) struct Elsewhere {
    /// Bundle files in `ferry/<dataset id>` folders of other datasets, by dataset id.
    pub(crate) datasets: BTreeMap<String, u64>,
    /// Files not named as ferry's (`*.ferry`, `*.eml`, `*.ferrypart`)…
    pub(crate) files: u64,
    /// …and the first few of them, as reports call them.
    pub(crate) examples: Vec<PathBuf>,
    /// Whether a folder of this dataset (`ferry/<id>`, or the folder given, named `<id>`)
    /// was read: the right place, even when it holds nothing yet.
    pub(crate) ours: bool,
}

/// How many names of other files [`Elsewhere`] keeps.
const EXAMPLES: usize = 3;

/// Whether a folder name is a dataset id (16 hex digits).
pub(crate) fn is_dataset_id(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files `import` reads under `path`, in name order: the file itself, or every `*.ferry`,
/// `*.eml` and `*.ferrypart` file below a folder — except in `ferry/<dataset id>` folders of
/// other datasets (a stick shared by several datasets), which are counted in `elsewhere`
/// with the files of other names.
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
    elsewhere: &mut Elsewhere,
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
        return Err(NodeError::Medium(format!(
            "{} is {}, not a bundle file or folder; give bundle files or folders",
            path.display(),
            what(&meta)
        )));
    }
    let mut visited = BTreeSet::new();
    visited.insert(folder_id(&meta));
    if !ours.is_empty() && real.file_name().is_some_and(|n| n == ours) {
        elsewhere.ours = true;
    }
    walk(&real, path, ours, 0, &mut visited, out, skipped, elsewhere)
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
    elsewhere: &mut Elsewhere,
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
            let in_ferry = dir.file_name().is_some_and(|n| n == "ferry");
            let foreign = in_ferry && is_dataset_id(&name) && name != ours;
            if foreign {
                let mut found = Vec::new();
                let mut ignored = Vec::new();
                let _ = walk(
                    &p,
                    &origin,
                    "",
                    depth + 1,
                    visited,
                    &mut found,
                    &mut ignored,
                    &mut Elsewhere::default(),
                );
                *elsewhere.datasets.entry(name).or_default() += found.len() as u64;
                continue;
            }
            if in_ferry && !ours.is_empty() && name == ours {
                elsewhere.ours = true;
            }
            walk(
                &p,
                &origin,
                ours,
                depth + 1,
                visited,
                out,
                skipped,
                elsewhere,
            )?;
        } else if meta.is_file() {
            if name.ends_with(BUNDLE_SUFFIX) || EMAIL_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                out.push(Found { path: p, origin });
            } else {
                elsewhere.files += 1;
                if elsewhere.examples.len() < EXAMPLES {
                    elsewhere.examples.push(origin);
                }
            }
        } else {
            skip(skipped, &kind(&meta));
        }
    }
    Ok(())
}

/// Checks that the folders between a medium's root and its bundle folder (`ROOT/ferry` and
/// `ROOT/ferry/<dataset id>`) are real folders where they exist, not links or special files
/// that would lead reads and writes elsewhere; and that `root` is a medium's top folder, not
/// its `ferry` folder or a dataset folder in it (which would put bundles in
/// `ferry/ferry/<id>/`, where no other laptop looks).
pub(crate) fn check_bundle_folder(root: &Path, folder: &Path) -> Result<(), NodeError> {
    check_not_too_deep(root)?;
    let Ok(below) = folder.strip_prefix(root) else {
        return Ok(());
    };
    let mut at = root.to_path_buf();
    for part in below.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                return Err(NodeError::Medium(format!(
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

/// Refuses a `root` that is a stick's `ferry` folder (it holds dataset folders and no
/// `ferry` folder of its own) or a dataset folder (`.../ferry/<id>`), naming the folder to give
/// instead.
fn check_not_too_deep(root: &Path) -> Result<(), NodeError> {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    // The folder `levels` above, as a path a person can type (absolute when it can be).
    let above = |p: &Path, levels: usize| {
        let mut p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        for _ in 0..levels {
            p = match p.parent() {
                Some(up) if !up.as_os_str().is_empty() => up.to_path_buf(),
                _ => p.join(".."),
            };
        }
        p
    };
    let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let is_ferry_folder = name(&real).is_some_and(|n| n == "ferry");
    // A dataset folder given itself: `.../ferry/<id>`.
    if name(&real).is_some_and(|n| is_dataset_id(&n))
        && real.parent().and_then(name).is_some_and(|n| n == "ferry")
    {
        return Err(NodeError::Medium(format!(
            "{} is the folder of one dataset on a stick, not the stick: give the stick's top folder instead ({}); ferry finds ferry/<dataset id>/ in it",
            root.display(),
            above(root, 2).display()
        )));
    }
    if std::fs::symlink_metadata(root.join("ferry")).is_ok() {
        return Ok(());
    }
    let datasets = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| is_dataset_id(n))
                .count()
        })
        .unwrap_or(0);
    // Named `ferry`, without a `ferry` folder of its own, and not a medium's top folder (a
    // stick mounted there): most likely the folder where ferry keeps its bundles, typed
    // instead of the stick.
    let mount_point = || {
        let dev = |p: &Path| std::fs::metadata(p).ok().map(|m| folder_id(&m).0);
        real.parent().is_some_and(|up| dev(&real) != dev(up))
    };
    if datasets == 0 && is_ferry_folder && !mount_point() {
        return Err(NodeError::Medium(format!(
            "{} is named ferry: it looks like the ferry folder of a stick, one level too deep; give the stick's top folder instead ({}), or, to use this folder itself as the top of the medium, create {} first; nothing was read or written",
            root.display(),
            above(root, 1).display(),
            root.join("ferry").display()
        )));
    }
    if datasets > 0 {
        return Err(NodeError::Medium(format!(
            "{} is {} of a stick (it holds dataset folders directly), one level too deep: give the stick's top folder instead ({}); nothing was read or written",
            root.display(),
            if is_ferry_folder {
                "the ferry folder"
            } else {
                "like the ferry folder"
            },
            above(root, 1).display()
        )));
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

        let (mut found, mut skipped, mut other) = (Vec::new(), Vec::new(), Elsewhere::default());
        collect(root, "", &mut found, &mut skipped, &mut other).unwrap();
        let names = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
        let found: Vec<_> = found.iter().map(|f| names(&f.origin)).collect();
        assert_eq!(found, ["a.ferry", "sub/b.eml"]);
        assert_eq!(other.files, 1, "notes.txt");
        assert_eq!(other.examples, [root.join("notes.txt")]);
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
        let (mut found, mut skipped, mut other) = (Vec::new(), Vec::new(), Elsewhere::default());
        collect(&link, "", &mut found, &mut skipped, &mut other).unwrap();
        assert_eq!(found[0].origin, link);
        assert_eq!(found[0].path, file.canonicalize().unwrap());

        let fifo = dir.path().join("y.ferry");
        mkfifo(&fifo);
        let err = collect(&fifo, "", &mut found, &mut skipped, &mut other).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn a_stick_given_one_level_too_deep_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stick = dir.path().join("usb");
        let ferry = stick.join("ferry");
        let ours = ferry.join("0123456789abcdef");
        std::fs::create_dir_all(&ours).unwrap();
        let folder = |root: &Path| root.join("ferry").join("0123456789abcdef");
        assert!(check_bundle_folder(&stick, &folder(&stick)).is_ok());
        for (root, words) in [
            (&ferry, "one level too deep"),
            (&ours, "the folder of one dataset"),
        ] {
            let err = check_bundle_folder(root, &folder(root)).unwrap_err();
            assert!(err.to_string().contains(words), "{err}");
            let top = stick.canonicalize().unwrap();
            assert!(
                err.to_string().contains(&top.display().to_string()),
                "{err}"
            );
        }
        // A folder named like no part of a stick is a medium (a new, empty one).
        let fresh = dir.path().join("shared");
        std::fs::create_dir(&fresh).unwrap();
        assert!(check_bundle_folder(&fresh, &folder(&fresh)).is_ok());
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
