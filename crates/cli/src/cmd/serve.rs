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
    let opts = ferry_serve::Options {
        bind: a.bind,
        watch: a.watch,
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
