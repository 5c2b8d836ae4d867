//! The audit trail: one JSON line per admission decision and per provisioner write.
//!
//! Owns the record format ([`AuditRecord`]) and the writer ([`AuditLog`]): standard output (the
//! default, so the container runtime's log pipeline collects it), a file rotated by size with a
//! fixed number of old files kept, or nothing. Operational logs (tracing, on stderr) are separate:
//! the trail says *what Portico decided or wrote*, for people who audit, and is stable in shape.
//!
//! Writing never fails the caller: a decision is answered even when its record cannot be written.
//! The failure is logged (once per run of failures) and counted by the caller's metrics.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::admission::Summary;
use crate::config::{AuditConfig, TrailTarget};

/// The object a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One line of the trail. Field names are part of Portico's interface (documented in
/// `docs/operator.md`); add fields, never rename them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// `admission` (the webhook) or `provisioner` (the controller).
    pub source: &'static str,
    /// Who: the requesting user for admission, Portico's own identity for provisioner writes.
    pub user: String,
    /// `CREATE`, `UPDATE`, … for admission; `apply`, `patch`, `delete`, `status` for writes.
    pub operation: String,
    pub object: ObjectId,
    /// The route value involved, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The JSON Patch the webhook returned, or what the provisioner wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// `allowed`, `mutated`, `denied`, `would-deny` (warn mode) for admission; `written` or
    /// `failed` for provisioner writes.
    pub outcome: String,
    /// The machine-readable reason of a denial or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The admission request's uid (matches the apiserver's own audit log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl AuditRecord {
    /// The record of one admission decision.
    pub fn admission(endpoint: &str, s: &Summary) -> Self {
        // The patch is already JSON text: it is written as it is, not parsed again.
        let change = s
            .patch
            .as_ref()
            .and_then(|p| RawValue::from_string(p.clone()).ok())
            .map(Change::Raw);
        AuditRecord {
            time: now(),
            source: "admission",
            user: s.user.clone(),
            operation: if endpoint == "validate" {
                format!("{} (validate)", s.operation)
            } else {
                s.operation.clone()
            },
            object: ObjectId {
                kind: s.kind.clone(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            },
            route: s.route.clone(),
            tag: s.tag.clone(),
            change,
            outcome: s.outcome().to_string(),
            reason: s.reason.clone(),
            message: s.message.clone(),
            uid: Some(s.uid.clone()).filter(|u| !u.is_empty()),
            dry_run: s.dry_run,
        }
    }
}

/// What a record says was changed: a JSON value, or JSON text written as it is.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Change {
    Json(Value),
    Raw(Box<RawValue>),
}

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Change::Json(a), Change::Json(b)) => a == b,
            (Change::Raw(a), Change::Raw(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

/// The current time as RFC 3339 (seconds, UTC).
pub fn now() -> String {
    k8s_openapi::chrono::Utc::now()
        .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Millis, true)
}

/// Why the trail cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("cannot open the audit trail file {path} (audit.file): {error}")]
    Open { path: String, error: io::Error },
}

/// Where records go. Cheap to clone; clones share the sink.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    sink: Option<Arc<Mutex<Sink>>>,
}

#[derive(Debug)]
enum Sink {
    Stdout { failing: bool },
    File(Rotating),
}

/// A file rotated by size: `path` is current, `path.1` the newest old one, … `path.<keep>`.
#[derive(Debug)]
struct Rotating {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
    failing: bool,
}

impl AuditLog {
    /// Records nothing.
    pub fn off() -> Self {
        Self { sink: None }
    }

    /// One line per record on standard output.
    pub fn stdout() -> Self {
        Self::with(Sink::Stdout { failing: false })
    }

