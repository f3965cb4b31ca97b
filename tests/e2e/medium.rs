//! What a hostile or damaged medium (a stick, a saved email) and an interrupted command can
//! do to the real `ferry` binary: special files and loops on a stick (issue 10 finding 6),
//! terminal injection through ids, names, values and file names (finding 8, and issue 18
//! finding 11's overlong strings), junk under ferry's file names (finding 9), and temporary
//! files of killed commands (finding 10).

use crate::util::{Laptop, files, s, three};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Standard output and error of a run, for failure messages.
fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of standard output that names `needle`; it must start with `keyword`.
#[track_caller]
fn line_for(out: &Output, needle: &str, keyword: &str) -> String {
    let line = stdout(out)
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line names {needle:?}\n{}", text(out)))
        .to_string();
    assert!(
        line.starts_with(keyword),
        "the line for {needle:?} should start with {keyword:?}: {line:?}\n{}",
        text(out)
    );
    line
}

/// Runs `ferry` with a time limit: a hang is a failure, not a stuck test run.
fn within(limit: Duration, l: &Laptop, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = l
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("spawn ferry");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferry {args:?} did not finish within {} s; killed it. Output so far:\n{}{}",
                limit.as_secs(),
                std::fs::read_to_string(&o).unwrap_or_default(),
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}

const LIMIT: Duration = Duration::from_secs(60);

/// HQ's bundle with a new visit `v-good` on a new stick; the stick and its dataset folder.
fn good_bundle_on_stick(base: &Path, hq: &Laptop, name: &str) -> (PathBuf, PathBuf) {
    hq.ok(&["put", "visits", "v-good", "village=Obunga"]);
    let st = base.join(name);
    std::fs::create_dir_all(&st).unwrap();
    hq.ok(&["export", s(&st)]);
    let ferry = st.join("ferry");
    let folder = std::fs::read_dir(&ferry)
        .unwrap()
        .next()
        .expect("export made the dataset folder")
        .unwrap()
        .path();
    (st, folder)
}

fn has_good(l: &Laptop) -> bool {
    l.list("visits").contains("v-good")
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo (coreutils) is needed");
}

/// Fails (never skips) unless the tests run as root, as CI does.
fn require_root(what: &str) {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{what} needs root (it makes a bind mount or a device node); CI runs the tests as root"
    );
}

// ---------------------------------------------------------------------------------------
// Issue 10, finding 6: symlinks, special files and loops on a stick
// ---------------------------------------------------------------------------------------

