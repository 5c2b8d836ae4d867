//! Log handlers changeable at run time (`/api/logs/handler/`, the Kubernetes manager's log-handler
//! API): besides the process's own output (stderr, always), stream, file and syslog handlers can
//! be created, read, updated and deleted while Portico runs. Each handler has a level; it gets
//! the lines the process's filter (`/api/logs/level`) lets through that are at least that severe.
//!
//! The decisions (what a handler's configuration means, which levels pass) are plain functions;
//! [`HandlerWriter`] is the `tracing_subscriber` writer `portico serve` installs.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{json, Map, Value};
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The handler kinds the manager offers.
pub const KINDS: [&str; 4] = ["stream", "file", "syslog", "smtp"];

/// A handler as stored and shown: its kind and its configuration as given (merged on update).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub handler: String,
    pub configuration: Map<String, Value>,
    pub level: LevelFilter,
    pub sink: SinkSpec,
}

/// Where a handler's lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    Stderr,
    File(String),
    /// A syslog server reached over UDP (RFC 3164 lines).
    Syslog(String),
    /// One mail per line through a relay.
    Smtp(super::smtp::Mail),
}

/// A level as the manager's clients give it: a number (0, 5, 10, 20, 30, 40, 50, 99) or a
/// name (`NOTSET`, `TRACE`, `DEBUG`, `INFO`, `WARN`/`WARNING`, `ERROR`, `FATAL`/`CRITICAL`,
/// `DEACTIVATE`), as a number or a string.
pub fn parse_level(v: &Value) -> Result<LevelFilter, String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_ascii_uppercase(),
        other => return Err(format!("Unsupported level: {other}")),
    };
    Ok(match text.as_str() {
        "0" | "NOTSET" | "5" | "TRACE" => LevelFilter::TRACE,
        "10" | "DEBUG" => LevelFilter::DEBUG,
        "20" | "INFO" => LevelFilter::INFO,
        "30" | "WARN" | "WARNING" => LevelFilter::WARN,
        "40" | "ERROR" | "50" | "FATAL" | "CRITICAL" => LevelFilter::ERROR,
        "99" | "DEACTIVATE" => LevelFilter::OFF,
        _ => return Err(format!(
            "Unsupported level: {text}. Supported levels: 0, 5, 10, 20, 30, 40, 50, 99 or NOTSET, TRACE, DEBUG, INFO, WARN, WARNING, ERROR, FATAL, CRITICAL, DEACTIVATE"
        )),
    })
}

fn string_of(config: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{key} in configuration must be a non-empty string, not {other}"
        )),
    }
}

