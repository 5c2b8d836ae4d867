//! The apiserver's syntactic rules, with its wording: label keys and values, object names
//! (RFC 1123 subdomain / label, RFC 1035 label), and immutable fields on update.

use crate::error::FieldError;
use crate::resources::ResourceInfo;
use serde_json::Value;

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label_body(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == b'-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Errors for one label value (empty list when valid).
pub fn label_value_errors(field: &str, value: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(FieldError::invalid_str(
            field,
            value,
            "must be no more than 63 characters",
        ));
    }
    if !value.is_empty() && !is_label_body(value) {
        errs.push(FieldError::invalid_str(field, value, LABEL_VALUE_MSG));
    }
    errs
}

/// Errors for one qualified name (a label or annotation key).
pub fn qualified_name_errors(field: &str, key: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push(FieldError::invalid_str(
                field,
                key,
                "prefix part must be non-empty",
            ));
        } else if !is_dns1123_subdomain(p) {
            errs.push(FieldError::invalid_str(
                field,
                key,
                format!("prefix part {DNS1123_SUBDOMAIN_MSG}"),
            ));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::invalid_str(
            field,
            key,
            "name part must be non-empty",
        ));
    } else {
        if name.len() > 63 {
            errs.push(FieldError::invalid_str(
                field,
                key,
                "name part must be no more than 63 characters",
            ));
        }
        if !is_label_body(name) {
            errs.push(FieldError::invalid_str(field, key, QUALIFIED_NAME_MSG));
        }
    }
    errs
}

/// Validates a `labels` map at `field` (e.g. `metadata.labels`).
pub fn labels_errors(field: &str, labels: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else {
        return errs;
    };
    for (k, v) in map {
        errs.extend(qualified_name_errors(field, k));
        match v {
            Value::String(s) => errs.extend(label_value_errors(field, s)),
            Value::Null => {}
            other => errs.push(FieldError::invalid_raw(
                field,
                other.to_string(),
                "label values must be strings",
            )),
        }
    }
    errs
}

/// Validates annotation keys.
pub fn annotations_errors(field: &str, annotations: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = annotations.and_then(Value::as_object) {
        for k in map.keys() {
            errs.extend(qualified_name_errors(field, k));
        }
    }
    errs
}

/// Validates `metadata.name` for a resource.
pub fn name_errors(info: &ResourceInfo, name: &str) -> Vec<FieldError> {
    let field = "metadata.name";
    if name.is_empty() {
        return vec![FieldError::required(
            field,
            "name or generateName is required",
        )];
    }
    let (ok, msg) = match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => (is_dns1123_label(name), DNS1123_LABEL_MSG),
        ("", "services") => (is_dns1035_label(name), DNS1035_LABEL_MSG),
        ("apiextensions.k8s.io", _) | ("rbac.authorization.k8s.io", _) => (
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "may not contain '/'",
        ),
        _ => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG),
    };
    if ok {
        Vec::new()
    } else {
        vec![FieldError::invalid_str(field, name, msg)]
    }
}

/// The label maps validated for every object: its own and those of any pod template.
pub fn object_label_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = labels_errors("metadata.labels", obj.pointer("/metadata/labels"));
    errs.extend(annotations_errors(
        "metadata.annotations",
        obj.pointer("/metadata/annotations"),
    ));
    errs.extend(labels_errors(
        "spec.template.labels",
        obj.pointer("/spec/template/metadata/labels"),
    ));
    errs.extend(labels_errors(
        "spec.jobTemplate.spec.template.labels",
        obj.pointer("/spec/jobTemplate/spec/template/metadata/labels"),
    ));
    if let Some(sel) = obj.pointer("/spec/selector/matchLabels") {
        errs.extend(labels_errors("spec.selector.matchLabels", Some(sel)));
    }
    errs
}