/// Issue 10, finding 6: a stick holding, beside a good bundle, links that loop (`loop ->
/// .`, `up -> ..`), a link to `/dev/zero` and one to a folder outside the stick that holds
/// a bundle, a FIFO, a Unix socket and a character device (`mknod`, as root), all under
/// bundle names. `sync` finishes, applies the good bundle only, prints one `skipped` line
/// per entry that says what it is, exits 0 (nothing was refused), and a second sync does
/// the same.
#[test]
#[ignore = "needs root to make a device node (mknod) — run tests/run"]
fn links_fifos_sockets_and_devices_on_a_stick_are_skipped_with_one_line_each() {
    require_root("this test");
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    // B's change, exported to a folder off the stick that a link points to.
    b.ok(&["put", "visits", "v-outside", "x=1"]);
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    b.ok(&["export", s(&outside)]);
    let outside_folder = files(&outside)[0].parent().unwrap().to_path_buf();

    let (st, folder) = good_bundle_on_stick(base, &hq, "stick");
    std::os::unix::fs::symlink(".", folder.join("loop.ferry")).unwrap();
    std::os::unix::fs::symlink("..", folder.join("up")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", folder.join("zero.ferry")).unwrap();
    std::os::unix::fs::symlink(&outside_folder, folder.join("elsewhere")).unwrap();
    mkfifo(&folder.join("fifo.ferry"));
    let _socket = std::os::unix::net::UnixListener::bind(folder.join("socket.ferry")).unwrap();
    let made = Command::new("mknod")
        .arg(folder.join("device.ferry"))
        .args(["c", "1", "5"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mknod failed");

    for round in 0..2 {
        let out = within(LIMIT, &a, &["sync", s(&st)]);
        assert_eq!(out.status.code(), Some(0), "round {round}\n{}", text(&out));
        for (name, what) in [
            ("loop.ferry", "a symbolic link"),
            ("up", "a symbolic link"),
            ("zero.ferry", "a symbolic link"),
            ("elsewhere", "a symbolic link"),
            ("fifo.ferry", "a FIFO"),
            ("socket.ferry", "a socket"),
            ("device.ferry", "a character device"),
        ] {
            let line = line_for(&out, &format!("/{name}:"), "skipped");
            assert!(line.contains(what), "{line}");
            let lines = stdout(&out)
                .lines()
                .filter(|l| l.contains(&format!("/{name}:")))
                .count();
            assert_eq!(lines, 1, "one line for {name}\n{}", text(&out));
        }
    }
    assert!(has_good(&a));
    assert!(
        !a.list("visits").contains("v-outside"),
        "a bundle outside the stick was read through a link"
    );
}

/// A bind mount of a folder somewhere below itself, unmounted when dropped.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue 10, finding 6 (loops that are not links): the stick's dataset folder bind-mounted
/// below itself (a loop no `symlink_metadata` shows). `sync` finishes, reads the bundle once
/// and says it met the same folder again.
#[test]
#[ignore = "needs root for a bind mount — run tests/run"]
fn a_bind_mount_loop_on_a_stick_is_read_once() {
    require_root("this test");
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let (st, folder) = good_bundle_on_stick(base, &hq, "stick");
    let again = folder.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let ok = Command::new("mount")
        .arg("--bind")
        .arg(&folder)
        .arg(&again)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount --bind failed (this test needs root)");
    let _mount = BindMount(again.clone());

    let out = within(LIMIT, &a, &["sync", s(&st)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = line_for(&out, "/again", "skipped");
    assert!(line.contains("already read"), "{line}");
    let applied = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("applied"))
        .count();
    assert_eq!(applied, 1, "{}", text(&out));
    assert!(has_good(&a));
}

/// Issue 10, finding 6 (a path given on the command line): `import` and `verify` of a FIFO,
/// of `/dev/zero` and of a link to `/dev/zero` are refused with one error line (exit 1)
/// instead of hanging; a link to a real bundle given on the command line is followed.
#[test]
fn a_fifo_or_device_named_on_the_command_line_is_refused_with_one_line() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let fifo = base.join("fifo.ferry");
    mkfifo(&fifo);
    let zero = base.join("zero.ferry");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (path, what) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "character device"),
        (zero.as_path(), "character device"),
    ] {
        for cmd in ["import", "verify"] {
            let out = within(LIMIT, &a, &[cmd, s(path)]);
            assert_eq!(out.status.code(), Some(1), "{cmd}\n{}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{cmd}: one line\n{}", text(&out));
            assert!(err.contains(what), "{cmd}\n{}", text(&out));
        }
    }

    let (_st, folder) = good_bundle_on_stick(base, &hq, "stick");
    let bundle = files(&folder)[0].clone();
    let link = base.join("link.ferry");
    std::os::unix::fs::symlink(&bundle, &link).unwrap();
    a.ok(&["verify", s(&link)]);
    let out = a.ok(&["import", s(&link)]);
    assert!(out.starts_with("applied"), "{out}");
    assert!(has_good(&a));
}

/// Issue 10, finding 6 (links on the way to the bundles): a stick whose `ferry` folder is a
/// link to a folder elsewhere (here one holding a bundle). `sync` refuses with one line that
/// names the link, reads nothing through it and writes nothing through it.
#[test]
fn a_linked_ferry_folder_on_a_stick_is_refused_and_nothing_is_written_through_it() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let (_st, _folder) = good_bundle_on_stick(base, &hq, "elsewhere");
    let before = files(&base.join("elsewhere"));
    let st = base.join("stick");
    std::fs::create_dir_all(&st).unwrap();
    std::os::unix::fs::symlink(base.join("elsewhere").join("ferry"), st.join("ferry")).unwrap();
    a.ok(&["put", "visits", "v-a", "x=1"]);

    let out = within(LIMIT, &a, &["sync", s(&st)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", text(&out));
    assert!(err.contains("symbolic link"), "{}", text(&out));
    assert!(!has_good(&a), "a bundle was read through the link");
    assert_eq!(
        files(&base.join("elsewhere")),
        before,
        "a bundle was written through the link"
    );
    let out = within(LIMIT, &a, &["export", s(&st)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(files(&base.join("elsewhere")), before);
}

// ---------------------------------------------------------------------------------------
// Issue 10, finding 9: junk under ferry's names
// ---------------------------------------------------------------------------------------

/// The tag that marks the emails of a laptop's dataset.
fn email_tag(l: &Laptop) -> ferry_transport_email::DatasetTag {
    ferry_node::Node::open(&ferry_node::Home::at(&l.home))
        .unwrap()
        .email_tag()
}

/// Issue 10, finding 9: a `.ferry` file that reads like an email, an ordinary email saved as
/// `.eml` (no ferry attachment) and a text file named `.ferrypart` were skipped silently.
/// Each is REFUSED (with a hint for the email-like bundle), quarantined, exit 1; the good
/// bundle beside them applies; a second sync reports them as refused before (exit 0).
#[test]
fn junk_under_bundle_and_email_names_is_refused_and_quarantined() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let (st, folder) = good_bundle_on_stick(base, &hq, "stick");
    std::fs::write(
        folder.join("mail.ferry"),
        b"From: x@y\nSubject: hi\n\nbody\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("letter.eml"),
        b"From: ana@example.org\r\nTo: ben@example.org\r\nSubject: lunch\r\n\r\nSee you at one.\r\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("notes.ferrypart"),
        b"shopping list: rice, beans\n",
    )
    .unwrap();

    let out = a.run(&["sync", s(&st)]);
    assert!(has_good(&a), "{}", text(&out));
    let line = line_for(&out, "mail.ferry", "REFUSED");
    assert!(
        line.contains(".eml"),
        "a hint to save emails as .eml: {line}"
    );
    let line = line_for(&out, "letter.eml", "REFUSED");
    assert!(line.contains("no ferry bundle or part"), "{line}");
    line_for(&out, "notes.ferrypart", "REFUSED");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(a.status()["quarantined"].as_u64().unwrap() >= 3);
    let kept = files(&a.home.join("quarantine"));
    for name in ["mail.ferry", "letter.eml", "notes.ferrypart"] {
        assert!(
            kept.iter().any(|p| s(p).ends_with(name)),
            "{name} not in quarantine: {kept:?}"
        );
    }

    let again = a.run(&["sync", s(&st)]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    for name in ["mail.ferry", "letter.eml", "notes.ferrypart"] {
        let line = line_for(&again, name, "skipped");
        assert!(line.contains("refused before"), "{line}");
    }
}

/// Issue 10, finding 9, the other side: what *is* ferry's still goes through the saved-email
/// path — an email carrying a bundle, saved as `.eml`, applies; imported again it says
/// "already applied" (it said nothing before); a ferry email of another dataset is skipped
/// with a line, not refused.
#[test]
fn a_saved_ferry_email_applies_and_says_so_when_imported_again() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let (_st, folder) = good_bundle_on_stick(base, &hq, "stick");
    let bundle = files(&folder)[0].clone();
    let name = bundle.file_stem().unwrap().to_string_lossy().into_owned();
    let email = ferry_transport_email::mime::render_email(
        "hq@example.org",
        "clinic-a@example.org",
        &email_tag(&hq),
        &name,
        &std::fs::read(&bundle).unwrap(),
    )
    .unwrap();
    let eml = base.join("from-hq.eml");
    std::fs::write(&eml, &email).unwrap();

    let out = a.run(&["import", s(&eml)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).starts_with("applied"), "{}", text(&out));
    assert!(has_good(&a));
    let out = a.run(&["import", s(&eml)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = line_for(&out, "from-hq.eml", "skipped");
    assert!(line.contains("already applied"), "{line}");

    let other = ferry_transport_email::mime::render_email(
        "hq@example.org",
        "clinic-a@example.org",
        &ferry_transport_email::DatasetTag::new([0x11; 32]),
        &name,
        &std::fs::read(&bundle).unwrap(),
    )
    .unwrap();
    let eml = base.join("other-dataset.eml");
    std::fs::write(&eml, other).unwrap();
    let out = a.run(&["import", s(&eml)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = line_for(&out, "other-dataset.eml", "skipped");
    assert!(line.contains("another dataset"), "{line}");
}

// ---------------------------------------------------------------------------------------
// Issue 10, finding 10: temporary files of killed commands
// ---------------------------------------------------------------------------------------

/// Temporary files in a home's `outbox/` and `inbox/`.
fn temporaries(home: &Path) -> Vec<PathBuf> {
    ["outbox", "inbox"]
        .iter()
        .flat_map(|d| files(&home.join(d)))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with('.') || name.ends_with(".tmp")
        })
        .collect()
}

/// HQ holding 200 000 records that clinic A (invited) lacks, so an export writes a large
/// bundle for a few seconds.
fn hq_with_200k_records(base: &Path) -> Laptop {
    let (hq, _a, _b) = three(base);
    let mut jsonl = String::with_capacity(200_000 * 180);
    for i in 0..200_000u64 {
        // A photo's worth of hash per record, which no compression shrinks: the export
        // takes a while even at the fast level columnar bundles use.
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut photo = String::with_capacity(128);
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            photo.push_str(&format!("{x:016x}"));
        }
        jsonl.push_str(&format!(
            "{{\"id\":\"r{i:06}\",\"village\":\"v{}\",\"n\":{i},\"photo\":\"{photo}\"}}\n",
            i % 97
        ));
    }
    let input = base.join("records.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    hq.ok(&["load", "visits", s(&input)]);
    hq
}

/// Starts `ferry export` and waits until its temporary file is in the outbox.
fn export_until_staged(hq: &Laptop, stick: &Path) -> (std::process::Child, PathBuf) {
    std::fs::create_dir_all(stick).unwrap();
    let mut child = hq
        .cmd(&["export", s(stick)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(tmp) = temporaries(&hq.home).into_iter().next() {
            return (child, tmp);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the export ended ({status}) before its temporary file was seen");
        }
        assert!(start.elapsed() < LIMIT, "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Issue 10, finding 10: an export of 200 000 records killed with SIGKILL while it writes
/// its bundle leaves its temporary file in `outbox/`; the next command of any kind (here a
/// read-only `get`) removes it, and the files of an older ferry's killed receive in
/// `inbox/` too.
#[test]
fn an_export_killed_with_sigkill_leaves_no_temporary_file_after_the_next_command() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = hq_with_200k_records(base);
    let (mut child, tmp) = export_until_staged(&hq, &base.join("stick"));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    assert!(
        tmp.exists(),
        "the killed export left no temporary file to sweep"
    );
    let inbox = hq.home.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join(".00112233aabbccdd.tmp"), b"half a bundle").unwrap();
    std::fs::write(inbox.join("00112233aabbccdd.ferry"), b"an older ferry's").unwrap();

    hq.ok(&["get", "visits", "r000001"]);
    let left = temporaries(&hq.home);
    assert!(left.is_empty(), "temporary files stay: {left:?}");
    assert!(
        !inbox.join("00112233aabbccdd.ferry").exists(),
        "an older ferry's staging file stays"
    );
    // And a new export works.
    let stick2 = base.join("stick2");
    std::fs::create_dir_all(&stick2).unwrap();
    let out = hq.ok(&["export", s(&stick2)]);
    assert!(out.starts_with("wrote"), "{out}");
}

/// Issue 10, finding 10 (the other side): sweeping never removes the temporary file of a
/// writer that is alive. While a large export writes its bundle, `ferry status` runs again
/// and again on the same home (each run sweeps); the export's file stays until the export
/// itself has published its bundle on the stick, the export completes, and clinic A
/// imports what it wrote.
#[test]
fn a_sweep_leaves_a_live_exports_temporary_file_alone() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = hq_with_200k_records(base);
    let stick = base.join("stick");
    let (child, tmp) = export_until_staged(&hq, &stick);
    let published = || {
        files(&stick)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "ferry"))
    };
    let mut swept_beside = 0;
    let child = std::sync::Mutex::new(child);
    let running = || child.lock().unwrap().try_wait().unwrap().is_none();
    while running() && tmp.exists() {
        hq.ok(&["status"]);
        // The export removes its own file only after its bundle is on the stick; checked in
        // this order (file first, stick second) a file gone before the bundle appeared can
        // only have been removed by the sweep.
        let gone = !tmp.exists();
        assert!(
            !gone || published(),
            "a sweep removed a live export's temporary file"
        );
        if !gone {
            swept_beside += 1;
        }
    }
    let out = child.into_inner().unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).starts_with("wrote"), "{}", text(&out));
    assert!(
        swept_beside > 0,
        "the export ended before any sweep ran beside it"
    );
    assert!(temporaries(&hq.home).is_empty());
    let a = Laptop::new(base, "a");
    let out = a.ok(&["import", s(&stick)]);
    assert!(
        a.ok(&["get", "visits", "r199999"]).contains("199999"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Issue 10, finding 8 (and issue 18, finding 11): terminal injection, overlong strings
// ---------------------------------------------------------------------------------------

/// The control characters, bidi overrides and forged line starts used below.
const ESC: &str = "\x1b[2J\x1b[H";
const BIDI: &str = "\u{202e}";
const FORGED: &str = "applied all good";

/// Fails if `bytes` (one stream of a run) holds a raw control character other than the
/// line-ending `\n`, a C1 control, a bidi control, or a line that starts with the forged
/// keyword.
#[track_caller]
fn check_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let bad: Vec<char> = text
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(
        bad.is_empty(),
        "`{what}` wrote raw control characters {bad:?}: {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with(FORGED)),
        "`{what}` printed a forged line: {text:?}"
    );
}

/// Issue 10, finding 8: ids, field names, text values and stick file names holding ESC,
/// `\r`, `\n`, a C1 control and a bidi override; labels and the dataset name holding bidi
/// controls (`init` and `invite` refuse control characters in them). HQ writes such records
/// and a conflicting value; clinic A syncs from a stick that also holds junk and a link
/// with such names. `import`, `sync`, `list`, `get`
/// (also `--conflicts`), `conflicts`, `status` and `verify` print no raw control or bidi
/// character (only line-ending newlines) and no forged line; the escapes are visible.
#[test]
fn control_characters_and_bidi_overrides_reach_no_terminal() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = Laptop::new(base, "hq");
    let hq_label = format!("hq{BIDI}lebal\u{2066}");
    let dataset = format!("visits{BIDI}gnp.exe");
    hq.ok(&["init", "--name", &hq_label, "--create", &dataset]);
    let inv = base.join("a.invite");
    let code = hq.invite(&inv, &format!("clinic-a{BIDI}"));
    let a = Laptop::new(base, "a");
    a.join(&format!("clinic-a{BIDI}"), &inv, code.as_deref());

    let id = format!("v{ESC}\r{FORGED}\nid{BIDI}");
    let field = format!("f\x1b[31m\r{FORGED}\n");
    let value = format!("val\x1b]0;pwned\x07\r\n{FORGED}{BIDI}\u{85}");
    hq.ok(&["put", "visits", &id, &format!("{field}={value}"), "plain=1"]);
    let st = base.join("stick");
    std::fs::create_dir_all(&st).unwrap();
    hq.ok(&["sync", s(&st)]);
    a.ok(&["sync", s(&st)]);
    // A conflict on the hostile field: both edit it before the next stick.
    hq.ok(&["put", "visits", &id, &format!("{field}=hq {value}")]);
    a.ok(&["put", "visits", &id, &format!("{field}=a {value}")]);
    let st2 = base.join("stick2");
    std::fs::create_dir_all(&st2).unwrap();
    hq.ok(&["sync", s(&st2)]);
    let folder = std::fs::read_dir(st2.join("ferry"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for name in [
        format!("e{ESC}x.ferry"),
        format!("x\r{FORGED}.ferry"),
        format!("n\n{FORGED}.ferry"),
        format!("b{BIDI}yrref.exe.ferry"),
        "m\u{9b}2J.eml".to_string(),
    ] {
        std::fs::write(folder.join(name), b"junk, not a bundle").unwrap();
    }
    std::os::unix::fs::symlink(".", folder.join(format!("l\r{FORGED}\n"))).unwrap();

    let import = a.run(&["import", s(&folder)]);
    check_clean("ferry import", &import.stdout);
    check_clean("ferry import (stderr)", &import.stderr);
    // The file names are shown, escaped.
    let out = stdout(&import);
    assert!(out.contains("e\\e[2J\\e[Hx.ferry"), "{out}");
    assert!(out.contains("x\\rapplied all good.ferry"), "{out}");
    assert!(out.contains("b\\u{202e}yrref.exe.ferry"), "{out}");
    assert!(
        out.contains("from hq\\u{202e}lebal\\u{2066}"),
        "the sender's label: {out}"
    );
    let sync = a.run(&["sync", s(&st2)]);
    check_clean("ferry sync", &sync.stdout);
    check_clean("ferry sync (stderr)", &sync.stderr);

    for (what, out) in [
        ("ferry list", a.run(&["list", "visits"])),
        ("ferry get", a.run(&["get", "visits", &id])),
        (
            "ferry get --conflicts",
            a.run(&["get", "visits", &id, "--conflicts"]),
        ),
        ("ferry conflicts", a.run(&["conflicts"])),
        ("ferry status", a.run(&["status"])),
        ("ferry status (hq)", hq.run(&["status"])),
        ("ferry contact list", a.run(&["contact", "list"])),
        (
            "ferry get (missing)",
            a.run(&["get", "visits", &format!("{id}-none")]),
        ),
    ] {
        check_clean(what, &out.stdout);
        check_clean(&format!("{what} (stderr)"), &out.stderr);
        assert!(
            !out.stdout.is_empty() || !out.stderr.is_empty(),
            "{what} printed nothing"
        );
    }
    let list = stdout(&a.run(&["list", "visits"]));
    assert!(
        list.contains("v\\e[2J\\e[H\\rapplied all good\\nid\\u{202e}"),
        "{list}"
    );
    let conflicts = stdout(&a.run(&["conflicts"]));
    assert!(conflicts.contains("edited at the same time"), "{conflicts}");
    let status = stdout(&a.run(&["status"]));
    assert!(status.contains("visits\\u{202e}gnp.exe"), "{status}");

    let bundle = files(&folder)
        .into_iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.len() == 38 && name.ends_with(".ferry")
        })
        .expect("HQ's bundle on the stick");
    let verify = a.run(&["verify", s(&bundle)]);
    check_clean("ferry verify", &verify.stdout);
    check_clean("ferry verify (stderr)", &verify.stderr);
}

/// Issue 18, finding 11 (a 17 KB string was printed whole): a 1 000-character id (the
/// longest allowed) and a 17 000-character value. The lines `list` and `get` print are cut
/// to well under the strings' size and say how long they were; `--json` still gives the
/// whole value.
#[test]
fn overlong_ids_names_and_values_are_cut_with_their_length() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let long = "x".repeat(17_000);
    let id = format!("id-{}", "y".repeat(997));
    hq.ok(&["put", "visits", &id, &format!("note=v{long}")]);
    let st = base.join("stick");
    std::fs::create_dir_all(&st).unwrap();
    hq.ok(&["sync", s(&st)]);
    let sync = a.run(&["sync", s(&st)]);
    assert!(sync.status.success(), "{}", text(&sync));
    for (what, out, cuts) in [
        ("list", a.run(&["list", "visits"]), &[1000, 17_001][..]),
        ("get", a.run(&["get", "visits", &id]), &[17_001][..]),
    ] {
        let out = stdout(&out);
        for len in cuts {
            let cut = format!("… ({len} characters in all)");
            assert!(out.contains(&cut), "{what}: no {cut:?} in {:.600}", out);
        }
        let longest = out.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 2_000, "{what} printed a {longest}-byte line");
    }
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["get", "visits", &id, "--json"])).unwrap();
    assert!(json["note"] == format!("v{long}"), "--json cut the value");
}