/// What a handler of `kind` with `configuration` does, or why it cannot be.
pub fn spec(kind: &str, configuration: Map<String, Value>) -> Result<Spec, String> {
    if !KINDS.contains(&kind) {
        return Err(format!(
            "Unsupported handler: {kind}. Supported handlers: stream, file, syslog, smtp"
        ));
    }
    let level = match configuration.get("level") {
        Some(v) => parse_level(v)?,
        None => LevelFilter::INFO,
    };
    if let Some(f) = string_of(&configuration, "formatter")? {
        if f != "simple" {
            return Err(format!(
                "Unsupported formatter: {f}. Lines are written in the process's own format (simple)"
            ));
        }
    }
    let sink = match kind {
        "stream" => match string_of(&configuration, "stream")?.as_deref() {
            None | Some("ext://sys.stdout") => SinkSpec::Stdout,
            Some("ext://sys.stderr") => SinkSpec::Stderr,
            Some(other) => {
                return Err(format!(
                    "Unsupported stream: {other}. Supported streams: ext://sys.stdout, ext://sys.stderr"
                ))
            }
        },
        "file" => {
            for key in ["when", "backupCount", "interval"] {
                if configuration.contains_key(key) {
                    return Err(format!(
                        "{key}: the file handler does not rotate; rotate the file outside Portico (copytruncate)"
                    ));
                }
            }
            SinkSpec::File(
                string_of(&configuration, "filename")?
                    .ok_or("filename in configuration is required for a file handler")?,
            )
        }
        "syslog" => {
            match string_of(&configuration, "socktype")?.as_deref() {
                None | Some("ext://socket.SOCK_DGRAM") => {}
                Some(other) => {
                    return Err(format!(
                        "Unsupported socktype: {other}. Supported: ext://socket.SOCK_DGRAM (UDP)"
                    ))
                }
            }
            let address = match configuration.get("address") {
                Some(Value::Array(a)) if a.len() == 2 => {
                    let host = a[0].as_str().ok_or("address must be [host, port]")?;
                    let port = a[1].as_u64().filter(|p| (1..=65535).contains(p));
                    let port = port.ok_or("address must be [host, port] with a port 1-65535")?;
                    format!("{host}:{port}")
                }
                None => "127.0.0.1:514".to_string(),
                Some(_) => return Err("address must be [host, port]".to_string()),
            };
            SinkSpec::Syslog(address)
        }
        _ => {
            let relay = match configuration.get("mailhost") {
                Some(Value::String(h)) if !h.is_empty() => format!("{h}:25"),
                Some(Value::Array(a)) if a.len() == 2 => {
                    let host = a[0].as_str().ok_or("mailhost must be a host or [host, port]")?;
                    let port = a[1].as_u64().filter(|p| (1..=65535).contains(p));
                    let port = port.ok_or("mailhost must be [host, port] with a port 1-65535")?;
                    format!("{host}:{port}")
                }
                _ => return Err("mailhost in configuration is required: a host or [host, port]".to_string()),
            };
            let from = string_of(&configuration, "fromaddr")?
                .ok_or("fromaddr in configuration is required for an smtp handler")?;
            let to: Vec<String> = match configuration.get("toaddrs") {
                Some(Value::Array(a)) if !a.is_empty() => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or("toaddrs must be a list of addresses")?,
                _ => return Err("toaddrs in configuration must be a non-empty list".to_string()),
            };
            let subject = string_of(&configuration, "subject")?.unwrap_or_else(|| "Portico".into());
            for address in std::iter::once(&from).chain(&to) {
                if address.chars().any(|c| c.is_control() || matches!(c, '<' | '>' | ' ')) {
                    return Err(format!("{address:?} is not a mail address"));
                }
            }
            SinkSpec::Smtp(super::smtp::Mail {
                relay,
                from,
                to,
                subject,
            })
        }
    };
    Ok(Spec {
        handler: kind.to_string(),
        configuration,
        level,
        sink,
    })
}

/// Whether a line at `level` reaches a handler of `filter`.
pub fn passes(filter: LevelFilter, level: &Level) -> bool {
    filter >= *level
}

/// The syslog severity of a level (RFC 5424), with facility `user` (1).
fn syslog_priority(level: &Level) -> u8 {
    let severity = match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    };
    8 + severity
}

enum Sink {
    Stdout,
    Stderr,
    File(Mutex<std::fs::File>),
    Syslog(UdpSocket, String),
    Smtp(super::smtp::Sender),
}

struct Live {
    spec: Spec,
    sink: Sink,
}

/// The handlers in force.
#[derive(Default)]
pub struct Handlers {
    live: RwLock<BTreeMap<String, Arc<Live>>>,
}

/// Why a handler request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// `400`: a bare list of messages, as the manager answers.
    Invalid(String),
    NotFound,
}

fn open(spec: &Spec) -> Result<Sink, String> {
    Ok(match &spec.sink {
        SinkSpec::Stdout => Sink::Stdout,
        SinkSpec::Stderr => Sink::Stderr,
        SinkSpec::File(path) => Sink::File(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {path} for appending: {e}"))?,
        )),
        SinkSpec::Syslog(addr) => {
            let socket = UdpSocket::bind("0.0.0.0:0")
                .map_err(|e| format!("cannot open a UDP socket for syslog: {e}"))?;
            Sink::Syslog(socket, addr.clone())
        }
        SinkSpec::Smtp(mail) => Sink::Smtp(super::smtp::Sender::start(mail.clone())),
    })
}

