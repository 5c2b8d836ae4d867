//! Reading a configuration so that every problem is reported at once, in the file's own terms.
//!
//! serde stops at the first error and speaks of Rust types (`expected struct IdentityConfig`).
//! Here each key is tried on its own (a configuration holding only that key, every other one at
//! its default), so that one bad key does not hide the next; a section whose key fails is
//! searched key by key for the culprit. The type checks stay serde's own: nothing here repeats
//! the configuration's shape, which lives in the types alone.

use serde_yaml::{Mapping, Value};

use super::Config;

/// Every problem with the keys and value types of `root`, each naming its key, and `root` with
/// the offending keys removed, so that the value checks ([`Config::problems`]) can still run on
/// the rest.
pub fn key_problems(root: &Value) -> (Vec<String>, Value) {
    let Value::Mapping(top) = root else {
        let found = describe(root);
        return (
            vec![format!("the configuration must be a mapping of keys (as `portico config defaults` prints), not {found}")],
            Value::Mapping(Mapping::new()),
        );
    };
    let mut problems = Vec::new();
    let mut bad = Vec::new();
    walk(&[], top, &mut problems, &mut bad);
    let mut cleaned = root.clone();
    for path in &bad {
        remove(&mut cleaned, path);
    }
    (problems, cleaned)
}

/// `defaults` (the default configuration as YAML) with every key the configuration accepts,
/// also those left out when unset (e.g. `api.kubeconfig`), which show as `null`.
pub fn with_every_key(defaults: &Value) -> Value {
    let mut out = defaults.clone();
    add_missing(&[], &mut out);
    out
}

fn add_missing(path: &[Value], here: &mut Value) {
    let Value::Mapping(m) = here else { return };
    // A key no section has: the refusal lists the section's keys (none for free-form maps).
    let probe = Value::String("\u{0}".into());
    let mut at = path.to_vec();
    at.push(probe);
    if let Err(e) = serde_yaml::from_value::<Config>(alone(&at, &Value::Null)) {
        let text = e.to_string();
        if let Some((_, known)) = text.split_once(", expected one of ") {
            for name in known
                .split(", ")
                .map(|n| n.trim_matches(|c| c == '`' || c == ' '))
            {
                let key = Value::String(name.to_string());
                if !name.is_empty() && !m.contains_key(&key) {
                    m.insert(key, Value::Null);
                }
            }
        }
    }
    for (key, value) in m.iter_mut() {
        let mut inner = path.to_vec();
        inner.push(key.clone());
        add_missing(&inner, value);
    }
}

/// Tries each key of the section at `path` alone.
fn walk(path: &[Value], here: &Mapping, problems: &mut Vec<String>, bad: &mut Vec<Vec<Value>>) {
    for (key, value) in here {
        let mut at = path.to_vec();
        at.push(key.clone());
        let Err(e) = serde_yaml::from_value::<Config>(alone(&at, value)) else {
            continue;
        };
        let before = problems.len();
        if let Value::Mapping(inner) = value {
            if !inner.is_empty() && !is_unknown_key(&e) {
                walk(&at, inner, problems, bad);
            }
        }
        if problems.len() == before {
            problems.push(explain(&at, &e));
            bad.push(at);
        }
    }
}

/// A configuration with `value` at `path` and nothing else.
fn alone(path: &[Value], value: &Value) -> Value {
    path.iter().rev().fold(value.clone(), |inner, key| {
        let mut m = Mapping::new();
        m.insert(key.clone(), inner);
        Value::Mapping(m)
    })
}

fn remove(root: &mut Value, path: &[Value]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = root;
    for key in parents {
        match here.get_mut(key) {
            Some(next) => here = next,
            None => return,
        }
    }
    if let Value::Mapping(m) = here {
        m.remove(last);
    }
}

