//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1` answers with a
//! `meta.k8s.io/v1` Table, with kubectl's usual columns for common kinds and a CRD's
//! `additionalPrinterColumns`.

use crate::resources::{PrinterColumn, ResourceInfo};
use crate::util::{human_age, meta_str};
use serde_json::{json, Value};

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn col(name: &str, kind: &str, priority: i64) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": name, "priority": priority})
}

/// Evaluates a simple JSONPath: `.a.b`, `.a[0].b`, and a filter `.a[?(@.type=="Ready")].b`
/// (the first element that matches), as CRD printer columns use them.
pub fn json_path(obj: &Value, path: &str) -> Value {
    // Split on dots outside brackets, so `@.type` inside a filter stays whole.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let path = path.trim_start_matches('.');
    for (i, c) in path.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                parts.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&path[start..]);
    let mut cur = obj;
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, Some(rest.trim_end_matches(']'))),
            None => (part, None),
        };
        cur = match cur.get(key) {
            Some(v) => v,
            None => return Value::Null,
        };
        let found = match index {
            None => Some(cur),
            Some(ix) => match ix.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                Some(filter) => {
                    let (field, want) = filter.split_once("==").unwrap_or((filter, ""));
                    let want = want.trim().trim_matches('"').trim_matches('\'');
                    cur.as_array().and_then(|items| {
                        items.iter().find(|item| {
                            item.get(field.trim()).and_then(Value::as_str) == Some(want)
                        })
                    })
                }
                None => ix.parse::<usize>().ok().and_then(|i| cur.get(i)),
            },
        };
        cur = match found {
            Some(v) => v,
            None => return Value::Null,
        };
    }
    cur.clone()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(x) if x.is_empty() => "<none>".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn columns(info: &ResourceInfo) -> Vec<Value> {
    if is_event(info) {
        // As the apiserver prints events: newest facts first, the name only with -o wide.
        return vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Subobject", "string", 1),
            col("Source", "string", 1),
            col("Message", "string", 0),
            col("First Seen", "string", 1),
            col("Count", "string", 1),
            col("Name", "string", 1),
        ];
    }
    let mut c = vec![col("Name", "string", 0)];
    match (info.group.as_str(), info.plural.as_str()) {
        ("coordination.k8s.io", "leases") => {
            c.extend([col("Holder", "string", 0), col("Age", "string", 0)])
        }
        ("", "pods") => {
            c.extend([
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
            ]);
        }
        ("", "services") => c.extend([
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            col("Age", "string", 0),
            col("Selector", "string", 1),
        ]),
        ("", "namespaces") => c.extend([col("Status", "string", 0), col("Age", "string", 0)]),
        ("batch", "jobs") => c.extend([
            col("Status", "string", 0),
            col("Completions", "string", 0),
            col("Age", "string", 0),
        ]),
        ("apps", "deployments") | ("apps", "statefulsets") | ("apps", "replicasets") => {
            c.extend([col("Ready", "string", 0), col("Age", "string", 0)])
        }
        ("networking.k8s.io", "ingresses") => c.extend([
            col("Class", "string", 0),
            col("Hosts", "string", 0),
            col("Address", "string", 0),
            col("Age", "string", 0),
        ]),
        _ => {
            for pc in &info.columns {
                c.push(col(&pc.name, &pc.kind, pc.priority));
            }
            if !info.columns.iter().any(|pc| pc.name == "Age") {
                c.push(col("Age", "string", 0));
            }
        }
    }
    c
}

/// `v1` Events and `events.k8s.io/v1` Events.
fn is_event(info: &ResourceInfo) -> bool {
    info.plural == "events" && matches!(info.group.as_str(), "" | "events.k8s.io")
}

/// An Event's row, in [`columns`]' order, whichever of the two APIs it came from.
fn event_cells(o: &Value) -> Vec<Value> {
    let first_of = |paths: &[&str]| {
        paths
            .iter()
            .map(|p| json_path(o, p))
            .find(|v| !v.is_null() && v.as_str() != Some(""))
            .unwrap_or(Value::Null)
    };
    let last = first_of(&[
        ".lastTimestamp",
        ".series.lastObservedTime",
        ".deprecatedLastTimestamp",
        ".eventTime",
        ".metadata.creationTimestamp",
    ]);
    let first = first_of(&[
        ".firstTimestamp",
        ".deprecatedFirstTimestamp",
        ".eventTime",
        ".metadata.creationTimestamp",
    ]);
    let regarding = first_of(&[".involvedObject", ".regarding"]);
    let object = format!(
        "{}/{}",
        regarding["kind"].as_str().unwrap_or("").to_lowercase(),
        regarding["name"].as_str().unwrap_or("")
    );
    let source = first_of(&[
        ".source.component",
        ".reportingController",
        ".reportingComponent",
        ".deprecatedSource.component",
    ]);
    let message = first_of(&[".message", ".note"]);
    let count = first_of(&[".count", ".series.count", ".deprecatedCount"]);
    vec![
        json!(human_age(last.as_str())),
        json!(s(&json_path(o, ".type"))),
        json!(s(&json_path(o, ".reason"))),
        json!(object),
        json!(s(&regarding["fieldPath"])),
        json!(s(&source)),
        json!(s(&message)),
        json!(human_age(first.as_str())),
        json!(count.as_i64().unwrap_or(1).to_string()),
        json!(meta_str(o, "name")),
    ]
}

