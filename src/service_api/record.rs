//! The record of one service, kept in a ConfigMap in the API's namespace, and the decisions
//! taken from it, as pure functions of plain data.
//!
//! The record is the single source of order for one service: every start and stop changes it
//! with a resourceVersion-checked write, so two requests (on one replica or two) can never both
//! believe they own the next step; the apiserver arbitrates. It also says which objects are the
//! service's: an object counts only when it carries the identity recorded at creation (its
//! uid), or, while its uid is not recorded yet, this start's own nonce. A name alone never
//! makes an object the service's, so a record that names another tenant's objects reaches none
//! of them.

use serde::{Deserialize, Serialize};

use super::plan::ObjectRef;

/// One object a start creates, with its uid once created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(flatten)]
    pub object: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// A start is creating the objects.
    Starting,
    /// Every object was created (records written before states existed read as this).
    #[default]
    Started,
    /// A stop is deleting the objects; `startPending` while the start it interrupted has not
    /// yet removed what it was creating.
    Stopping,
}

/// One started service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub client: String,
    pub service_id: String,
    pub user_id: String,
    pub user: String,
    pub namespace: String,
    pub start_id: String,
    pub service: String,
    pub tag: String,
    pub objects: Vec<Entry>,
    /// This start's identity, stamped on each object it creates (empty in records written
    /// before nonces existed).
    #[serde(default)]
    pub nonce: String,
    /// The route value Portico's webhook stamped on the service's pods (from the created
    /// objects); only pods carrying it are the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default)]
    pub state: State,
    /// Whether the start a stop interrupted still has to remove its last object.
    #[serde(default)]
    pub start_pending: bool,
    /// When the current start began (seconds since the Unix epoch).
    #[serde(default)]
    pub since: u64,
}

/// What the cluster shows of an object the record names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub uid: String,
    /// The start nonce annotation.
    pub nonce: Option<String>,
    /// The service label's value.
    pub service_label: Option<String>,
}

/// Whether `seen`, found under `entry`'s name, is the object this record's start created.
/// `key` is the service label value of the record's client and service.
pub fn owns(record: &Record, key: &str, entry: &Entry, seen: &Seen) -> bool {
    match &entry.uid {
        Some(uid) => *uid == seen.uid,
        // Created but not recorded yet (a start in progress, or cut off by a crash).
        None if !record.nonce.is_empty() => seen.nonce.as_deref() == Some(record.nonce.as_str()),
        // A record from before nonces: the service label, which carries the client, decides.
        None => seen.service_label.as_deref() == Some(key),
    }
}

/// What a start does about the record it finds for its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnStart {
    /// No record: create one.
    Create,
    /// The same start again (a retried request): answer its status, change nothing.
    Repeat,
    /// Another user of the same client has this name.
    Taken,
    /// A start or stop of this service is in progress: refuse, the client retries.
    Busy,
    /// Replace the previous start (stop it first), which may have been abandoned.
    Replace,
}

/// Decides what a start of `start_id` for `user_id` does, given the current record.
/// `abandoned_after` is how long a start or stop may take before its record is treated as
/// left behind by a replica that is gone.
pub fn on_start(
    current: Option<&Record>,
    user_id: &str,
    start_id: &str,
    now: u64,
    abandoned_after: u64,
) -> OnStart {
    let Some(r) = current else {
        return OnStart::Create;
    };
    if r.user_id != user_id {
        return OnStart::Taken;
    }
    let in_progress = r.state != State::Started && !is_abandoned(r, now, abandoned_after);
    if in_progress {
        // A retried request of the start in progress is answered with its status.
        if r.state == State::Starting && r.start_id == start_id {
            return OnStart::Repeat;
        }
        return OnStart::Busy;
    }
    if r.start_id == start_id && r.state == State::Started {
        return OnStart::Repeat;
    }
    OnStart::Replace
}

/// Whether a record's start or stop has run for longer than any live one may.
pub fn is_abandoned(record: &Record, now: u64, abandoned_after: u64) -> bool {
    record.state != State::Started && now.saturating_sub(record.since) > abandoned_after
}

/// What a start does when its next record write is refused (someone else wrote the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnLostRecord {
    /// A stop took over: delete the object being created, then clear `startPending`.
    StoppedByStop,
    /// The record is gone or belongs to another start: delete the object being created.
    Gone,
    /// Only a harmless change (nothing this start depends on): retry the write.
    Retry,
}

/// Decides, from the record as it now is, what a start with `nonce` does after losing a write.
pub fn on_lost_record(now: Option<&Record>, nonce: &str) -> OnLostRecord {
    match now {
        None => OnLostRecord::Gone,
        Some(r) if r.nonce != nonce => OnLostRecord::Gone,
        Some(r) if r.state == State::Stopping => OnLostRecord::StoppedByStop,
        Some(r) if r.state == State::Starting => OnLostRecord::Retry,
        Some(_) => OnLostRecord::Gone,
    }
}

/// Whether the record found when a stop ends is still the one it stopped (same start), so the
/// stop may delete it; a newer start's record is left alone.
pub fn same_start(stopped: &Record, now: &Record) -> bool {
    stopped.nonce == now.nonce && stopped.start_id == now.start_id
}

