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

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn matches(spec: &WatchSpec, o: &Value) -> bool {
    spec.labels.matches_object(o) && spec.fields.matches(o)
}

/// A watch line around an object already encoded (the bytes `line` makes for it).
fn encoded_line(kind: &str, object: &str) -> Bytes {
    Bytes::from(format!("{{\"object\":{object},\"type\":\"{kind}\"}}\n"))
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
    let as_served = ev.object.get("apiVersion").and_then(Value::as_str)
        == Some(spec.info.api_version().as_str())
        && ev.object.get("kind").and_then(Value::as_str) == Some(spec.info.kind.as_str());
    let send = |kind: &str| {
        if as_served {
            encoded_line(kind, &ev.object.to_string())
        } else {
            line(kind, present(&spec.info, ev.object.clone()))
        }
    };
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
    line(
        "BOOKMARK",
        json!({"kind": spec.info.kind, "apiVersion": spec.info.api_version(), "metadata": meta}),
    )
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
        match requested {
            None => {
                for o in st.list_ref(&spec.info.key(), spec.namespace.as_deref()) {
                    if matches(&spec, o) {
                        initial.push(line("ADDED", present(&spec.info, o.clone())));
                    }
                }
                if spec.send_initial {
                    initial.push(bookmark(&spec, st.rv(), true));
                }
            }
            Some(rv) => {
                if faults.force_watch_gone || rv < st.compacted() {
                    gone = Some(ApiError::expired(rv, st.compacted().max(st.rv())));
                } else {
                    if spec.send_initial {
                        for o in st.list_ref(&spec.info.key(), spec.namespace.as_deref()) {
                            if matches(&spec, o) {
                                initial.push(line("ADDED", present(&spec.info, o.clone())));
                            }
                        }
                        initial.push(bookmark(&spec, st.rv(), true));
                    } else {
                        for ev in st.events_since(rv) {
                            if let Some(l) = translate(&spec, &ev) {
                                initial.push(l);
                            }
                        }
                    }
                }
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
            let _ = tx.send(line("ERROR", e.to_status())).await;
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

    #[test]
    fn an_encoded_line_is_the_line() {
        let object = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b \"quoted\""}}, "spec": {"x": [1, 2]}});
        assert_eq!(
            encoded_line("MODIFIED", &object.to_string()),
            line("MODIFIED", object)
        );
    }
}