    /// One line per record in `path`, rotated before it passes `max_bytes`, `keep` old files kept.
    pub fn file(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, AuditLogError> {
        let file = open_append(path).map_err(|error| AuditLogError::Open {
            path: path.display().to_string(),
            error,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self::with(Sink::File(Rotating {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            failing: false,
        })))
    }

    /// The trail the configuration asks for.
    pub fn from_config(config: &AuditConfig) -> Result<Self, AuditLogError> {
        match config.trail {
            TrailTarget::Off => Ok(Self::off()),
            TrailTarget::Stdout => Ok(Self::stdout()),
            TrailTarget::File => Self::file(
                Path::new(&config.file),
                config.max_file_bytes,
                config.keep_files,
            ),
        }
    }

    fn with(sink: Sink) -> Self {
        Self {
            sink: Some(Arc::new(Mutex::new(sink))),
        }
    }

    /// Whether records go anywhere (callers skip building records when not).
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Writes one record as one line. Returns whether it was written.
    pub fn write(&self, record: &AuditRecord) -> bool {
        let Some(sink) = &self.sink else {
            return false;
        };
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(error) => {
                tracing::error!(%error, "audit record cannot be encoded");
                return false;
            }
        };
        line.push(b'\n');
        // A panic elsewhere while holding the lock leaves nothing half-written that matters.
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Stdout { failing } => {
                let result = io::stdout().lock().write_all(&line);
                report(failing, result, "standard output")
            }
            Sink::File(r) => {
                let result = r.write(&line);
                let path = r.path.display().to_string();
                report(&mut r.failing, result, &path)
            }
        }
    }
}

/// Logs the first failure of a run of failures and the recovery, not every line.
fn report(failing: &mut bool, result: io::Result<()>, target: &str) -> bool {
    match result {
        Ok(()) => {
            if std::mem::take(failing) {
                tracing::info!(target, "audit trail writable again");
            }
            true
        }
        Err(error) => {
            if !std::mem::replace(failing, true) {
                tracing::error!(target, %error, "audit trail cannot be written; records are lost until it can");
            }
            false
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl Rotating {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            let file = open_append(&self.path)?;
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(line)?;
            self.size += len;
        }
        Ok(())
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// `path.<keep>` goes, every `path.<n>` becomes `path.<n+1>`, `path` becomes `path.1`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let _ = std::fs::remove_file(self.numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> AuditRecord {
        AuditRecord::admission(
            "mutate",
            &Summary {
                uid: "u1".into(),
                operation: "CREATE".into(),
                kind: "Pod".into(),
                namespace: "team".into(),
                name: name.into(),
                user: "user1".into(),
                tag: Some("foobar".into()),
                route: Some("user1-foobar".into()),
                allowed: true,
                mutated: true,
                patch: Some(r#"[{"op":"add","path":"/metadata/labels","value":{}}]"#.into()),
                ..Summary::default()
            },
        )
    }

    #[test]
    fn a_record_is_one_json_line_with_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::file(&path, 1 << 20, 2).unwrap();
        assert!(log.write(&record("p")));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["source"], "admission");
        assert_eq!(v["user"], "user1");
        assert_eq!(v["object"]["kind"], "Pod");
        assert_eq!(v["route"], "user1-foobar");
        assert_eq!(v["outcome"], "mutated");
        assert_eq!(v["change"][0]["op"], "add");
        assert!(v.get("dryRun").is_none());
    }

    #[test]
    fn files_rotate_by_size_and_only_keep_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let one = serde_json::to_vec(&record("p0")).unwrap().len() as u64 + 1;
        // Two records per file.
        let log = AuditLog::file(&path, 2 * one, 2).unwrap();
        for i in 0..9 {
            assert!(log.write(&record(&format!("p{i}"))));
        }
        let lines = |p: PathBuf| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(lines(path.clone()), 1, "p8 alone in the current file");
        assert_eq!(lines(dir.path().join("audit.jsonl.1")), 2);
        assert_eq!(lines(dir.path().join("audit.jsonl.2")), 2);
        assert!(!dir.path().join("audit.jsonl.3").exists());
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("\"p8\""), "{newest}");
    }

    #[test]
    fn an_unwritable_trail_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let err = AuditLog::file(&dir.path().join("x").join("\0bad"), 10, 1).unwrap_err();
        assert!(err.to_string().contains("audit.file"), "{err}");
        assert!(!AuditLog::off().write(&record("p")));
    }
}
