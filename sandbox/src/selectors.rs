//! Label selectors (query-string form: `=`, `==`, `!=`, `in`, `notin`, exists, `!exists`; and
//! the `metav1.LabelSelector` object form) and basic field selectors.

use crate::util::dotted_str;
use serde_json::Value;
use std::collections::BTreeMap;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value` / `key in (a,b)`
    In(String, Vec<String>),
    /// `key!=value` / `key notin (a,b)`
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// All must hold.
    pub requirements: Vec<Requirement>,
    /// `matchExpressions` with an unknown operator: matches nothing.
    pub nothing: bool,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement. The usual selector is
    /// empty: it matches without copying the object's labels.
    pub fn matches_object(&self, object: &serde_json::Value) -> bool {
        if self.requirements.is_empty() {
            return !self.nothing;
        }
        self.matches(&crate::util::labels(object))
    }

    /// Parses the query-string form (`app=web,tier in (a,b),!legacy`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object. `None`/null selects everything.
    pub fn from_object(v: Option<&Value>) -> Self {
        let mut out = Self::default();
        let Some(v) = v.filter(|v| v.is_object()) else {
            return out;
        };
        for (k, val) in v["matchLabels"].as_object().into_iter().flatten() {
            out.requirements.push(Requirement::In(
                k.clone(),
                vec![val.as_str().unwrap_or_default().to_string()],
            ));
        }
        for e in v["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => out.requirements.push(Requirement::In(key, values)),
                "NotIn" => out.requirements.push(Requirement::NotIn(key, values)),
                "Exists" => out.requirements.push(Requirement::Exists(key)),
                "DoesNotExist" => out.requirements.push(Requirement::DoesNotExist(key)),
                _ => out.nothing = true,
            }
        }
        out
    }
}

fn split_top(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '('"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            k.trim().to_string(),
            vec![v.trim().to_string()],
        ));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Requirement::In(
            k.trim().to_string(),
            vec![v.trim().to_string()],
        ));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Requirement::In(
            k.trim().to_string(),
            vec![v.trim().to_string()],
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim().to_string();
        let rest = words[1].trim();
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(Requirement::NotIn(key, parse_set(r)?));
        }
        if let Some(r) = rest.strip_prefix("in") {
            return Ok(Requirement::In(key, parse_set(r)?));
        }
        return Err(format!("unable to parse requirement: {part}"));
    }
    if part.contains(['(', ')', ' ']) {
        return Err(format!("unable to parse requirement: {part}"));
    }
    Ok(Requirement::Exists(part.trim().to_string()))
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (path, value, equal?)
    pub terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses the query-string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if let Some((k, v)) = part.split_once("!=") {
                terms.push((k.trim().to_string(), v.trim().to_string(), false));
            } else if let Some((k, v)) = part.split_once("==") {
                terms.push((k.trim().to_string(), v.trim().to_string(), true));
            } else if let Some((k, v)) = part.split_once('=') {
                terms.push((k.trim().to_string(), v.trim().to_string(), true));
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            }
        }
        Ok(Self { terms })
    }

    /// Whether the object satisfies every term (a missing field compares as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, want, eq)| {
            let have = dotted_str(obj, path).unwrap_or_default();
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_operators() {
        let labels = l(&[("app", "web"), ("tier", "front")]);
        let ok = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "tier in (front, back)",
            "tier notin (back)",
            "app",
            "!legacy",
            "app=web,tier in (front),!legacy",
        ];
        for s in ok {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&labels),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "tier in (back)",
            "tier notin (front)",
            "legacy",
            "!app",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&labels),
                "{s} should not match"
            );
        }
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn object_form() {
        let sel = json!({"matchLabels": {"a": "1"}, "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]});
        let s = LabelSelector::from_object(Some(&sel));
        assert!(s.matches(&l(&[
            ("a", "1"),
            ("kubernetes.io/metadata.name", "default")
        ])));
        assert!(!s.matches(&l(&[
            ("a", "1"),
            ("kubernetes.io/metadata.name", "kube-system")
        ])));
        assert!(LabelSelector::from_object(None).matches(&l(&[])));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "x"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("metadata.name=p,status.phase!=Pending")
                .unwrap()
                .matches(&pod)
        );
        assert!(!FieldSelector::parse("spec.nodeName=y")
            .unwrap()
            .matches(&pod));
    }
}
