//! WATCH streams: initial events (for an unset or `0` resourceVersion, or `sendInitialEvents`),
//! replay from the event log, 410 Gone (`Expired`) once a resourceVersion has left the window,
//! bookmarks, `timeoutSeconds`, label/field filtering with ADDED/DELETED on (un)matching, and the
//! dropped-watch and forced-410 faults.

use crate::api::{lock, present, Shared, WatchSpec};
use crate::error::ApiError;
use crate::store::{EventType, WatchEvent};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// One watch line: `{"object":…,"type":…}` and a newline, the key order serde_json gives.
fn line(kind: &str, object: &str) -> Bytes {
    Bytes::from(format!("{{\"object\":{object},\"type\":\"{kind}\"}}\n"))
}

/// The line for a stored object as this watch serves it: encoded as it is when it is stored
/// with the apiVersion and kind the watch serves, else presented first (a copy).
fn object_line(spec: &WatchSpec, kind: &str, object: &Value) -> Bytes {
    let as_served = object.get("apiVersion").and_then(Value::as_str)
        == Some(spec.info.api_version().as_str())
        && object.get("kind").and_then(Value::as_str) == Some(spec.info.kind.as_str());
    if as_served {
        line(kind, &object.to_string())
    } else {
        line(kind, &present(&spec.info, object.clone()).to_string())
    }
}

fn matches(spec: &WatchSpec, o: &Value) -> bool {
    spec.labels.matches_object(o) && spec.fields.matches(o)
}

/// The line for a store event as seen by this watch, if any. An object stored with the
/// apiVersion and kind this watch serves is encoded as it is, without a copy.
fn translate(spec: &WatchSpec, ev: &WatchEvent) -> Option<Bytes> {
    if ev.gr != spec.info.key() {
        return None;
    }
    if let Some(ns) = &spec.namespace {
        if &ev.namespace != ns {
            return None;
        }
    }
    let send = |kind: &str| object_line(spec, kind, &ev.object);
    match ev.kind {
        EventType::Added | EventType::Deleted => {
            matches(spec, &ev.object).then(|| send(ev.kind.as_str()))
        }
        EventType::Modified => {
            let now = matches(spec, &ev.object);
            let before = ev.old.as_ref().is_some_and(|o| matches(spec, o));
            match (before, now) {
                (true, true) => Some(send("MODIFIED")),
                (false, true) => Some(send("ADDED")),
                (true, false) => Some(send("DELETED")),
                (false, false) => None,
            }
        }
    }
}

fn bookmark(spec: &WatchSpec, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object =
        json!({"kind": spec.info.kind, "apiVersion": spec.info.api_version(), "metadata": meta});
    line("BOOKMARK", &object.to_string())
}

/// Starts a watch; returns the receiver of body chunks.
pub fn start(shared: Arc<Shared>, spec: WatchSpec) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let faults = lock(&shared.faults).faults.clone();
    let mut epoch = shared.epoch.subscribe();
    let (mut events, start_rv, initial, gone) = {
        let st = shared.store();
        let events = st.subscribe();
        let requested = spec
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "0")
            .map(|r| r.parse::<u64>().unwrap_or(0));
        let mut initial: Vec<Bytes> = Vec::new();
        let mut gone = None;
        // A watch from nothing, or asking for initial events, starts with the current objects;
        // one from a resourceVersion still in the window replays what came after it.
        let list = match requested {
            None => true,
            Some(rv) if faults.force_watch_gone || rv < st.compacted() => {
                gone = Some(ApiError::expired(rv, st.compacted().max(st.rv())));
                false
            }
            Some(rv) if !spec.send_initial => {
                for ev in st.events_since(rv) {
                    initial.extend(translate(&spec, &ev));
                }
                false
            }
            Some(_) => true,
        };
        if list {
            for o in st.list_ref(&spec.info.key(), spec.namespace.as_deref()) {
                if matches(&spec, o) {
                    initial.push(object_line(&spec, "ADDED", o));
                }
            }
            if spec.send_initial {
                initial.push(bookmark(&spec, st.rv(), true));
            }
        }
        (events, st.rv(), initial, gone)
    };
    tokio::spawn(async move {
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if let Some(e) = gone {
            let _ = tx.send(line("ERROR", &e.to_status().to_string())).await;
            return;
        }
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let drop_after = faults
            .drop_watches_after_ms
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(86_400 * 365));
        let dropper = tokio::time::sleep(drop_after);
        tokio::pin!(dropper);
        let mut ticker = tokio::time::interval(shared.cfg.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= start_rv {
                            continue;
                        }
                        last_rv = last_rv.max(ev.rv);
                        if let Some(l) = translate(&spec, &ev) {
                            if tx.send(l).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if spec.bookmarks => {
                    if tx.send(bookmark(&spec, last_rv, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = &mut dropper => return,
                _ = epoch.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line is what serde_json makes of `{"type": …, "object": …}`, byte for byte.
    #[test]
    fn a_line_is_the_json_event() {
        let object = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b \"quoted\""}}, "spec": {"x": [1, 2]}});
        let mut expected = json!({"type": "MODIFIED", "object": object}).to_string();
        expected.push('\n');
        assert_eq!(line("MODIFIED", &object.to_string()), Bytes::from(expected));
    }
}
