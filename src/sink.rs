//! Where output lines go, and the promise the consumer acks on: when [`Sink::write`] returns
//! `Ok`, the lines are as durable as the sink can make them (docs/commands.md).
//!
//! - `stdout`: written and flushed (`write(2)` returned for every byte). A line on a pipe is
//!   then the reader's; nothing more can be asked of a pipe.
//! - `file:PATH`: opened `O_APPEND` (created if missing, mode 0666 less the umask), written and
//!   so handed to the operating system (std's `File` has no user-space buffer). That survives
//!   the process dying, which is what at-least-once needs for consumer crashes.
//!   **fsync policy**: with `--sink-fsync`, every batch is also `fdatasync`ed before `write`
//!   returns (so acked lines survive a machine crash too), and the parent directory is synced
//!   once at open so a newly created file's name is durable; this costs one disk flush per
//!   batch, which is why it is off by default. It is skipped for anything that is not a
//!   regular file (`/dev/null`, a FIFO, a character device), where fsync means nothing or
//!   fails.
//! - `amqp:EXCHANGE[/KEY]`: one persistent message per line (delivery mode 2), published
//!   `mandatory` on a channel of its own in confirm mode; `write` returns once the broker has
//!   confirmed every one. A nack, or a return (no queue bound for the key), is an error, so
//!   the source messages are not acked. Without a `/KEY` the routing key is empty.
//!
//! stdout and file lines get a trailing `\n`; an amqp message is the line alone.
//!
//! Cancellation: a `write` future dropped half-way (shutdown, timeout) leaves the sink usable.
//! A regular file without fsync (and `/dev/null`) is written on the caller's thread, at once:
//! such a write only copies into the page cache, so there is nothing to wait for and nothing
//! to cancel. Otherwise (stdout, a FIFO or device, fsync) the whole batch is written by one
//! blocking task that runs to the end even if its caller is gone, and the next `write` waits
//! for it first, so two batches never interleave and a line is never torn. Lines of a cancelled write may be on the sink without
//! having been acked: at-least-once allows that duplicate, never a loss.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use tokio::task::JoinHandle;

/// AMQP short strings (exchange names, routing keys) are at most 255 bytes.
const MAX_SHORT_STRING: usize = 255;

/// Batches whose buffer grew beyond this do not keep it: the memory cap matters more than
/// one reallocation.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// Where the lines go, as given by `--sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
    /// An AMQP exchange; `routing_key` `None` publishes with an empty key.
    Amqp {
        /// The exchange; empty is the default exchange (the key then names a queue).
        exchange: String,
        /// The routing key of every message.
        routing_key: Option<String>,
    },
}

/// Why a `--sink` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkSpecError {
    #[error("unknown sink {0:?}: expected stdout, file:PATH or amqp:EXCHANGE[/ROUTING_KEY]")]
    Unknown(String),
    #[error("sink file: needs a path, as in file:/var/log/app.log")]
    EmptyPath,
    #[error(
        "sink amqp: needs an exchange, as in amqp:logs or amqp:logs/app \
         (or amqp:/QUEUE for the default exchange)"
    )]
    EmptyAmqp,
    #[error("sink amqp: the {what} is {len} bytes; AMQP allows at most 255")]
    TooLong { what: &'static str, len: usize },
}

impl FromStr for SinkSpec {
    type Err = SinkSpecError;

    fn from_str(s: &str) -> Result<SinkSpec, SinkSpecError> {
        if s == "stdout" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SinkSpecError::EmptyPath);
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("amqp:") {
            let (exchange, routing_key) = match rest.split_once('/') {
                Some((exchange, key)) => (exchange, Some(key)),
                None => (rest, None),
            };
            if exchange.is_empty() && routing_key.is_none_or(str::is_empty) {
                return Err(SinkSpecError::EmptyAmqp);
            }
            for (what, text) in [
                ("exchange", exchange),
                ("routing key", routing_key.unwrap_or("")),
            ] {
                if text.len() > MAX_SHORT_STRING {
                    return Err(SinkSpecError::TooLong {
                        what,
                        len: text.len(),
                    });
                }
            }
            return Ok(SinkSpec::Amqp {
                exchange: exchange.to_string(),
                routing_key: routing_key.map(str::to_string),
            });
        }
        Err(SinkSpecError::Unknown(s.to_string()))
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File(path) => write!(f, "file:{}", path.display()),
            SinkSpec::Amqp {
                exchange,
                routing_key: None,
            } => write!(f, "amqp:{exchange}"),
            SinkSpec::Amqp {
                exchange,
                routing_key: Some(key),
            } => write!(f, "amqp:{exchange}/{key}"),
        }
    }
}

