//! `ferry serve` (the local API for apps) and `ferry token` (its access token).

use super::open;
use crate::output::out;
use anyhow::Result;
use clap::Args;
use ferry_node::Home;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Where to listen: an address of this computer (127.0.0.1 or [::1]) and a port (0: any
    /// free port, printed at start); another address only with --allow-remote
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7040")]
    bind: SocketAddr,
    /// Listen on an address other computers reach (with --bind 0.0.0.0:PORT or a LAN
    /// address): only over HTTPS, so --tls-cert and --tls-key are needed too; every request
    /// still needs the token
    #[arg(long)]
    allow_remote: bool,
    /// The HTTPS certificate (a PEM file, with its chain) for --allow-remote
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The HTTPS private key (a PEM file) for --allow-remote
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A folder where sticks appear (for example /media/clinic): it, and every folder
    /// directly in it, is synced as soon as it appears holding a ferry/ folder (repeatable)
    #[arg(long, value_name = "DIR")]
    watch: Vec<PathBuf>,
    /// How often to exchange by email (receive, then send what the others lack): 30s, 15m,
    /// 2h, or off. Default: every 15 minutes when ferry.toml has an [email] section. After a
    /// failure it tries again after 30 s, then less and less often (up to an hour)
    #[arg(long, value_name = "INTERVAL", value_parser = parse_every)]
    email_every: Option<Every>,
    /// How often to exchange by SMS: as --email-every. Default: every hour when ferry.toml
    /// has an [sms] section (each member's daily SMS budget still applies)
    #[arg(long, value_name = "INTERVAL", value_parser = parse_every)]
    sms_every: Option<Every>,
    /// Do not exchange over the serial radio by itself (by default, when ferry.toml names a
    /// [serial] device, one exchange runs each time that device appears)
    #[arg(long)]
    no_serial: bool,
    /// Do not serve now: write a systemd user unit that starts `ferry serve` with these
    /// options at boot (~/.config/systemd/user/ferry.service), and enable it when systemd
    /// is there (otherwise print the commands)
    #[arg(long)]
    install: bool,
}

/// An interval given on the command line, or off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Every {
    Off,
    Each(std::time::Duration),
}

/// `30s`, `15m`, `2h`, `1d`, a number of seconds, or `off` / `0`.
pub(crate) fn parse_every(text: &str) -> Result<Every, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "off" || t == "0" || t == "never" {
        return Ok(Every::Off);
    }
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: give a number and a unit, like 30s, 15m or 2h, or off"))?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60,
        "h" | "hour" | "hours" => n * 3600,
        "d" | "day" | "days" => n * 86_400,
        u => {
            return Err(format!(
                "{text:?}: unknown unit {u:?}; use s, m, h or d (30s, 15m, 2h)"
            ));
        }
    };
    if secs == 0 {
        return Ok(Every::Off);
    }
    Ok(Every::Each(std::time::Duration::from_secs(secs)))
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// Replace the token with a new one: apps that hold the old one are refused from now on
    #[arg(long)]
    rotate: bool,
}

