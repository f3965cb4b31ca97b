//! `ferry serve` (the local API for apps) and `ferry token` (its access token).

use super::open;
use crate::output::out;
use anyhow::Result;
use clap::Args;
use ferry_node::Home;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Where to listen: an address of this computer (127.0.0.1 or [::1]) and a port (0: any
    /// free port, printed at start)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7040")]
    bind: SocketAddr,
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
    let opts = ferry_serve::Options {
        bind: a.bind,
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
            let _ = out(format_args!(
                "ferry serve: listening on http://{}",
                ready.addr
            ));
            let _ = out(format_args!(
                "apps send the token in {} (`ferry token` prints it) as Authorization: Bearer TOKEN; API description: http://{}/v1/openapi.json; stop with Ctrl-C",
                token_file.display(),
                ready.addr
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
    let listening = addr.parse::<SocketAddr>().is_ok_and(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
    });
    if !listening {
        anyhow::bail!(
            "ferry serve is not running on this home (it last listened on {addr}): start it (ferry serve), then run ferry page again"
        );
    }
    let key = home.new_page_key()?;
    out(format_args!("http://{addr}/login?key={key}"))
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
}