fn cells(info: &ResourceInfo, o: &Value) -> Vec<Value> {
    if is_event(info) {
        return event_cells(o);
    }
    let name = json!(meta_str(o, "name"));
    let age = json!(human_age(
        o.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
    ));
    match (info.group.as_str(), info.plural.as_str()) {
        ("coordination.k8s.io", "leases") => {
            vec![name, json!(s(&json_path(o, ".spec.holderIdentity"))), age]
        }
        ("", "pods") => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c["ready"].as_bool() == Some(true))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            let mut phase = s(&json_path(o, ".status.phase"));
            if let Some(r) = o.pointer("/status/reason").and_then(Value::as_str) {
                phase = r.to_string();
            }
            // As kubectl's printer: a waiting container's reason (ErrImagePull) says more.
            if let Some(r) = statuses
                .iter()
                .find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str))
            {
                phase = r.to_string();
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                phase = "Terminating".into();
            }
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts.to_string()),
                age,
                json!(s(&json_path(o, ".status.podIP"))),
                json!(s(&json_path(o, ".spec.nodeName"))),
            ]
        }
        ("", "services") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                None => format!("{}/{proto}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ext: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let ty = o
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ext = if !ext.is_empty() {
                ext.join(",")
            } else if ty == "LoadBalancer" {
                "<pending>".into()
            } else {
                "<none>".into()
            };
            let sel: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(ty),
                json!(s(&json_path(o, ".spec.clusterIP"))),
                json!(ext),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                }),
                age,
                json!(if sel.is_empty() {
                    "<none>".into()
                } else {
                    sel.join(",")
                }),
            ]
        }
        ("", "namespaces") => vec![name, json!(s(&json_path(o, ".status.phase"))), age],
        ("batch", "jobs") => {
            let succeeded = o
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let completions = o
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .map_or("<none>".to_string(), |c| c.to_string());
            let complete = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Complete" && c["status"] == "True")
                });
            let status = if complete { "Complete" } else { "Running" };
            vec![
                name,
                json!(status),
                json!(format!("{succeeded}/{completions}")),
                age,
            ]
        }
        ("apps", _) => {
            let ready = o
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            vec![name, json!(format!("{ready}/{want}")), age]
        }
        ("networking.k8s.io", "ingresses") => {
            let hosts: Vec<String> = o
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| r["host"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(&json_path(o, ".spec.ingressClassName"))),
                json!(if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                }),
                json!(""),
                age,
            ]
        }
        _ => {
            let mut c = vec![name];
            let cols: &[PrinterColumn] = &info.columns;
            for pc in cols {
                let v = json_path(o, &pc.json_path);
                if pc.kind == "date" {
                    c.push(json!(human_age(v.as_str())));
                } else {
                    c.push(match v {
                        Value::Null => Value::Null,
                        Value::String(x) => json!(x),
                        other => other,
                    });
                }
            }
            if !info.columns.iter().any(|pc| pc.name == "Age") {
                c.push(age);
            }
            c
        }
    }
}

fn row(info: &ResourceInfo, o: &Value, full: bool) -> Value {
    let object = if full {
        o.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
    };
    json!({"cells": cells(info, o), "object": object})
}

/// Converts a list or a single object into a Table.
pub fn to_table(info: &ResourceInfo, v: &Value, include_object: bool) -> Value {
    let (rows, rv) = match v.get("items").and_then(Value::as_array) {
        Some(items) => (
            items
                .iter()
                .map(|o| row(info, o, include_object))
                .collect::<Vec<_>>(),
            v.pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!("")),
        ),
        None => (
            vec![row(info, v, include_object)],
            v.pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!("")),
        ),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns(info),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_accept() {
        let o = json!({"spec": {"ports": [{"port": 80}]}});
        assert_eq!(json_path(&o, ".spec.ports[0].port"), json!(80));
        assert_eq!(json_path(&o, ".spec.nope"), Value::Null);
        let st = json!({"status": {"conditions": [{"type": "Conflict", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            json_path(&st, ".status.conditions[?(@.type==\"Ready\")].status"),
            json!("True")
        );
        assert_eq!(
            json_path(&st, ".status.conditions[?(@.type==\"Gone\")].status"),
            Value::Null
        );
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    fn builtin(group: &str, plural: &str) -> ResourceInfo {
        crate::resources::builtins()
            .into_iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap()
    }

    fn names(info: &ResourceInfo) -> Vec<String> {
        columns(info)
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn leases_show_their_holder_and_events_what_happened_to_what() {
        let leases = builtin("coordination.k8s.io", "leases");
        assert_eq!(names(&leases), ["Name", "Holder", "Age"]);
        let lease = json!({"metadata": {"name": "portico-provisioner"}, "spec": {"holderIdentity": "replica-a"}});
        assert_eq!(cells(&leases, &lease)[1], json!("replica-a"));
        let events = builtin("", "events");
        assert_eq!(
            names(&events),
            ["Last Seen", "Type", "Reason", "Object", "Message"]
        );
        let event = json!({"metadata": {"name": "lab.1"}, "type": "Warning", "reason": "InvalidName",
            "involvedObject": {"kind": "Job", "name": "1lab"}, "message": "no Service",
            "source": {"component": "portico"}, "count": 2});
        let row = cells(&events, &event);
        assert_eq!(row.len(), columns(&events).len());
        assert_eq!(
            row[1..4].to_vec(),
            vec![json!("Warning"), json!("InvalidName"), json!("job/1lab")]
        );
        assert_eq!(row[5], json!("portico"));
        assert_eq!(row[6], json!("no Service"));
        assert_eq!(row[8], json!("2"));
        let modern = builtin("events.k8s.io", "events");
        let event = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Started",
            "regarding": {"kind": "Pod", "name": "p"}, "note": "started", "reportingController": "kubelet"});
        let row = cells(&modern, &event);
        assert_eq!(row[3], json!("pod/p"));
        assert_eq!(row[6], json!("started"));
    }
}