/// `ferry serve`: runs until Ctrl-C or SIGTERM.
pub(crate) fn serve(home: Option<PathBuf>, a: ServeArgs) -> Result<()> {
    if a.install {
        return install(home, &a);
    }
    let node = open(home)?;
    let token_file = node.home().api_token_file();
    for w in &a.watch {
        if !w.is_dir() {
            anyhow::bail!(
                "--watch {}: no such folder; give the folder where this computer mounts USB sticks (for example /media/$USER), once it exists",
                w.display()
            );
        }
    }
    // What runs by itself: given intervals, else the defaults for what ferry.toml sets up.
    let mut every = Vec::new();
    let mut told = Vec::new();
    for (carrier, given, section, default) in [
        (ferry_serve::Carrier::Email, a.email_every, "email", 15 * 60),
        (ferry_serve::Carrier::Sms, a.sms_every, "sms", 3600),
    ] {
        let configured = node.config_section(section)?.is_some();
        let interval = match given {
            Some(Every::Off) => None,
            Some(Every::Each(d)) => Some(d),
            None if configured => Some(std::time::Duration::from_secs(default)),
            None => None,
        };
        if let Some(d) = interval {
            if !configured {
                anyhow::bail!(
                    "--{section}-every: {section} is not set up on this laptop; add an [{section}] section to {} first (see the README)",
                    node.home().config().display()
                );
            }
            every.push(ferry_serve::Every { carrier, every: d });
            told.push(format!("{section} every {}", human(d)));
        }
    }
    let serial = match a.no_serial {
        true => None,
        false => ferry_serve::serial_device(&node),
    };
    if let Some(d) = &serial {
        told.push(format!("serial radio each time {} appears", d.display()));
    }
    // Who may connect: ferry's one listener policy, then the explicit yes beyond loopback.
    if !ferry_listen::is_loopback(&a.bind) && !a.allow_remote {
        anyhow::bail!(
            "--bind {}: other computers can reach that address; say so with --allow-remote (HTTPS with --tls-cert and --tls-key is needed too), or give --bind 127.0.0.1:PORT",
            a.bind
        );
    }
    let token = node.home().ensure_api_token()?;
    let policy = ferry_listen::ListenPolicy::decide(
        &a.bind.to_string(),
        Some(token),
        a.tls_cert.as_deref(),
        a.tls_key.as_deref(),
        &LISTEN_HINTS,
    )?;
    let opts = ferry_serve::Options {
        bind: a.bind,
        tls: policy.tls,
        remote: a.allow_remote,
        watch: a.watch,
        every,
        serial,
    };
    let on_event: ferry_serve::OnEvent = std::sync::Arc::new(|line: &str| {
        let _ = out(format_args!("ferry serve: {line}"));
    });
    let ran = ferry_serve::run(
        node,
        opts,
        |ready| {
            // Tests and scripts read the first line for the address.
            let _ = out(format_args!("ferry serve: listening on {}", ready.url));
            let _ = out(format_args!(
                "apps send the token in {} (`ferry token` prints it) as Authorization: Bearer TOKEN; API description: {}/v1/openapi.json; stop with Ctrl-C",
                token_file.display(),
                ready.url
            ));
            if !told.is_empty() {
                let _ = out(format_args!("syncs by itself: {}", told.join("; ")));
            }
            let _ = out(format_args!(
                "status page (open this link in a browser on this computer; it works once, for 10 minutes; `ferry page` prints another): {}",
                ready.page_link
            ));
        },
        on_event,
    );
    match ran {
        Ok(()) => Ok(()),
        Err(ferry_serve::ServeError::Node(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

/// How `ferry serve`'s options are named when the listener policy refuses.
const LISTEN_HINTS: ferry_listen::Hints = ferry_listen::Hints {
    bind: "--bind",
    token: "a token (ferry token)",
    tls: "HTTPS (--tls-cert and --tls-key, PEM files)",
    cert: "--tls-cert",
    key: "--tls-key",
};

/// The interval as `--email-every` takes it back.
fn every_arg(e: Every) -> String {
    match e {
        Every::Off => "off".into(),
        Every::Each(d) => format!("{}s", d.as_secs()),
    }
}

/// The `ferry serve` command line a unit runs: this program, the home and the options.
fn unit_args(exe: &Path, home: &Path, a: &ServeArgs) -> Vec<String> {
    let mut args = vec![
        exe.display().to_string(),
        "--home".into(),
        home.display().to_string(),
        "serve".into(),
        "--bind".into(),
        a.bind.to_string(),
    ];
    if a.allow_remote {
        args.push("--allow-remote".into());
    }
    for (flag, file) in [("--tls-cert", &a.tls_cert), ("--tls-key", &a.tls_key)] {
        if let Some(f) = file {
            args.extend([flag.into(), f.display().to_string()]);
        }
    }
    for w in &a.watch {
        args.push("--watch".into());
        args.push(w.display().to_string());
    }
    if let Some(e) = a.email_every {
        args.extend(["--email-every".into(), every_arg(e)]);
    }
    if let Some(e) = a.sms_every {
        args.extend(["--sms-every".into(), every_arg(e)]);
    }
    if a.no_serial {
        args.push("--no-serial".into());
    }
    args
}

/// One word of a systemd command line: quoted when it holds a space or a quote, with `%`
/// (systemd's specifiers), `\` and `"` escaped.
fn unit_word(w: &str) -> String {
    let escaped = w
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    match w.is_empty()
        || w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        true => format!("\"{escaped}\""),
        false => escaped,
    }
}

/// The text of the systemd user unit.
fn unit_text(args: &[String], home: &Path) -> String {
    let line: Vec<String> = args.iter().map(|w| unit_word(w)).collect();
    format!(
        "# Written by `ferry serve --install`; run it again to change the options.\n\
         [Unit]\n\
         Description=ferry for {home}: local API, status page, sync by itself\n\
         \n\
         [Service]\n\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         # The mail passwords named by smtp_password_env / imap_password_env in ferry.toml:\n\
         # EnvironmentFile=%h/.config/ferry/mail.env\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        line.join(" "),
        home = home.display().to_string().replace('%', "%%"),
    )
}

/// `ferry serve --install`: writes the unit and enables it (or says how).
fn install(home: Option<PathBuf>, a: &ServeArgs) -> Result<()> {
    let explicit = home.is_some();
    let home = Home::resolve(home)?;
    if !home.exists() {
        anyhow::bail!(
            "no ferry node in {}: run `ferry init` first, then `ferry serve --install`",
            home.root().display()
        );
    }
    for w in &a.watch {
        if !w.is_dir() {
            anyhow::bail!(
                "--watch {}: no such folder; give the folder where this computer mounts USB sticks (for example /media/$USER), once it exists",
                w.display()
            );
        }
    }
    let root = std::path::absolute(home.root())?;
    let exe = std::env::current_exe()?;
    let mut opts = ServeArgs {
        bind: a.bind,
        allow_remote: a.allow_remote,
        tls_cert: a.tls_cert.as_ref().map(std::path::absolute).transpose()?,
        tls_key: a.tls_key.as_ref().map(std::path::absolute).transpose()?,
        watch: a
            .watch
            .iter()
            .map(std::path::absolute)
            .collect::<std::io::Result<_>>()?,
        email_every: a.email_every,
        sms_every: a.sms_every,
        no_serial: a.no_serial,
        install: false,
    };
    opts.watch.dedup();
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => anyhow::bail!(
                "neither XDG_CONFIG_HOME nor HOME is set: cannot tell where systemd looks for user units"
            ),
        },
    };
    // One unit per home: the default home is `ferry`, another `ferry-FOLDER`.
    let name = match explicit {
        false => "ferry".to_string(),
        true => {
            let folder: String = root
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("ferry-{folder}")
        }
    };
    let dir = config.join("systemd").join("user");
    std::fs::create_dir_all(&dir)?;
    let unit = dir.join(format!("{name}.service"));
    let text = unit_text(&unit_args(&exe, &root, &opts), &root);
    let before = std::fs::read_to_string(&unit).ok();
    {
        use std::io::Write as _;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&unit)?;
    }
    out(format_args!(
        "{} {}",
        match before {
            Some(b) if b == text => "unchanged:",
            Some(_) => "replaced:",
            None => "wrote",
        },
        unit.display()
    ))?;
    let systemctl = |args: &[&str]| {
        std::process::Command::new("systemctl")
            .arg("--user")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let enable = format!("systemctl --user daemon-reload && systemctl --user enable --now {name}");
    if systemctl(&["daemon-reload"]) && systemctl(&["enable", "--now", &name]) {
        out(format_args!(
            "enabled and started {name}: it starts again whenever you log in; `sudo loginctl enable-linger $USER` starts it at boot, before anyone logs in; `journalctl --user -u {name}` shows what it prints; `ferry page` prints a link to the status page"
        ))?;
    } else {
        out(format_args!(
            "systemd did not answer here; where it runs, enable it with: {enable} (and `sudo loginctl enable-linger $USER` to start it at boot)"
        ))?;
    }
    Ok(())
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `ferry token`: prints the API token alone on one line (made now if there is none).
pub(crate) fn token(home: Option<PathBuf>, a: TokenArgs) -> Result<()> {
    let home = Home::resolve(home)?;
    if !home.exists() {
        return Err(ferry_node::NodeError::NoNode(home.root().to_path_buf()).into());
    }
    let token = match a.rotate {
        true => home.rotate_api_token()?,
        false => home.ensure_api_token()?,
    };
    out(format_args!("{token}"))
}

/// `ferry page`: prints a one-time link that opens the status page of the running
/// `ferry serve`.
pub(crate) fn page(home: Option<PathBuf>) -> Result<()> {
    let home = Home::resolve(home)?;
    if !home.exists() {
        return Err(ferry_node::NodeError::NoNode(home.root().to_path_buf()).into());
    }
    let Some(addr) = home.serve_addr() else {
        anyhow::bail!(
            "ferry serve has not run on this home yet: start it (ferry serve), then run ferry page again"
        );
    };
    // serve.addr holds the server's URL (`http://…`, `https://…`; an older one the address).
    let url = match addr.contains("://") {
        true => addr.clone(),
        false => format!("http://{addr}"),
    };
    let host = url.split_once("://").map(|(_, h)| h).unwrap_or(&url);
    let listening = host.parse::<SocketAddr>().is_ok_and(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
    });
    if !listening {
        anyhow::bail!(
            "ferry serve is not running on this home (it last listened on {addr}): start it (ferry serve), then run ferry page again"
        );
    }
    let key = home.new_page_key()?;
    out(format_args!("{url}/login?key={key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn intervals_are_read_as_people_write_them_and_nonsense_is_refused() {
        for (text, want) in [
            ("30s", Every::Each(Duration::from_secs(30))),
            ("15m", Every::Each(Duration::from_secs(900))),
            ("15 min", Every::Each(Duration::from_secs(900))),
            ("2h", Every::Each(Duration::from_secs(7200))),
            ("1d", Every::Each(Duration::from_secs(86_400))),
            ("45", Every::Each(Duration::from_secs(45))),
            ("off", Every::Off),
            ("0", Every::Off),
            ("0m", Every::Off),
        ] {
            assert_eq!(parse_every(text), Ok(want), "{text}");
        }
        for bad in ["", "m", "15x", "-5m", "1.5h", "soon"] {
            let e = parse_every(bad).unwrap_err();
            assert!(e.contains("30s") || e.contains("unit"), "{bad}: {e}");
        }
        assert_eq!(human(Duration::from_secs(900)), "15 min");
        assert_eq!(human(Duration::from_secs(7200)), "2 h");
        assert_eq!(human(Duration::from_secs(45)), "45 s");
    }

    #[test]
    fn the_unit_runs_this_program_on_this_home_with_the_options_given_quoted_for_systemd() {
        let a = ServeArgs {
            bind: "127.0.0.1:7040".parse().unwrap(),
            allow_remote: false,
            tls_cert: None,
            tls_key: None,
            watch: vec![
                PathBuf::from("/media/clinic staff"),
                PathBuf::from("/mnt/100%"),
            ],
            email_every: Some(Every::Each(Duration::from_secs(300))),
            sms_every: Some(Every::Off),
            no_serial: true,
            install: true,
        };
        let args = unit_args(
            Path::new("/opt/ferry/bin/ferry"),
            Path::new("/home/amina/ferry"),
            &a,
        );
        let text = unit_text(&args, Path::new("/home/amina/ferry"));
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_eq!(
            exec,
            "ExecStart=/opt/ferry/bin/ferry --home /home/amina/ferry serve --bind 127.0.0.1:7040 --watch \"/media/clinic staff\" --watch /mnt/100%% --email-every 300s --sms-every off --no-serial"
        );
        assert!(text.contains("[Install]\nWantedBy=default.target"));
        assert!(
            !args.contains(&"--install".to_string()),
            "the unit serves; it does not install"
        );
        // What the unit gives back parses to the same options.
        assert_eq!(
            parse_every(&args[args.len() - 4]),
            Ok(Every::Each(Duration::from_secs(300)))
        );
        assert_eq!(unit_word("a\"b"), "\"a\\\"b\"");
        assert_eq!(unit_word("c:\\x"), "\"c:\\\\x\"");
    }
}
