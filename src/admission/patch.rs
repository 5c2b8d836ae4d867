//! Edits → a JSON Patch of typed operations with escaped pointers.
//!
//! A key goes into an existing map with its own `add`; a missing map (or missing template
//! metadata) is added whole, holding just the keys being set — a map that exists is never
//! replaced.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::{Map as JsonMap, Value};

use crate::core::decision::{Edit, Place};
use crate::core::object::{Kind, Meta, Object};

/// The path tokens of a place's metadata for this kind.
fn base_tokens(kind: &Kind, place: Place) -> Vec<&'static str> {
    let mut tokens = match place {
        Place::Object => Vec::new(),
        Place::Template => kind
            .pod_template_path()
            .unwrap_or(&["spec", "template"])
            .to_vec(),
        Place::JobTemplate => vec!["spec", "jobTemplate"],
    };
    tokens.push("metadata");
    tokens
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

#[derive(Default)]
struct MapEdits {
    set: BTreeMap<String, String>,
    remove: Vec<String>,
}

/// The JSON Patch that applies `edits` to `object` (of `kind`). Empty when there are no edits.
pub fn build(kind: &Kind, object: &Object, edits: &[Edit]) -> Patch {
    // Group by (place, labels?) so a missing map is added once with all its keys.
    let mut groups: BTreeMap<(Place, bool), MapEdits> = BTreeMap::new();
    let mut ops = Vec::new();
    for edit in edits {
        match edit {
            Edit::SetLabel { place, key, value } => {
                groups
                    .entry((*place, true))
                    .or_default()
                    .set
                    .insert(key.clone(), value.clone());
            }
            Edit::RemoveLabel { place, key } => groups
                .entry((*place, true))
                .or_default()
                .remove
                .push(key.clone()),
            Edit::SetAnnotation { place, key, value } => {
                groups
                    .entry((*place, false))
                    .or_default()
                    .set
                    .insert(key.clone(), value.clone());
            }
            Edit::RemoveAnnotation { place, key } => groups
                .entry((*place, false))
                .or_default()
                .remove
                .push(key.clone()),
            Edit::SetExposureUser(user) => {
                let value = Value::String(user.clone());
                ops.push(if object.exposure.is_some() {
                    add(pointer(&["spec", "user"]), value)
                } else {
                    add(
                        pointer(&["spec"]),
                        Value::Object(JsonMap::from_iter([("user".to_string(), value)])),
                    )
                });
            }
        }
    }
    let mut template_added = false;
    for ((place, is_labels), group) in groups {
        let meta: Option<&Meta> = match place {
            Place::Object => Some(&object.meta),
            Place::Template => object.template.as_ref(),
            Place::JobTemplate => object.job_template.as_ref(),
        };
        let base = base_tokens(kind, place);
        let field = if is_labels { "labels" } else { "annotations" };
        let existing = meta.and_then(|m| {
            if is_labels {
                m.labels.as_ref()
            } else {
                m.annotations.as_ref()
            }
        });
        let as_json = |set: BTreeMap<String, String>| {
            Value::Object(
                set.into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        };
        if existing.is_none() {
            if group.set.is_empty() {
                continue;
            }
            if meta.is_none() && !template_added {
                // The template has no metadata at all: add it with this map inside.
                template_added = true;
                let inner = JsonMap::from_iter([(field.to_string(), as_json(group.set))]);
                ops.push(add(pointer(&base), Value::Object(inner)));
            } else {
                let mut tokens = base.clone();
                tokens.push(field);
                ops.push(add(pointer(&tokens), as_json(group.set)));
            }
            continue;
        }
        for key in &group.remove {
            let mut tokens = base.clone();
            tokens.extend([field, key.as_str()]);
            ops.push(PatchOperation::Remove(RemoveOperation {
                path: pointer(&tokens),
            }));
        }
        for (key, value) in group.set {
            let mut tokens = base.clone();
            tokens.extend([field, key.as_str()]);
            ops.push(add(pointer(&tokens), Value::String(value)));
        }
    }
    Patch(ops)
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_label(place: Place, key: &str, value: &str) -> Edit {
        Edit::SetLabel {
            place,
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn golden_patch_adds_missing_maps_whole_and_escapes_keys() {
        let object = Object::default();
        let patch = build(
            &Kind::Pod,
            &object,
            &[
                set_label(Place::Object, "jarvice-job-ipaddr", "user1-foobar"),
                set_label(Place::Object, "portico.dev/owner", "user1"),
            ],
        );
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"add","path":"/metadata/labels","value":{"jarvice-job-ipaddr":"user1-foobar","portico.dev/owner":"user1"}}]"#
        );
    }

    #[test]
    fn golden_patch_adds_keys_into_existing_maps_and_removes() {
        let mut object = Object::default();
        object.meta.labels = Some([("app".to_string(), "x".to_string())].into());
        object.meta.annotations = Some(Default::default());
        let patch = build(
            &Kind::Pod,
            &object,
            &[
                set_label(Place::Object, "portico.dev/owner", "user1"),
                Edit::RemoveLabel {
                    place: Place::Object,
                    key: "jarvice-pod0-job-ipaddr".into(),
                },
                Edit::SetAnnotation {
                    place: Place::Object,
                    key: "portico.dev/user".into(),
                    value: "a~b".into(),
                },
            ],
        );
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"add","path":"/metadata/annotations/portico.dev~1user","value":"a~b"},{"op":"remove","path":"/metadata/labels/jarvice-pod0-job-ipaddr"},{"op":"add","path":"/metadata/labels/portico.dev~1owner","value":"user1"}]"#
        );
    }

    #[test]
    fn golden_patch_strips_a_cronjobs_job_metadata() {
        let object = Object {
            job_template: Some(Meta {
                annotations: Some([("portico.dev/user".to_string(), "user1".to_string())].into()),
                ..Meta::default()
            }),
            ..Object::default()
        };
        let patch = build(
            &Kind::CronJob,
            &object,
            &[Edit::RemoveAnnotation {
                place: Place::JobTemplate,
                key: "portico.dev/user".into(),
            }],
        );
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"remove","path":"/spec/jobTemplate/metadata/annotations/portico.dev~1user"}]"#
        );
    }

    #[test]
    fn golden_patch_for_cronjob_template_without_metadata() {
        let object = Object {
            template: None,
            ..Object::default()
        };
        let patch = build(
            &Kind::CronJob,
            &object,
            &[
                set_label(Place::Template, "jarvice-job-ipaddr", "u-t"),
                Edit::SetAnnotation {
                    place: Place::Template,
                    key: "portico.dev/user".into(),
                    value: "u".into(),
                },
            ],
        );
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"add","path":"/spec/jobTemplate/spec/template/metadata","value":{"annotations":{"portico.dev/user":"u"}}},{"op":"add","path":"/spec/jobTemplate/spec/template/metadata/labels","value":{"jarvice-job-ipaddr":"u-t"}}]"#
        );
    }
}