/// A sink failure. Every one means the same to the consumer: the lines are not known to be
/// on the sink, so their messages are not acked (they go back to the queue). None carries
/// message content.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open sink file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),
    #[error("cannot write to sink file {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("the sink's writer task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Spec(#[from] SinkSpecError),
    #[error("sink amqp:{exchange} needs a broker connection")]
    NoConnection { exchange: String },
    #[error("sink amqp:{exchange}: {source}")]
    Amqp {
        exchange: String,
        source: lapin::Error,
    },
    #[error("sink amqp:{exchange}: the broker nacked a line")]
    Nacked { exchange: String },
    #[error("sink amqp:{exchange}: a line was returned unroutable ({code} {text})")]
    Returned {
        exchange: String,
        code: u16,
        text: String,
    },
    #[error("sink amqp:{exchange}: the channel is not in confirm mode")]
    NotConfirmed { exchange: String },
}

impl SinkError {
    /// A stable label for logs and metrics (never the error text, which varies).
    pub fn label(&self) -> &'static str {
        match self {
            SinkError::Open { .. } => "open",
            SinkError::Stdout(_) => "stdout",
            SinkError::File { .. } => "file",
            SinkError::Task(_) => "task",
            SinkError::Spec(_) => "spec",
            SinkError::NoConnection { .. } => "amqp_no_connection",
            SinkError::Amqp { .. } => "amqp",
            SinkError::Nacked { .. } => "amqp_nack",
            SinkError::Returned { .. } => "amqp_returned",
            SinkError::NotConfirmed { .. } => "amqp_not_confirmed",
        }
    }

    /// Whether a fresh sink (after a reconnect, for amqp) may succeed where this one failed.
    /// `false` for errors that will repeat until someone changes the configuration or the
    /// system: an unopenable file, an unroutable key, a missing exchange.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Open { .. } | SinkError::Spec(_) | SinkError::Returned { .. } => false,
            SinkError::Amqp { source, .. } => !matches!(
                source.kind(),
                lapin::ErrorKind::ProtocolError(e)
                    if e.get_id() == 404 || e.get_id() == 403
            ),
            _ => true,
        }
    }
}

/// An open sink. Not `Clone`: one writer, so batches never interleave.
#[derive(Debug)]
pub struct Sink {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local(LocalWriter),
    /// Boxed: its properties make it several times the size of the local writer.
    Amqp(Box<AmqpWriter>),
}

impl Sink {
    /// Opens the sink. `fsync` applies to `file:` sinks only; `amqp` needs the connection the
    /// sink opens its own channel on (a channel in confirm mode, apart from the consumer's).
    pub async fn open(
        spec: &SinkSpec,
        fsync: bool,
        amqp: Option<&Connection>,
    ) -> Result<Sink, SinkError> {
        let inner = match spec {
            SinkSpec::Stdout => Inner::Local(LocalWriter::new(Target::Stdout)),
            SinkSpec::File(path) => {
                let path = path.clone();
                let target = tokio::task::spawn_blocking(move || open_file(path, fsync)).await??;
                Inner::Local(LocalWriter::new(target))
            }
            SinkSpec::Amqp {
                exchange,
                routing_key,
            } => {
                let Some(connection) = amqp else {
                    return Err(SinkError::NoConnection {
                        exchange: exchange.clone(),
                    });
                };
                Inner::Amqp(Box::new(
                    AmqpWriter::open(connection, exchange, routing_key.as_deref()).await?,
                ))
            }
        };
        Ok(Sink { inner })
    }

    /// Writes `lines` in order and returns once they are durable as the module doc says.
    /// On an error, any prefix of the lines may be on the sink.
    pub async fn write(&mut self, lines: &[String]) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Local(w) => w.write(lines).await,
            Inner::Amqp(w) => w.write(lines).await,
        }
    }
}

/// Opens a file sink (blocking: opening a FIFO waits for its reader).
fn open_file(path: PathBuf, fsync: bool) -> Result<Target, SinkError> {
    let opened = File::options()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|file| Ok((file.metadata()?.file_type().is_file(), file)));
    let (regular, file) = match opened {
        Ok(v) => v,
        Err(source) => return Err(SinkError::Open { path, source }),
    };
    let fsync = fsync && regular;
    if fsync {
        if let Err(source) = sync_parent(&path) {
            return Err(SinkError::Open { path, source });
        }
    }
    // A write(2) to a regular file without fsync only copies into the page cache, and one to
    // /dev/null does nothing: neither can block for long, so neither needs a thread of its own.
    let inline = (regular && !fsync) || path == Path::new("/dev/null");
    Ok(Target::File {
        file: Arc::new(file),
        path,
        fsync,
        inline,
    })
}

/// Makes the file's directory entry durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// A local destination, written from blocking tasks.
#[derive(Debug, Clone)]
enum Target {
    Stdout,
    File {
        /// Shared with the blocking task that writes a batch.
        file: Arc<File>,
        /// For error messages.
        path: PathBuf,
        /// fsync each batch: asked for, and the file is a regular file.
        fsync: bool,
        /// Written on the caller's thread: the write cannot block for long (see `open_file`).
        inline: bool,
    },
}