impl Handlers {
    /// The process's handlers (the ones `portico serve`'s writer fans out to).
    pub fn global() -> Arc<Handlers> {
        static GLOBAL: OnceLock<Arc<Handlers>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Handlers::default())).clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Live>>> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Live>>> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every handler, as `{"handler", "configuration"}`.
    pub fn list(&self) -> Vec<Value> {
        self.read().values().map(|l| shown(&l.spec)).collect()
    }

    pub fn get(&self, kind: &str) -> Option<Value> {
        self.read().get(kind).map(|l| shown(&l.spec))
    }

    /// Creates a handler; a kind that exists already is refused (update it instead).
    pub fn create(
        &self,
        kind: &str,
        configuration: Map<String, Value>,
    ) -> Result<Value, HandlerError> {
        if self.read().contains_key(kind) {
            return Err(HandlerError::Invalid(format!(
                "handler {kind} already exists; update it with PUT or PATCH"
            )));
        }
        self.install(kind, configuration)
    }

    /// Changes a handler's configuration key by key.
    pub fn update(&self, kind: &str, changes: Map<String, Value>) -> Result<Value, HandlerError> {
        let Some(mut configuration) = self.read().get(kind).map(|l| l.spec.configuration.clone())
        else {
            return Err(HandlerError::NotFound);
        };
        configuration.extend(changes);
        self.install(kind, configuration)
    }

    pub fn delete(&self, kind: &str) -> Result<(), HandlerError> {
        self.write()
            .remove(kind)
            .map(|_| ())
            .ok_or(HandlerError::NotFound)
    }

    fn install(
        &self,
        kind: &str,
        configuration: Map<String, Value>,
    ) -> Result<Value, HandlerError> {
        let spec = spec(kind, configuration).map_err(HandlerError::Invalid)?;
        let sink = open(&spec).map_err(HandlerError::Invalid)?;
        let out = shown(&spec);
        self.write()
            .insert(kind.to_string(), Arc::new(Live { spec, sink }));
        Ok(out)
    }

    fn emit(&self, level: &Level, line: &[u8]) {
        for live in self.read().values() {
            if !passes(live.spec.level, level) {
                continue;
            }
            // A handler that cannot be written to loses the line; logging must never fail the
            // process (the line still went to stderr).
            let _ = match &live.sink {
                Sink::Stdout => std::io::stdout().write_all(line),
                Sink::Stderr => std::io::stderr().write_all(line),
                Sink::File(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write_all(line),
                Sink::Syslog(socket, addr) => {
                    let text = String::from_utf8_lossy(line);
                    let message =
                        format!("<{}>portico: {}", syslog_priority(level), text.trim_end());
                    socket
                        .send_to(message.as_bytes(), addr.as_str())
                        .map(|_| ())
                }
                Sink::Smtp(sender) => {
                    // Queued for the handler's own thread; a full queue drops the line.
                    sender.offer(&String::from_utf8_lossy(line));
                    Ok(())
                }
            };
        }
    }
}

fn shown(spec: &Spec) -> Value {
    json!({"handler": spec.handler, "configuration": spec.configuration})
}

/// The writer `portico serve` logs through: every line to stderr, as always, and to each
/// handler whose level it reaches.
#[derive(Clone)]
pub struct HandlerWriter {
    pub handlers: Arc<Handlers>,
}