fn immutable(field: &str, old: &Value) -> FieldError {
    let rendered = match old {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    };
    FieldError::invalid_raw(field, rendered, "field is immutable")
}

/// Immutable-field checks on update (main resource only).
pub fn immutable_errors(info: &ResourceInfo, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let check = |errs: &mut Vec<FieldError>, ptr: &str, field: &str| {
        let (o, n) = (old.pointer(ptr), new.pointer(ptr));
        if o.is_some() && o != n {
            errs.push(immutable(field, o.unwrap_or(&Value::Null)));
        }
    };
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "services") => {
            let o = old.pointer("/spec/clusterIP").and_then(Value::as_str);
            let n = new.pointer("/spec/clusterIP").and_then(Value::as_str);
            if let (Some(o), Some(n)) = (o, n) {
                if o != n && !o.is_empty() {
                    errs.push(immutable("spec.clusterIP", &Value::String(o.into())));
                }
            }
        }
        ("batch", "jobs") => {
            check(&mut errs, "/spec/selector", "spec.selector");
            check(&mut errs, "/spec/completionMode", "spec.completionMode");
            let strip = |v: Option<&Value>| {
                let mut v = v.cloned().unwrap_or(Value::Null);
                if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                    m.remove("labels");
                    m.remove("annotations");
                }
                v
            };
            let (ot, nt) = (
                strip(old.pointer("/spec/template")),
                strip(new.pointer("/spec/template")),
            );
            if ot != nt {
                errs.push(immutable("spec.template", &ot));
            }
        }
        ("apps", "deployments") | ("apps", "replicasets") | ("apps", "daemonsets") => {
            check(&mut errs, "/spec/selector", "spec.selector");
        }
        ("apps", "statefulsets") => {
            check(&mut errs, "/spec/selector", "spec.selector");
            check(&mut errs, "/spec/serviceName", "spec.serviceName");
        }
        ("", "pods") => {
            let strip = |v: Option<&Value>| {
                let mut v = v.cloned().unwrap_or(Value::Null);
                if let Some(m) = v.as_object_mut() {
                    m.remove("nodeName");
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                }
                if let Some(cs) = v.pointer_mut("/containers").and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
                v
            };
            let o = old.pointer("/spec/nodeName");
            let n = new.pointer("/spec/nodeName");
            if o.is_some() && o != n {
                errs.push(immutable("spec.nodeName", o.unwrap_or(&Value::Null)));
            }
            if strip(old.pointer("/spec")) != strip(new.pointer("/spec")) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            check(&mut errs, "/spec/group", "spec.group");
            check(&mut errs, "/spec/names/plural", "spec.names.plural");
            check(&mut errs, "/spec/scope", "spec.scope");
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_value_wording() {
        let e = label_value_errors("metadata.labels", "x-");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "metadata.labels: Invalid value: \"x-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert!(label_value_errors("f", "").is_empty());
        assert!(label_value_errors("f", "user1-foobar").is_empty());
        assert!(label_value_errors("f", "User_1.a").is_empty());
        let long = "a".repeat(64);
        assert_eq!(
            label_value_errors("f", &long)[0].detail,
            "must be no more than 63 characters"
        );
    }

    #[test]
    fn label_keys() {
        assert!(qualified_name_errors("f", "portico.dev/owner").is_empty());
        assert!(qualified_name_errors("f", "app").is_empty());
        assert!(!qualified_name_errors("f", "Bad.Prefix/x").is_empty());
        assert!(!qualified_name_errors("f", "a b").is_empty());
        assert!(!qualified_name_errors("f", "/x").is_empty());
        let errs = labels_errors("metadata.labels", Some(&json!({"ok": "fine", "x": "-bad"})));
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn names() {
        let svc = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "services")
            .unwrap();
        assert!(name_errors(&svc, "web").is_empty());
        assert!(!name_errors(&svc, "1web").is_empty());
        assert!(!name_errors(&svc, "Web").is_empty());
    }
}
