//! PATCH bodies: JSON patch, merge patch, strategic merge patch (approximated) and server-side
//! apply with field managers recorded in `metadata.managedFields` (approximated: maps are
//! tracked per key, lists are atomic). See the README for where this differs from the apiserver.

use crate::util::now_rfc3339;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// application/json-patch+json
    Json,
    /// application/merge-patch+json
    Merge,
    /// application/strategic-merge-patch+json
    Strategic,
    /// application/apply-patch+yaml
    Apply,
}

impl PatchKind {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// Applies a strategic merge patch, approximately: a merge patch in which lists of objects that
/// all carry a `name` are merged by name (`$patch: delete` removes an element) and the
/// `$setElementOrder`/`$retainKeys` directives are ignored.
pub fn strategic_merge_patch(doc: &Value, patch: &Value) -> Value {
    smp(doc, patch)
}

fn named_list(v: &[Value]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|e| e.get("name").is_some_and(Value::is_string))
}

fn smp(doc: &Value, patch: &Value) -> Value {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            let mut out = d.clone();
            for (k, pv) in p {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(dv) => smp(dv, pv),
                    None => strip_directives(pv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(d), Value::Array(p)) if named_list(d) && named_list(p) => {
            let mut out = d.clone();
            for pe in p {
                let name = pe.get("name").cloned();
                let delete = pe.get("$patch").and_then(Value::as_str) == Some("delete");
                let pos = out.iter().position(|e| e.get("name") == name.as_ref());
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (Some(i), false) => out[i] = smp(&out[i], pe),
                    (None, false) => out.push(strip_directives(pe)),
                    (None, true) => {}
                }
            }
            Value::Array(out)
        }
        (_, p) => strip_directives(p),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// A field path (map keys from the root).
pub type FieldPath = Vec<String>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

const SKIP_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
];

/// The leaf fields set in `v` (maps recurse, lists and scalars are leaves).
pub fn leaves(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Value::Object(m) = v {
        for (k, child) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = child {
                    for (mk, mv) in meta {
                        if SKIP_META.contains(&mk.as_str()) {
                            continue;
                        }
                        collect(mv, vec!["metadata".into(), mk.clone()], &mut out);
                    }
                }
                continue;
            }
            collect(child, vec![k.clone()], &mut out);
        }
    }
    out
}

/// Maps the apiserver treats as one value (`+mapType=atomic` / `+structType=atomic`): an apply
/// replaces them whole. A Service's `spec.selector` and a workload's label selector are such.
fn is_atomic(path: &FieldPath) -> bool {
    path.len() == 2 && path[0] == "spec" && path[1] == "selector"
}

