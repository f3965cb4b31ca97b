//! The mailbox view of a serial link, for the `ferry_transport::Transport` contract.

use crate::config::SerialConfig;
use crate::error::SerialError;
use crate::progress::{NoProgress, Progress};
use crate::session::{Mode, Session};
use crate::{MAX_MESSAGE, MessageHash};
use ferry_transport::{
    Capabilities, Direction, Disposition, MessageId, MessageInfo, Transport, TransportError,
};
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A serial link as a mailbox: a session that stays open, takes whatever the other end
/// sends into the state folder (`rx/<hash>.msg`), and lists it there.
///
/// Unlike [`Session`], it does not call out by itself (it answers when called, as
/// `ferry serial listen` should) and a restart of the other end is never an error.
/// [`Transport::send`] blocks until the other end holds the message.
pub struct SerialTransport {
    session: Session,
    capabilities: Capabilities,
}

impl SerialTransport {
    /// Opens `config.device`, keeping received messages in `state_dir`.
    pub fn open(
        config: &SerialConfig,
        state_dir: impl AsRef<Path>,
    ) -> Result<SerialTransport, SerialError> {
        SerialTransport::open_with_progress(config, state_dir, Arc::new(NoProgress))
    }

    /// Like [`SerialTransport::open`], reporting progress to `progress`.
    pub fn open_with_progress(
        config: &SerialConfig,
        state_dir: impl AsRef<Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<SerialTransport, SerialError> {
        // A mailbox takes what it is sent (within the state folder's quota); whoever reads
        // it decides what the messages mean.
        let mode = Mode {
            announce: false,
            fault_on_restart: false,
            admitted: true,
            strict: false,
        };
        let session = Session::open_with(config, state_dir.as_ref(), progress, mode)?;
        // Time to move a 16 KiB bundle at the configured rate, plus link setup.
        let secs = 16_384 / u64::from(config.effective_rate()) + 5;
        let capabilities = Capabilities {
            name: "serial",
            max_message_bytes: Some(MAX_MESSAGE),
            direction: if config.kiss {
                Direction::HalfDuplex
            } else {
                Direction::Duplex
            },
            typical_latency: Duration::from_secs(secs),
            trusted_carrier: false,
            shared_medium: false,
        };
        Ok(SerialTransport {
            session,
            capabilities,
        })
    }

    /// The session underneath (statistics, or an interactive exchange).
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn io(&self, what: &'static str, e: SerialError) -> TransportError {
        match e {
            SerialError::TooLarge { size, max } => TransportError::TooLarge { size, max },
            e => TransportError::Io {
                what,
                path: self.session.device().to_string(),
                source: io::Error::other(e.to_string()),
            },
        }
    }

    fn path_of(&self, id: &MessageId) -> Result<std::path::PathBuf, TransportError> {
        let hash: MessageHash =
            id.0.parse()
                .map_err(|_| TransportError::NotFound(id.clone()))?;
        Ok(self.session.store().msg_path(&hash))
    }
}

impl Transport for SerialTransport {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    fn send(
        &mut self,
        _name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError> {
        if len > MAX_MESSAGE {
            return Err(TransportError::TooLarge {
                size: len,
                max: MAX_MESSAGE,
            });
        }
        let mut data = Vec::with_capacity(len as usize);
        body.take(len + 1)
            .read_to_end(&mut data)
            .map_err(|source| TransportError::Io {
                what: "cannot read the message to send over",
                path: self.session.device().to_string(),
                source,
            })?;
        if data.len() as u64 != len {
            return Err(TransportError::Io {
                what: "short message for",
                path: self.session.device().to_string(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} of {len} bytes", data.len()),
                ),
            });
        }
        let hash = self
            .session
            .send(data)
            .map_err(|e| self.io("cannot send over", e))?;
        self.session
            .flush()
            .map_err(|e| self.io("cannot send over", e))?;
        Ok(MessageInfo {
            id: MessageId(hash.to_string()),
            len: Some(len),
            location: self.session.device().to_string(),
        })
    }

    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
        let store = self.session.store();
        let all = store.complete().map_err(|source| TransportError::Io {
            what: "cannot read folder",
            path: store.dir().display().to_string(),
            source,
        })?;
        Ok(all
            .into_iter()
            .map(|(hash, len, path)| MessageInfo {
                id: MessageId(hash.to_string()),
                len: Some(len),
                location: path.display().to_string(),
            })
            .collect())
    }

    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
        let path = self.path_of(id)?;
        match fs::File::open(&path) {
            Ok(f) => Ok(Box::new(io::BufReader::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(TransportError::NotFound(id.clone()))
            }
            Err(source) => Err(TransportError::Io {
                what: "cannot open",
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn settle(&mut self, id: &MessageId, disposition: &Disposition) -> Result<(), TransportError> {
        let path = self.path_of(id)?;
        let result = match disposition {
            Disposition::Retry { .. } => return Ok(()),
            // Applied: filed away as `.done` (swept after 14 days), no longer listed.
            Disposition::Processed => fs::rename(&path, path.with_extension("done")),
            // Refused (the node kept its own copy): filed as `.refused`, never offered again.
            Disposition::Rejected { .. } => fs::rename(&path, path.with_extension("refused")),
            Disposition::Obsolete => fs::remove_file(&path),
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(TransportError::Io {
                what: "cannot settle",
                path: path.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}
