//! ferry's serial and packet-radio transport: resumable sessions over slow, lossy,
//! half-duplex links — a serial cable, a transparent radio modem (LoRa, HF), or a TNC
//! speaking KISS (Direwolf, hardware TNCs) with AX.25 UI frames.
//!
//! **Architecture Invariant:** this crate moves opaque messages. It never parses a bundle;
//! the node decides what to send and what a received message means.
//!
//! # Using a session
//!
//! Both ends open a [`Session`] on their device, each with its own *state folder* (where
//! partly received messages are kept). The node then runs its sync protocol on top:
//!
//! ```no_run
//! use ferry_transport_serial::{SerialConfig, Session};
//! # fn main() -> Result<(), ferry_transport_serial::SerialError> {
//! let config = SerialConfig { device: Some("/dev/ttyUSB0".into()), baud: 1200, ..Default::default() };
//! let session = Session::open(&config, "/home/me/.local/share/ferry/serial")?;
//! session.send(b"my receipt".to_vec())?;          // queued; returns at once
//! let receipt = session.recv()?.expect("peer sent its receipt");
//! // … check who the peer is from `receipt.data`; only then take its large messages:
//! session.admit_peer()?;
//! session.send(b"what the peer lacks".to_vec())?;
//! let delta = session.recv()?.expect("peer sent its delta");
//! // … apply `delta.data` …
//! let stats = session.close()?;                    // waits until both ends hold everything
//! # let _ = (receipt, stats); Ok(()) }
//! ```
//!
//! Messages go both ways at once; each end's messages arrive in the order they were sent.
//!
//! # Resume
//!
//! A message is named by its BLAKE3 hash. The receiver keeps every part it gets in its
//! state folder, flushed to disk before it acknowledges it. When a link drops, a process
//! restarts or another radio is used, the next session OFFERs the same message (the node
//! keeps the same bytes until they are delivered), the receiver answers with the ranges it
//! still lacks, and only those are sent. The layout of the state folder is documented in
//! the `store` module: `rx/parts/<hash>/` (a group of `ferry_transport::parts`) for parts,
//! `rx/<hash>.msg` for whole messages, `airtime.log` for the duty cycle.
//!
//! # Strangers
//!
//! Whoever is at the other end is a stranger until the application, having checked who it
//! is, calls [`Session::admit_peer`]. Until then the session takes at most a few small
//! messages from it, in memory (nothing reaches the state folder), lets larger offers wait
//! unanswered, and answers a bounded number of its frames; a listening session
//! ([`Session::open_listening`]) also ends once nothing has moved for `timeout`, however the
//! other end keeps the link alive, and [`Session::recv_by`] bounds the opening of an
//! exchange. Once admitted, the peer's messages go to the state folder, which holds at most
//! [`RX_MAX_MESSAGES`] messages and [`RX_MAX_BYTES`] bytes counted by apparent size, oldest
//! removed first.
//!
//! # Threads, not async
//!
//! The API is blocking. [`Session::open`] starts two threads: one reads the device and
//! decodes frames, the other runs the protocol (a state machine that takes frames and the
//! time and returns frames and events), paces writes, and keeps answering the peer while the
//! application is busy. Calls wait on the
//! session's state, and every wait ends with [`SerialError::LinkLost`] once the other end
//! has been silent for `timeout` seconds. Devices are opened with `serialport` (no libudev).
//!
//! # What is on the link
//!
//! See the `wire` module for the frame layout and the `link` module for raw (SLIP-style)
//! and KISS/AX.25 encapsulation. A DATA frame adds [`DATA_FRAME_OVERHEAD`] bytes to the
//! message bytes it carries (`mtu`, 200 by default), plus escaping (about 0.8 % for random
//! bytes) and two delimiters; KISS adds 16 bytes of AX.25 addresses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod airtime;
mod config;
mod crc;
mod engine;
mod error;
mod fault;
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod politeness;
mod progress;
mod ranges;
mod session;
#[cfg(test)]
mod sim;
mod store;
mod transport;
mod wire;

pub use config::{MAX_MTU, MAX_WINDOW, MIN_MTU, SerialConfig};
pub use engine::{
    HANDSHAKE_MAX, MAX_DEFERRED, MAX_RX_PARTIALS, PREAUTH_ANSWERS, PREAUTH_MESSAGES,
    RX_SESSION_BYTES, SessionStats,
};
pub use error::SerialError;
pub use link::{AX25_HEADER, Callsign};
pub use progress::{Flow, NoProgress, Progress, ProgressReport};
pub use session::{Received, Session};
pub use store::{RX_MAX_BYTES, RX_MAX_MESSAGES};
pub use transport::SerialTransport;
pub use wire::{DATA_FRAME_OVERHEAD, FrameKind};

use std::fmt;
use std::str::FromStr;

/// Largest message the serial transport carries: 16 MiB (a day and a half at 1200 baud;
/// the node splits larger bundles).
pub const MAX_MESSAGE: u64 = 16 << 20;

/// A message's BLAKE3 hash: its name on the link and in the state folder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageHash(pub [u8; 32]);

impl MessageHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> MessageHash {
        MessageHash(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageHash({self})")
    }
}

impl FromStr for MessageHash {
    type Err = String;

    fn from_str(s: &str) -> Result<MessageHash, String> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(format!("{s:?} is not a 64-digit hex hash"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| format!("{s:?} is not hex"))?;
        }
        Ok(MessageHash(out))
    }
}