fn collect(v: &Value, path: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !is_atomic(&path) => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                collect(child, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a path.
pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// Removes the value at a path (and now-empty parent maps below the second level).
pub fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *v;
    for p in parents {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *v;
    for p in parents {
        let m = crate::util::as_object_mut(cur);
        cur = m
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    crate::util::as_object_mut(cur).insert(last.clone(), value);
}

/// Renders a field set as `fieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let keyed: Vec<String> = path.iter().map(|p| format!("f:{p}")).collect();
        let mut cur = &mut root;
        for k in keyed {
            let m = crate::util::as_object_mut(cur);
            cur = m.entry(k).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// Reads a `fieldsV1` tree back (element keys `k:`/`v:` make their list atomic).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk_fields(v, Vec::new(), &mut out);
    out
}

fn walk_fields(v: &Value, path: FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else {
        return;
    };
    let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    let element_keys = m
        .keys()
        .any(|k| k.starts_with("k:") || k.starts_with("v:") || k.starts_with("i:"));
    if (children.is_empty() || element_keys) && !path.is_empty() {
        out.insert(path);
        return;
    }
    for (k, child) in children {
        let mut p = path.clone();
        p.push(k[2..].to_string());
        walk_fields(child, p, out);
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion it was written with.
    pub api_version: String,
    /// Subresource ("" for the main resource).
    pub subresource: String,
    /// Last change time.
    pub time: String,
    /// Owned fields.
    pub fields: FieldSet,
}

/// Reads `metadata.managedFields`.
pub fn managers(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Manager {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                    subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                    time: e["time"].as_str().unwrap_or_default().to_string(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields` (entries owning nothing are dropped).
pub fn set_managers(obj: &mut Value, ms: &[Manager]) {
    let arr: Vec<Value> = ms
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    let meta = crate::util::meta_mut(obj);
    if arr.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(arr));
    }
}

fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A server-side apply conflict: (manager, dotted field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// Its apiVersion.
    pub api_version: String,
    /// Its operation: the apiserver names the apiVersion of an `Update` manager only.
    pub operation: String,
    /// `.spec.replicas`
    pub field: String,
}

/// How the apiserver names a manager in a conflict (its fieldmanager's `printManager`):
/// `"m" using v1` for an Update manager, `"m"` for an Apply manager.
fn printed_manager(c: &Conflict) -> String {
    if c.operation == "Update" {
        format!("\"{}\" using {}", c.manager, c.api_version)
    } else {
        format!("\"{}\"", c.manager)
    }
}

/// Renders conflicts like the apiserver: `Apply failed with 1 conflict: conflict with "m": .spec.x`
/// (`"m" using v1` when `m` wrote with an update rather than an apply).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            printed_manager(c),
            c.field
        );
    }
    let mut s = format!("Apply failed with {} conflicts: ", conflicts.len());
    let mut by: Vec<(String, Vec<String>)> = Vec::new();
    for c in conflicts {
        let who = printed_manager(c);
        match by.iter_mut().find(|(m, _)| *m == who) {
            Some(e) => e.1.push(c.field.clone()),
            None => by.push((who, vec![c.field.clone()])),
        }
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(m, fs)| {
            let list: Vec<String> = fs.iter().map(|f| format!("- {f}")).collect();
            format!("conflicts with {m}:\n{}", list.join("\n"))
        })
        .collect();
    s.push_str(&parts.join("\n"));
    s
}

fn dotted(path: &FieldPath) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// Server-side apply of `config` by `manager` onto `current` (None when creating).
pub fn server_side_apply(
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut obj = current.cloned().unwrap_or_else(|| json!({}));
    let mut ms = managers(&obj);
    let applied = leaves(config);
    let mut conflicts = Vec::new();
    for m in ms.iter_mut() {
        if m.manager == manager && m.operation == "Apply" && m.subresource == subresource {
            continue;
        }
        let mut lost = Vec::new();
        for owned in &m.fields {
            for p in &applied {
                if overlaps(owned, p) && get_path(&obj, p) != get_path(config, p) {
                    conflicts.push(Conflict {
                        manager: m.manager.clone(),
                        api_version: m.api_version.clone(),
                        operation: m.operation.clone(),
                        field: dotted(owned),
                    });
                    lost.push(owned.clone());
                    break;
                }
            }
        }
        if force {
            for l in lost {
                m.fields.remove(&l);
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let previous: FieldSet = ms
        .iter()
        .find(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied) {
        let owned_elsewhere = ms.iter().any(|m| {
            !(m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
                && m.fields.iter().any(|f| overlaps(f, p))
        });
        if !owned_elsewhere && !applied.iter().any(|a| a.starts_with(p)) {
            remove_path(&mut obj, p);
        }
    }
    for p in &applied {
        if let Some(v) = get_path(config, p) {
            set_path(&mut obj, p, v.clone());
        }
    }
    for k in ["apiVersion", "kind"] {
        if let Some(v) = config.get(k) {
            crate::util::as_object_mut(&mut obj).insert(k.into(), v.clone());
        }
    }
    let changed = previous != applied
        || current
            .map(|c| strip_mf(c) != strip_mf(&obj))
            .unwrap_or(true);
    match ms
        .iter_mut()
        .find(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
    {
        Some(m) => {
            if changed {
                m.time = now_rfc3339();
            }
            m.fields = applied;
            m.api_version = api_version.into();
        }
        None => ms.push(Manager {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version: api_version.into(),
            subresource: subresource.into(),
            time: now_rfc3339(),
            fields: applied,
        }),
    }
    set_managers(&mut obj, &ms);
    Ok(obj)
}

fn strip_mf(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

/// Records an `Update` by `manager`: it takes the fields it changed from everyone else.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
) {
    let mut ms = old.map(managers).unwrap_or_default();
    let new_leaves = leaves(new);
    let old_leaves = old.map(leaves).unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p))
        .filter(|p| {
            let in_status = p.first().map(String::as_str) == Some("status");
            if subresource == "status" {
                in_status
            } else {
                !in_status
            }
        })
        .cloned()
        .collect();
    let removed: Vec<&FieldPath> = old_leaves.difference(&new_leaves).collect();
    for m in ms.iter_mut() {
        m.fields.retain(|f| {
            !changed.iter().any(|c| overlaps(c, f)) && !removed.iter().any(|r| overlaps(r, f))
        });
    }
    if !changed.is_empty() {
        match ms.iter_mut().find(|m| {
            m.manager == manager && m.operation == "Update" && m.subresource == subresource
        }) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now_rfc3339();
                m.api_version = api_version.into();
            }
            None => ms.push(Manager {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                subresource: subresource.into(),
                time: now_rfc3339(),
                fields: changed,
            }),
        }
    }
    set_managers(new, &ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_kinds() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        let doc = json!({"a": 1, "b": {"c": 2}});
        assert_eq!(
            merge_patch(&doc, &json!({"b": {"c": null}, "d": 3})),
            json!({"a": 1, "b": {}, "d": 3})
        );
        let p = json!([{"op": "replace", "path": "/a", "value": 5}]);
        assert_eq!(json_patch(&doc, &p).unwrap()["a"], 5);
        assert!(json_patch(&doc, &json!([{"op": "test", "path": "/a", "value": 9}])).is_err());
    }

    #[test]
    fn smp_merges_named_lists() {
        let doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"$setElementOrder/containers": [], "spec": {"containers": [{"name": "b", "image": "z"}]}});
        let out = strategic_merge_patch(&doc, &p);
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
    }

    #[test]
    fn apply_conflicts_and_force() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let obj = server_side_apply(None, &cfg, "mgr1", "v1", "", false).unwrap();
        assert_eq!(obj["data"]["a"], "1");
        let other = json!({"metadata": {"name": "c"}, "data": {"a": "2"}});
        let err = server_side_apply(Some(&obj), &other, "mgr2", "v1", "", false).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"mgr1\": .data.a"
        );
        let forced = server_side_apply(Some(&obj), &other, "mgr2", "v1", "", true).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        let ms = managers(&forced);
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].manager, "mgr2");
        // Same value: no conflict.
        let same = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        assert!(server_side_apply(Some(&obj), &same, "mgr3", "v1", "", false).is_ok());
        // Dropping a field removes it.
        let less = json!({"metadata": {"name": "c", "labels": {"x": "y"}}});
        let out = server_side_apply(Some(&obj), &less, "mgr1", "v1", "", false).unwrap();
        assert!(out["data"].get("a").is_none());
        assert_eq!(out["metadata"]["labels"]["x"], "y");
    }

    #[test]
    fn forced_apply_replaces_an_atomic_selector_whole() {
        let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"a": "1"}}});
        let obj = server_side_apply(None, &cfg, "portico", "v1", "", false).unwrap();
        let mut edited = obj.clone();
        edited["spec"]["selector"]["b"] = json!("2");
        track_update(Some(&obj), &mut edited, "kubectl-edit", "v1", "");
        let restored = server_side_apply(Some(&edited), &cfg, "portico", "v1", "", true).unwrap();
        assert_eq!(restored["spec"]["selector"], json!({"a": "1"}));
    }

    #[test]
    fn update_takes_ownership() {
        let cfg = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let obj = server_side_apply(None, &cfg, "ctrl", "v1", "", false).unwrap();
        let mut edited = obj.clone();
        edited["data"]["a"] = json!("9");
        track_update(Some(&obj), &mut edited, "kubectl-edit", "v1", "");
        let err = server_side_apply(Some(&edited), &cfg, "ctrl", "v1", "", false).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
        let fv = to_fields_v1(&leaves(&cfg));
        assert_eq!(from_fields_v1(&fv), leaves(&cfg));
    }
}