/// Whether a stop, having waited `waited` seconds, may delete the objects a second time and the
/// record: once the start it interrupted has removed its last object, or when that start has
/// had longer than any live one takes (its replica is gone).
pub fn stop_may_finish(record: &Record, waited: u64, abandoned_after: u64) -> bool {
    !record.start_pending || waited > abandoned_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            client: "portal".into(),
            service_id: "lab".into(),
            user_id: "alice".into(),
            user: "portal_alice".into(),
            namespace: "team".into(),
            start_id: "s1".into(),
            service: "jupyterlab/default".into(),
            tag: "lab".into(),
            objects: Vec::new(),
            nonce: "n1".into(),
            route: None,
            state: State::Started,
            start_pending: false,
            since: 100,
        }
    }

    fn entry(uid: Option<&str>) -> Entry {
        Entry {
            object: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "lab".into(),
            },
            uid: uid.map(str::to_string),
        }
    }

    fn seen(uid: &str, nonce: Option<&str>, label: Option<&str>) -> Seen {
        Seen {
            uid: uid.into(),
            nonce: nonce.map(str::to_string),
            service_label: label.map(str::to_string),
        }
    }

    #[test]
    fn only_the_recorded_identity_makes_an_object_the_services() {
        let r = record();
        // A recorded uid decides alone, whatever the labels say.
        assert!(owns(&r, "k", &entry(Some("u1")), &seen("u1", None, None)));
        assert!(!owns(
            &r,
            "k",
            &entry(Some("u1")),
            &seen("u2", Some("n1"), Some("k"))
        ));
        // Not recorded yet: this start's nonce, never another's, never the label alone.
        assert!(owns(&r, "k", &entry(None), &seen("u2", Some("n1"), None)));
        assert!(!owns(
            &r,
            "k",
            &entry(None),
            &seen("u2", Some("n2"), Some("k"))
        ));
        assert!(!owns(&r, "k", &entry(None), &seen("u2", None, Some("k"))));
        // A record from before nonces: the label that carries the client.
        let legacy = Record {
            nonce: String::new(),
            ..record()
        };
        assert!(owns(
            &legacy,
            "k",
            &entry(None),
            &seen("u", None, Some("k"))
        ));
        assert!(!owns(
            &legacy,
            "k",
            &entry(None),
            &seen("u", None, Some("other"))
        ));
        assert!(!owns(&legacy, "k", &entry(None), &seen("u", None, None)));
    }

    #[test]
    fn old_records_read_as_started_without_nonce() {
        let text = r#"{"client":"p","serviceId":"s","userId":"u","user":"p_u","namespace":"team","startId":"1","service":"a/default","tag":"s","objects":[{"apiVersion":"v1","kind":"Pod","name":"s"}]}"#;
        let r: Record = serde_json::from_str(text).unwrap();
        assert_eq!(r.state, State::Started);
        assert_eq!(r.nonce, "");
        assert_eq!(r.objects[0].uid, None);
        assert_eq!(r.objects[0].object.name, "s");
    }

    #[test]
    fn starts_are_ordered_by_the_record() {
        let started = record();
        assert_eq!(on_start(None, "alice", "s1", 100, 60), OnStart::Create);
        assert_eq!(
            on_start(Some(&started), "bob", "s1", 100, 60),
            OnStart::Taken
        );
        assert_eq!(
            on_start(Some(&started), "alice", "s1", 100, 60),
            OnStart::Repeat
        );
        assert_eq!(
            on_start(Some(&started), "alice", "s2", 100, 60),
            OnStart::Replace
        );
        let starting = Record {
            state: State::Starting,
            ..record()
        };
        assert_eq!(
            on_start(Some(&starting), "alice", "s1", 150, 60),
            OnStart::Repeat
        );
        let stopping = Record {
            state: State::Stopping,
            ..record()
        };
        assert_eq!(
            on_start(Some(&stopping), "alice", "s1", 150, 60),
            OnStart::Busy
        );
        for state in [State::Starting, State::Stopping] {
            let busy = Record { state, ..record() };
            assert_eq!(on_start(Some(&busy), "alice", "s2", 160, 60), OnStart::Busy);
            // Abandoned by a replica that is gone: replaced.
            assert_eq!(
                on_start(Some(&busy), "alice", "s1", 161, 60),
                OnStart::Replace
            );
            assert!(is_abandoned(&busy, 161, 60));
            assert!(!is_abandoned(&busy, 160, 60));
        }
        assert!(!is_abandoned(&started, 10_000, 60));
    }

    #[test]
    fn a_start_that_loses_its_record_cleans_up() {
        let starting = Record {
            state: State::Starting,
            ..record()
        };
        assert_eq!(on_lost_record(None, "n1"), OnLostRecord::Gone);
        assert_eq!(on_lost_record(Some(&starting), "n2"), OnLostRecord::Gone);
        assert_eq!(on_lost_record(Some(&starting), "n1"), OnLostRecord::Retry);
        let stopping = Record {
            state: State::Stopping,
            start_pending: true,
            ..record()
        };
        assert_eq!(
            on_lost_record(Some(&stopping), "n1"),
            OnLostRecord::StoppedByStop
        );
        assert_eq!(on_lost_record(Some(&record()), "n1"), OnLostRecord::Gone);
    }

    #[test]
    fn a_stop_ends_only_the_start_it_stopped() {
        let mine = record();
        assert!(same_start(
            &mine,
            &Record {
                state: State::Stopping,
                ..record()
            }
        ));
        let newer = Record {
            nonce: "n2".into(),
            ..record()
        };
        assert!(!same_start(&mine, &newer));
    }

    #[test]
    fn a_stop_waits_for_an_interrupted_start_but_not_for_ever() {
        let pending = Record {
            state: State::Stopping,
            start_pending: true,
            ..record()
        };
        assert!(!stop_may_finish(&pending, 60, 60));
        assert!(stop_may_finish(&pending, 61, 60));
        let done = Record {
            start_pending: false,
            ..pending
        };
        assert!(stop_may_finish(&done, 0, 60));
    }
}
