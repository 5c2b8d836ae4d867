//! API errors shaped like the apiserver's `metav1.Status` (kind Status, status Failure, message,
//! reason, details, code), and field errors rendered with the apiserver's wording.

use crate::resources::ResourceInfo;
use serde_json::{json, Value};
use std::fmt;

/// One field error, rendered as `<field>: Invalid value: <value>: <detail>` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path such as `metadata.labels` or `spec.ports[0].nodePort`.
    pub field: String,
    /// Which kind of error.
    pub kind: FieldErrorKind,
    /// The offending value, already rendered (strings quoted, numbers bare).
    pub value: String,
    /// Explanation.
    pub detail: String,
}

/// The kinds of field error the sandbox produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Invalid value`
    Invalid,
    /// `Required value`
    Required,
    /// `Forbidden`
    Forbidden,
    /// `Duplicate value`
    Duplicate,
    /// `Unsupported value`
    NotSupported,
}

impl FieldError {
    /// An `Invalid value` error for a string value (quoted).
    pub fn invalid_str(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value: Value::String(value.to_string()).to_string(),
            detail: detail.into(),
        }
    }
    /// An `Invalid value` error for an already rendered value.
    pub fn invalid_raw(field: impl Into<String>, value: String, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value,
            detail: detail.into(),
        }
    }
    /// A `Required value` error.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            value: String::new(),
            detail: detail.into(),
        }
    }
    /// A `Forbidden` error.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            value: String::new(),
            detail: detail.into(),
        }
    }
    /// A `Duplicate value` error.
    pub fn duplicate(field: impl Into<String>, value: String) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            value,
            detail: String::new(),
        }
    }
    /// An `Unsupported value` error.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            value: Value::String(value.to_string()).to_string(),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
        }
    }

    /// The message without the field prefix (as in `details.causes[].message`).
    pub fn body(&self) -> String {
        match self.kind {
            FieldErrorKind::Invalid => format!("Invalid value: {}: {}", self.value, self.detail),
            FieldErrorKind::Required => format!("Required value: {}", self.detail),
            FieldErrorKind::Forbidden => format!("Forbidden: {}", self.detail),
            FieldErrorKind::Duplicate => format!("Duplicate value: {}", self.value),
            FieldErrorKind::NotSupported => {
                format!("Unsupported value: {}: {}", self.value, self.detail)
            }
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// An error answered to a client as a `metav1.Status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (NotFound, AlreadyExists, Conflict, Invalid, ...).
    pub reason: String,
    /// Human readable message.
    pub message: String,
    /// `details`, when there are any.
    pub details: Option<Value>,
    /// `Retry-After` seconds for 429s.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A bare error.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, info: &ResourceInfo, name: &str) -> Self {
        let mut d = json!({ "name": name, "kind": info.plural });
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        self.details = Some(d);
        self
    }

    /// `pods "x" not found`.
    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", info.group_resource(), name),
        )
        .with_details(info, name)
    }

    /// `namespaces "x" not found`.
    pub fn namespace_not_found(ns: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some(json!({"name": ns, "kind": "namespaces"}));
        e
    }

    /// `pods "x" already exists`.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", info.group_resource(), name),
        )
        .with_details(info, name)
    }

    /// The optimistic-concurrency conflict.
    pub fn conflict(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                info.group_resource(),
                name
            ),
        )
        .with_details(info, name)
    }

    /// A conflict with a custom message (server-side apply, preconditions).
    pub fn conflict_msg(info: &ResourceInfo, name: &str, message: String) -> Self {
        Self::new(409, "Conflict", message).with_details(info, name)
    }

    /// 422 `Kind "name" is invalid: ...`.
    pub fn invalid(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if info.group.is_empty() {
            info.kind.clone()
        } else {
            format!("{}.{}", info.kind, info.group)
        };
        let joined = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!(
                "[{}]",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        let mut details = json!({"name": name, "kind": info.kind, "causes": causes});
        if !info.group.is_empty() {
            details["group"] = json!(info.group);
        }
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {joined}"),
        );
        e.details = Some(details);
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 500 InternalError with the apiserver's prefix.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        e.details = Some(json!({"causes": [{"message": message}]}));
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 404 for an unknown path.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 410 Expired: `too old resource version: 5 (10)`.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 429 with Retry-After.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.details = Some(json!({"retryAfterSeconds": retry_after}));
        e.retry_after = Some(retry_after);
        e
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_apiserver() {
        let e = FieldError::invalid_raw(
            "spec.ports[0].nodePort",
            "30080".into(),
            "provided port is already allocated",
        );
        assert_eq!(
            e.to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        let r = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(
            r.to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
    }
}