fn dotted(path: &[Value]) -> String {
    path.iter()
        .map(|k| match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn is_unknown_key(e: &serde_yaml::Error) -> bool {
    e.to_string().contains("unknown field `")
}

/// What a YAML value is, for a message.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// serde's message for the key at `path`, in the configuration's terms.
fn explain(path: &[Value], e: &serde_yaml::Error) -> String {
    let key = dotted(path);
    let text = e.to_string();
    // serde_yaml puts the path it was at before the message; ours is `key`.
    let message = match text.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest.to_string(),
        _ => text.clone(),
    };
    let listed = |s: &str| s.replace('`', "").replace(" or ", ", ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, known) = rest.split_once('`').unwrap_or((rest, ""));
        let known = known
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ");
        return format!(
            "{key}: unknown key {name:?}; the keys here are {} (`portico config defaults` lists them all)",
            listed(known)
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, known) = rest.split_once('`').unwrap_or((rest, ""));
        let known = known
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ");
        return format!(
            "{key}: {value:?} is not one of {} (values are case sensitive)",
            listed(known)
        );
    }
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!(
            "{key}: expected {}, found {}",
            expected_in_words(expected),
            found.replace('`', "")
        );
    }
    format!("{key}: {message}")
}

/// A serde expectation (`struct IdentityConfig`, `u32`, `a sequence`) as a configuration word.
fn expected_in_words(expected: &str) -> String {
    let e = expected.trim();
    if e.starts_with("struct ") || e == "a map" {
        return "a mapping of keys".into();
    }
    match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "a sequence" => "a list".into(),
        "a boolean" => "true or false".into(),
        "a string" => "text".into(),
        other if other.starts_with("enum ") => "one of its values".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let root: Value = serde_yaml::from_str(yaml).unwrap();
        key_problems(&root).0
    }

    #[test]
    fn every_bad_key_and_type_is_reported_at_once_in_configuration_terms() {
        let found = problems(
            "identity:\n  mode: User\n  prefixes: {alice: al}\nstrict: \"yes\"\nlabels: 5\n\
             audit:\n  mode: loud\n  keepFiles: -1\nfoo: 1\n",
        );
        let expected = [
            "identity.mode: \"User\" is not one of user, namespace (values are case sensitive)",
            "strict: expected true or false, found string \"yes\"",
            "labels: expected a mapping of keys, found integer 5",
            "audit.mode: \"loud\" is not one of enforce, warn (values are case sensitive)",
            "audit.keepFiles: expected a whole number, 0 or more, found integer -1",
            "foo: unknown key \"foo\"",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expected) {
            assert!(f.starts_with(e), "{f:?} should start with {e:?}");
        }
        for f in &found {
            for rust in [
                "struct ",
                "IdentityConfig",
                "u32",
                "usize",
                "variant",
                "field",
            ] {
                assert!(!f.contains(rust), "{f:?} speaks of Rust ({rust})");
            }
        }
        assert!(found[5].contains("annotationDomain"), "{}", found[5]);
    }

    #[test]
    fn good_keys_pass_and_the_bad_ones_are_removed_for_the_value_checks() {
        let root: Value =
            serde_yaml::from_str("strict: true\nidentity:\n  mode: Nope\n  maxPrefixLength: 12\n")
                .unwrap();
        let (found, cleaned) = key_problems(&root);
        assert_eq!(found.len(), 1, "{found:?}");
        let config: Config = serde_yaml::from_value(cleaned).unwrap();
        assert!(config.strict);
        assert_eq!(config.identity.max_prefix_length, 12);
        assert!(problems(&serde_yaml::to_string(&Config::default()).unwrap()).is_empty());
    }

    #[test]
    fn the_defaults_list_every_key_and_read_back_as_the_defaults() {
        let defaults = serde_yaml::to_value(Config::default()).unwrap();
        let every = with_every_key(&defaults);
        for key in ["kubeconfig", "context", "impersonate"] {
            let k = Value::String(key.into());
            assert!(defaults["api"].get(&k).is_none(), "{key} already printed");
            assert_eq!(every["api"].get(&k), Some(&Value::Null), "{key} missing");
        }
        assert_eq!(every["identity"]["mode"], defaults["identity"]["mode"]);
        let read: Config = serde_yaml::from_value(every).unwrap();
        assert_eq!(read, Config::default());
    }

    #[test]
    fn a_configuration_that_is_not_a_mapping_says_so() {
        let found = problems("- a\n- b\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("must be a mapping of keys"),
            "{}",
            found[0]
        );
        assert!(found[0].contains("a list"), "{}", found[0]);
    }
}