impl Target {
    /// Writes one whole batch and makes it as durable as promised.
    fn write_durably(&self, bytes: &[u8]) -> Result<(), SinkError> {
        match self {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(SinkError::Stdout)
            }
            Target::File {
                file, path, fsync, ..
            } => {
                let mut f: &File = file;
                f.write_all(bytes)
                    .and_then(|()| if *fsync { file.sync_data() } else { Ok(()) })
                    .map_err(|source| SinkError::File {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }
}

type Written = (Vec<u8>, Result<(), SinkError>);

/// stdout or a file: each batch joined into one buffer and written by one blocking task.
#[derive(Debug)]
struct LocalWriter {
    target: Target,
    /// The batch being written, if its `write` was cancelled before it finished: the next
    /// `write` waits for it, so batches never interleave.
    pending: Option<JoinHandle<Written>>,
    /// The last batch's buffer, reused.
    spare: Vec<u8>,
}

impl LocalWriter {
    fn new(target: Target) -> LocalWriter {
        LocalWriter {
            target,
            pending: None,
            spare: Vec::new(),
        }
    }

    async fn write(&mut self, lines: &[String]) -> Result<(), SinkError> {
        if let Some(earlier) = self.pending.as_mut() {
            // A cancelled batch: its caller is gone and did not ack, so its outcome is
            // nobody's; waiting is what matters.
            let outcome = earlier.await;
            self.pending = None;
            if let Ok((buf, _)) = outcome {
                self.spare = buf;
            }
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        let total = lines.iter().map(|l| l.len() + 1).sum();
        buf.try_reserve(total).map_err(|e| {
            let e = io::Error::new(io::ErrorKind::OutOfMemory, e);
            match &self.target {
                Target::Stdout => SinkError::Stdout(e),
                Target::File { path, .. } => SinkError::File {
                    path: path.clone(),
                    source: e,
                },
            }
        })?;
        for line in lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        if let Target::File { inline: true, .. } = self.target {
            // No hop to a blocking thread and back per batch; nothing to cancel half-way.
            let result = self.target.write_durably(&buf);
            if buf.capacity() <= KEEP_BUFFER_BYTES {
                self.spare = buf;
            }
            return result;
        }
        let target = self.target.clone();
        let task = self.pending.insert(tokio::task::spawn_blocking(move || {
            let result = target.write_durably(&buf);
            (buf, result)
        }));
        let outcome = task.await;
        self.pending = None;
        let (buf, result) = outcome?;
        if buf.capacity() <= KEEP_BUFFER_BYTES {
            self.spare = buf;
        }
        result
    }
}

/// The amqp sink: its own channel in confirm mode.
#[derive(Debug)]
struct AmqpWriter {
    channel: Channel,
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
}

impl AmqpWriter {
    async fn open(
        connection: &Connection,
        exchange: &str,
        routing_key: Option<&str>,
    ) -> Result<AmqpWriter, SinkError> {
        let fail = |source| SinkError::Amqp {
            exchange: exchange.to_string(),
            source,
        };
        let short = |what: &'static str, text: &str| {
            ShortString::try_new(text).map_err(|_| {
                SinkError::Spec(SinkSpecError::TooLong {
                    what,
                    len: text.len(),
                })
            })
        };
        let name = short("exchange", exchange)?;
        let key = short("routing key", routing_key.unwrap_or(""))?;
        let channel = connection.create_channel().await.map_err(fail)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(fail)?;
        if !exchange.is_empty() {
            // Fails now, with "NOT_FOUND", rather than at the first line; declares nothing.
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    name.clone(),
                    ExchangeKind::Direct,
                    passive,
                    FieldTable::default(),
                )
                .await
                .map_err(fail)?;
        }
        Ok(AmqpWriter {
            channel,
            exchange: name,
            routing_key: key,
            properties: BasicProperties::default().with_delivery_mode(2),
        })
    }

    async fn write(&mut self, lines: &[String]) -> Result<(), SinkError> {
        let exchange = || self.exchange.as_str().to_string();
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        // Publish the whole batch, then collect the confirms: one round trip, not one per line.
        let mut confirms = Vec::with_capacity(lines.len());
        for line in lines {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.clone(),
                    self.routing_key.clone(),
                    options,
                    line.as_bytes(),
                    self.properties.clone(),
                )
                .await
                .map_err(|source| SinkError::Amqp {
                    exchange: exchange(),
                    source,
                })?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.map_err(|source| SinkError::Amqp {
                exchange: exchange(),
                source,
            })?;
            match confirmation {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    return Err(SinkError::Returned {
                        exchange: exchange(),
                        code: returned.reply_code,
                        text: returned.reply_text.as_str().to_string(),
                    });
                }
                Confirmation::Nack(None) => {
                    return Err(SinkError::Nacked {
                        exchange: exchange(),
                    })
                }
                Confirmation::NotRequested => {
                    return Err(SinkError::NotConfirmed {
                        exchange: exchange(),
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
