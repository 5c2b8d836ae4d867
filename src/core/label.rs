//! Kubernetes' own label syntax: what a label value and a label key may be.
//!
//! The rules mirror apimachinery's `IsValidLabelValue` and `IsQualifiedName`, and are tested
//! against the real apiserver's verdicts recorded in `tests/data/labels/` (`make fixtures`).

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

/// Why `s` is not an RFC 1035 label (what a Service name must be: lowercase letters, digits and
/// '-', a letter first, a letter or digit last, at most 63 characters); `None` when it is one.
pub fn dns1035_label_problem(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    let first = b.first()?;
    if b.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !first.is_ascii_lowercase() {
        Some("it must start with a lowercase letter")
    } else if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        Some("it may contain only lowercase letters, digits and '-'")
    } else if b[b.len() - 1] == b'-' {
        Some("it must end with a letter or digit")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real apiserver's verdicts, recorded by `make fixtures`: `candidate<TAB>valid|invalid`.
    fn table(name: &str) -> Vec<(String, bool)> {
        let path = format!("{}/tests/data/labels/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .map(|line| {
                let (value, verdict) = line
                    .rsplit_once('\t')
                    .unwrap_or_else(|| panic!("{name}: no verdict in {line:?}"));
                match verdict {
                    "valid" => (value.to_string(), true),
                    "invalid" => (value.to_string(), false),
                    other => panic!("{name}: verdict {other:?} in {line:?}"),
                }
            })
            .collect()
    }

    /// Enough rows, and both verdicts, so that a truncated table cannot pass.
    fn check_table(rows: &[(String, bool)], file: &str) {
        assert!(rows.len() >= 40, "{file} has too few rows: {}", rows.len());
        assert!(rows.iter().any(|r| r.1), "{file}: no valid row");
        assert!(rows.iter().any(|r| !r.1), "{file}: no invalid row");
    }

    #[test]
    fn label_values_agree_with_the_apiserver() {
        let file = "label_values.tsv";
        let rows = table(file);
        check_table(&rows, file);
        let disagree: Vec<_> = rows
            .iter()
            .filter(|(value, valid)| validate_label_value(value).is_ok() != *valid)
            .collect();
        assert!(
            disagree.is_empty(),
            "{file}: Portico disagrees on {disagree:?}"
        );
    }

    #[test]
    fn label_keys_agree_with_the_apiserver() {
        let file = "label_keys.tsv";
        let rows = table(file);
        check_table(&rows, file);
        let disagree: Vec<_> = rows
            .iter()
            .filter(|(key, valid)| validate_label_key(key).is_ok() != *valid)
            .collect();
        assert!(
            disagree.is_empty(),
            "{file}: Portico disagrees on {disagree:?}"
        );
    }

    #[test]
    fn service_names_are_rfc_1035_labels() {
        for ok in ["a", "lab", "a1", "a-b", &"a".repeat(63)] {
            assert_eq!(dns1035_label_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("1lab", "start with a lowercase letter"),
            ("-a", "start with a lowercase letter"),
            ("Lab", "start with a lowercase letter"),
            ("a.b", "only lowercase letters"),
            ("aB", "only lowercase letters"),
            ("a-", "end with a letter or digit"),
            (&"a".repeat(64), "longer than 63"),
        ] {
            let problem = dns1035_label_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad}: {problem}");
        }
        // The empty name is for the caller to refuse (it has no name at all yet).
        assert_eq!(dns1035_label_problem(""), None);
    }
}
