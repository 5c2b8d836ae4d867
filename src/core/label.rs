//! Kubernetes' own label syntax: what a label value and a label key may be.
//!
//! The rules mirror apimachinery's `IsValidLabelValue` and `IsQualifiedName`, and are tested
//! against Kubernetes' own tables in `shared/fixtures/labels/`.

/// The longest label value (and the longest name part of a key).
pub const MAX_LABEL_VALUE: usize = 63;
/// The longest prefix (DNS subdomain) of a label key.
const MAX_KEY_PREFIX: usize = 253;

/// Why a string is not a valid label value or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("must be no more than {MAX_LABEL_VALUE} characters (it has {0})")]
    TooLong(usize),
    #[error("must start and end with an alphanumeric character")]
    BadEnds,
    #[error("may contain only alphanumeric characters, '-', '_' or '.' (found {0:?})")]
    BadChar(char),
    #[error("must not be empty")]
    Empty,
    #[error("prefix {0:?} must be a lowercase DNS subdomain of at most 253 characters")]
    BadPrefix(String),
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_inner(c: char) -> bool {
    is_alnum(c) || matches!(c, '-' | '_' | '.')
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
pub fn validate_label_value(value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name_part(value)
}

/// A non-empty label value (what a route value and a tag must be).
pub fn validate_name_part(value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Err(LabelError::Empty);
    }
    if let Some(bad) = value.chars().find(|c| !is_inner(*c)) {
        return Err(LabelError::BadChar(bad));
    }
    let len = value.len();
    if len > MAX_LABEL_VALUE {
        return Err(LabelError::TooLong(len));
    }
    let first = value.chars().next().unwrap_or('-');
    let last = value.chars().last().unwrap_or('-');
    if !is_alnum(first) || !is_alnum(last) {
        return Err(LabelError::BadEnds);
    }
    Ok(())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain, the name a non-empty label value.
pub fn validate_label_key(key: &str) -> Result<(), LabelError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err(LabelError::BadPrefix(prefix.to_string()));
        }
    }
    validate_name_part(name)
}

/// RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', alphanumeric at both ends, ≤ 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    // apimachinery limits the whole subdomain, not each dot-separated part.
    !s.is_empty()
        && s.len() <= MAX_KEY_PREFIX
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends, ≤ 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes' own tables: `value<TAB>valid|invalid`.
    fn table(name: &str) -> Vec<(String, bool)> {
        let path = format!(
            "{}/../shared/fixtures/labels/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .filter_map(|line| {
                let (value, verdict) = line.rsplit_once('\t')?;
                Some((value.to_string(), verdict.trim() == "valid"))
            })
            .collect()
    }

    #[test]
    fn label_values_agree_with_kubernetes_tables() {
        for file in ["label_values.tsv", "label_values_validatelabels.tsv"] {
            let rows = table(file);
            assert!(rows.len() >= 5, "{file} has too few rows");
            for (value, valid) in rows {
                assert_eq!(
                    validate_label_value(&value).is_ok(),
                    valid,
                    "{file}: {value:?}"
                );
            }
        }
    }

    #[test]
    fn label_keys_agree_with_kubernetes_tables() {
        for file in ["label_keys.tsv", "label_keys_validatelabels.tsv"] {
            let rows = table(file);
            assert!(rows.len() >= 5, "{file} has too few rows");
            for (key, valid) in rows {
                assert_eq!(validate_label_key(&key).is_ok(), valid, "{file}: {key:?}");
            }
        }
    }
}