/// One event's line, handed out when it is complete.
pub struct Line {
    handlers: Arc<Handlers>,
    level: Option<Level>,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = std::io::stderr().write_all(&self.buf);
        if let Some(level) = &self.level {
            self.handlers.emit(level, &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for HandlerWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            handlers: self.handlers.clone(),
            level: None,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            handlers: self.handlers.clone(),
            level: Some(*meta.level()),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn levels_as_the_managers_clients_give_them() {
        for (v, want) in [
            (json!(5), LevelFilter::TRACE),
            (json!("10"), LevelFilter::DEBUG),
            (json!("info"), LevelFilter::INFO),
            (json!("WARNING"), LevelFilter::WARN),
            (json!(50), LevelFilter::ERROR),
            (json!("DEACTIVATE"), LevelFilter::OFF),
            (json!(0), LevelFilter::TRACE),
        ] {
            assert_eq!(parse_level(&v).unwrap(), want, "{v}");
        }
        assert!(parse_level(&json!(3))
            .unwrap_err()
            .contains("Unsupported level: 3"));
        assert!(parse_level(&json!([1])).is_err());
        assert!(passes(LevelFilter::WARN, &Level::ERROR));
        assert!(passes(LevelFilter::WARN, &Level::WARN));
        assert!(!passes(LevelFilter::WARN, &Level::INFO));
        assert!(!passes(LevelFilter::OFF, &Level::ERROR));
    }

    #[test]
    fn configurations_are_read_or_refused_with_a_reason() {
        let s = spec(
            "stream",
            config(json!({"level": 20, "stream": "ext://sys.stderr"})),
        )
        .unwrap();
        assert_eq!((s.level, s.sink), (LevelFilter::INFO, SinkSpec::Stderr));
        let s = spec("file", config(json!({"filename": "/tmp/x.log"}))).unwrap();
        assert_eq!(s.sink, SinkSpec::File("/tmp/x.log".into()));
        let s = spec(
            "syslog",
            config(json!({"address": ["logs.example.org", 514]})),
        )
        .unwrap();
        assert_eq!(s.sink, SinkSpec::Syslog("logs.example.org:514".into()));
        for (kind, c, needle) in [
            ("x", json!({}), "Unsupported handler: x"),
            ("smtp", json!({}), "mailhost"),
            (
                "smtp",
                json!({"mailhost": "m", "fromaddr": "a@b"}),
                "toaddrs",
            ),
            (
                "smtp",
                json!({"mailhost": "m", "toaddrs": ["a@b"]}),
                "fromaddr",
            ),
            (
                "smtp",
                json!({"mailhost": "m", "fromaddr": "a@b>\r\nRCPT TO:<x@y", "toaddrs": ["a@b"]}),
                "not a mail address",
            ),
            (
                "stream",
                json!({"stream": "ext://sys.stdin"}),
                "Unsupported stream",
            ),
            ("file", json!({}), "filename"),
            (
                "file",
                json!({"filename": 3}),
                "filename in configuration must be",
            ),
            (
                "file",
                json!({"filename": "f", "when": "midnight"}),
                "does not rotate",
            ),
            ("syslog", json!({"address": ["h"]}), "address"),
            ("syslog", json!({"address": ["h", 70000]}), "port 1-65535"),
            (
                "syslog",
                json!({"socktype": "ext://socket.SOCK_STREAM"}),
                "Unsupported socktype",
            ),
            (
                "stream",
                json!({"formatter": "json"}),
                "Unsupported formatter",
            ),
            ("stream", json!({"level": "LOUD"}), "Unsupported level"),
        ] {
            let err = spec(kind, config(c)).unwrap_err();
            assert!(err.contains(needle), "{kind}: {err}");
        }
    }

    #[test]
    fn handlers_are_created_read_updated_and_deleted_and_get_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portico.log");
        let handlers = Arc::new(Handlers::default());
        let file = json!({"filename": path.display().to_string(), "level": "WARN"});
        let made = handlers.create("file", config(file.clone())).unwrap();
        assert_eq!(made["handler"], "file");
        assert!(matches!(
            handlers.create("file", config(file)),
            Err(HandlerError::Invalid(_))
        ));
        assert_eq!(handlers.list().len(), 1);
        let writer = HandlerWriter {
            handlers: handlers.clone(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("an info line");
            tracing::warn!("a warning line");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("a warning line"), "{text}");
        assert!(!text.contains("an info line"), "{text}");
        // Lowered to INFO: the next info line reaches it.
        let updated = handlers
            .update("file", config(json!({"level": 20})))
            .unwrap();
        assert_eq!(updated["configuration"]["level"], 20);
        let writer = HandlerWriter {
            handlers: handlers.clone(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, || tracing::info!("a later info line"));
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("a later info line"));
        assert!(handlers
            .update("file", config(json!({"level": "LOUD"})))
            .is_err());
        assert_eq!(
            handlers.update("stream", Map::new()),
            Err(HandlerError::NotFound)
        );
        handlers.delete("file").unwrap();
        assert_eq!(handlers.delete("file"), Err(HandlerError::NotFound));
        assert!(handlers.get("file").is_none());
    }

    #[test]
    fn a_syslog_handler_sends_one_datagram_per_line() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let handlers = Arc::new(Handlers::default());
        handlers
            .create(
                "syslog",
                config(json!({"address": ["127.0.0.1", port], "level": "ERROR"})),
            )
            .unwrap();
        let writer = HandlerWriter {
            handlers: handlers.clone(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("not this");
            tracing::error!("the disk is full");
        });
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("<11>portico: "), "{got}");
        assert!(got.contains("the disk is full"), "{got}");
    }
}
