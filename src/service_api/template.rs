//! Templates: keyword replacement and parsing, as pure functions of text and tables.
//!
//! A template is multi-document YAML with placeholders such as `<id>`: the open indicator, a
//! keyword name (a letter or `_`, then letters, digits, `_`, `.`, `-`), the close indicator.
//! Anything else (`a < b`, `<<: *anchor`, a lone `<`) is left as it is. Replacement is one pass:
//! a replaced value is never scanned again. A placeholder with no value is an error naming the
//! file, the line and the keyword. Nothing here reads files or talks to the cluster.
//!
//! [`render_objects`] reads the template as YAML first and replaces placeholders inside the
//! parsed strings, so a value is always placed as the string it was: `null`, `true`, `0x1F`,
//! `+1`, `.inf`, a lone `-` or `k:` from a request stay those strings instead of turning into
//! another type or shape. Only a scalar that is exactly one placeholder of a number or boolean
//! the request sent, or of a replacement table's value (the administrator's), takes that type.

use std::collections::BTreeMap;

use serde_json::Value;

use super::config::{is_keyword, Indicators, KeywordNames, USER_OPTIONS_PREFIX};

/// Why a template cannot be turned into objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}:{line}: unknown placeholder {placeholder}{}", hint_text(.hint))]
    UnknownKeyword {
        file: String,
        line: usize,
        keyword: String,
        placeholder: String,
        hint: Option<String>,
    },
    #[error("{file}: not valid YAML after keyword replacement: {message}")]
    InvalidYaml { file: String, message: String },
    #[error("{file}: the value of {placeholder} is not valid YAML: {message}; fix it in the replacement table")]
    BadValue {
        file: String,
        keyword: String,
        placeholder: String,
        message: String,
    },
    #[error("{file}: document {index}: {message}")]
    BadDocument {
        file: String,
        index: usize,
        message: String,
    },
    #[error("{file}: no objects")]
    Empty { file: String },
}

fn hint_text(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

impl TemplateError {
    /// The keyword at fault, if any.
    pub fn keyword(&self) -> Option<&str> {
        match self {
            TemplateError::UnknownKeyword { keyword, .. }
            | TemplateError::BadValue { keyword, .. } => Some(keyword),
            _ => None,
        }
    }

    /// The template file at fault.
    pub fn file(&self) -> &str {
        match self {
            TemplateError::UnknownKeyword { file, .. }
            | TemplateError::InvalidYaml { file, .. }
            | TemplateError::BadValue { file, .. }
            | TemplateError::BadDocument { file, .. }
            | TemplateError::Empty { file } => file,
        }
    }

    /// Whether the caller can fix it (a `user_options` value it did not send, or sent in a form
    /// that cannot be placed); everything else is the template's fault.
    pub fn is_caller_error(&self) -> bool {
        matches!(self, TemplateError::UnknownKeyword { keyword, .. } if keyword.starts_with(USER_OPTIONS_PREFIX))
    }
}

/// How a value is placed when a scalar is exactly its placeholder (inside a longer string every
/// value is text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValueKind {
    /// Always a string: built-ins and every string from a request.
    #[default]
    Text,
    /// Read as a YAML value: the administrator's replacement tables.
    Yaml,
    /// A number the request sent as a JSON number.
    Number,
    /// A boolean the request sent as a JSON boolean.
    Bool,
}

/// The values a template can use, with the reasons some request values were left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords {
    pub values: BTreeMap<String, String>,
    /// Keyword → why it has no value although the request mentioned it.
    pub refused: BTreeMap<String, String>,
    /// Keyword → how it is placed; absent means [`ValueKind::Text`].
    pub kinds: BTreeMap<String, ValueKind>,
}

/// Everything a start knows that templates may use.
#[derive(Debug, Clone)]
pub struct KeywordInput<'a> {
    pub names: &'a KeywordNames,
    pub service_id: &'a str,
    pub start_id: &'a str,
    pub user_id: &'a str,
    pub unique_user_id: &'a str,
    pub client: &'a str,
    pub secret_name: &'a str,
    pub cert_secret_name: &'a str,
    pub namespace: &'a str,
    pub tag: &'a str,
    /// The `input` folder as base64 tar.gz; `None` when the template has no such folder.
    pub input: Option<&'a str>,
    pub stage_table: Option<&'a BTreeMap<String, String>>,
    pub client_table: Option<&'a BTreeMap<String, String>>,
    /// The client's table for the active stage (the manager's `stage_credential`): wins over
    /// both tables above.
    pub client_stage_table: Option<&'a BTreeMap<String, String>>,
    /// The request's `user_options` (its `service` included).
    pub user_options: Option<&'a serde_json::Map<String, Value>>,
}

/// Characters a value from the request may have to be placed into YAML text: no space, quote,
/// comment, flow or anchor character, so a request value can never add structure to an object
/// (`:` is allowed for image references: without a following space it is plain text).
pub fn is_inert(value: &str) -> bool {
    value.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '=' | '/' | '@' | ':')
    })
}

/// The keyword table: built-ins, then the stage's table, then the client's, then the client's
/// for the stage (which wins), then
/// `user_options.<key>` for each option whose value is a number, a boolean or an inert string.
pub fn keywords(input: &KeywordInput<'_>) -> Keywords {
    let mut out = Keywords::default();
    for table in [
        input.stage_table,
        input.client_table,
        input.client_stage_table,
    ]
    .into_iter()
    .flatten()
    {
        for (k, v) in table {
            out.values.insert(k.clone(), v.clone());
            out.kinds.insert(k.clone(), ValueKind::Yaml);
        }
    }
    let n = input.names;
    for (name, value) in [
        (&n.service_id, input.service_id),
        (&n.start_id, input.start_id),
        (&n.user_id, input.user_id),
        (&n.unique_user_id, input.unique_user_id),
        (&n.client, input.client),
        (&n.secret_name, input.secret_name),
        (&n.cert_secret_name, input.cert_secret_name),
        (&n.namespace, input.namespace),
        (&n.tag, input.tag),
    ] {
        // Built-ins win over tables (the configuration check refuses such table keys anyway).
        out.values.insert(name.clone(), value.to_string());
        out.kinds.remove(name);
    }
    match input.input {
        Some(packed) => {
            out.values.insert(n.input.clone(), packed.to_string());
        }
        None => {
            out.refused.insert(
                n.input.clone(),
                "the template folder has no input/ folder".to_string(),
            );
        }
    }
    for (key, value) in input.user_options.into_iter().flatten() {
        let name = format!("{USER_OPTIONS_PREFIX}{key}");
        if !is_keyword(&name) {
            continue;
        }
        let (text, kind) = match value {
            Value::String(s) => (s.clone(), ValueKind::Text),
            Value::Number(n) => (n.to_string(), ValueKind::Number),
            Value::Bool(b) => (b.to_string(), ValueKind::Bool),
            _ => {
                out.refused.insert(
                    name,
                    "user_options value is not a string, number or boolean".to_string(),
                );
                continue;
            }
        };
        if is_inert(&text) && text.len() <= 256 {
            out.kinds.insert(name.clone(), kind);
            out.values.insert(name, text);
        } else {
            out.refused.insert(
                name,
                "user_options value must be at most 256 letters, digits or . _ - + = / @ : to be placed in a template".to_string(),
            );
        }
    }
    out
}

/// Replaces every placeholder in `text`. `file` names the template in errors.
pub fn render(
    text: &str,
    file: &str,
    indicators: &Indicators,
    keywords: &Keywords,
) -> Result<String, TemplateError> {
    let (open, close) = (indicators.open.as_str(), indicators.close.as_str());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut line = 1;
    while let Some(at) = rest.find(open) {
        let (before, from_open) = rest.split_at(at);
        out.push_str(before);
        line += before.matches('\n').count();
        let after_open = &from_open[open.len()..];
        let name_len = keyword_len(after_open);
        let is_placeholder = name_len > 0 && after_open[name_len..].starts_with(close);
        if !is_placeholder {
            out.push_str(open);
            rest = after_open;
            continue;
        }
        let name = &after_open[..name_len];
        match keywords.values.get(name) {
            Some(value) => out.push_str(value),
            None => {
                return Err(TemplateError::UnknownKeyword {
                    file: file.to_string(),
                    line,
                    keyword: name.to_string(),
                    placeholder: format!("{open}{name}{close}"),
                    hint: keywords.refused.get(name).cloned().or_else(|| {
                        name.starts_with(USER_OPTIONS_PREFIX)
                            .then(|| "the request's user_options has no such key".to_string())
                    }),
                })
            }
        }
        rest = &after_open[name_len + close.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of the keyword name at the start of `s` (0 when there is none).
fn keyword_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = if i == 0 {
            c.is_ascii_alphabetic() || c == '_'
        } else {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
        };
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Parses rendered text into objects: every non-empty document must be a mapping with
/// `apiVersion`, `kind` and `metadata.name` strings.
pub fn parse(rendered: &str, file: &str) -> Result<Vec<Value>, TemplateError> {
    check_documents(documents(rendered, file)?, file)
}

/// The documents of YAML text, each with its position (empty documents are skipped).
fn documents(text: &str, file: &str) -> Result<Vec<(usize, Value)>, TemplateError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(doc).map_err(|e| TemplateError::InvalidYaml {
                file: file.to_string(),
                message: e.to_string(),
            })?;
        if !value.is_null() {
            out.push((index, value));
        }
    }
    Ok(out)
}

/// The template's objects with every placeholder replaced inside the parsed document, so no
/// value can change a type or a shape (see the module's documentation).
pub fn render_objects(
    text: &str,
    file: &str,
    indicators: &Indicators,
    keywords: &Keywords,
) -> Result<Vec<Value>, TemplateError> {
    // The text pass names an unknown placeholder with its line; its output is not used.
    render(text, file, indicators, keywords)?;
    let mut docs = documents(text, file)?;
    for (_, doc) in &mut docs {
        place(doc, file, indicators, keywords)?;
    }
    check_documents(docs, file)
}

fn place(
    value: &mut Value,
    file: &str,
    indicators: &Indicators,
    keywords: &Keywords,
) -> Result<(), TemplateError> {
    match value {
        Value::String(s) => *value = place_scalar(s, file, indicators, keywords)?,
        Value::Array(items) => {
            for item in items {
                place(item, file, indicators, keywords)?;
            }
        }
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                // A key is always text: a value can never turn it into anything else.
                let key = render(&key, file, indicators, keywords)?;
                place(&mut v, file, indicators, keywords)?;
                map.insert(key, v);
            }
        }
        _ => {}
    }
    Ok(())
}

fn place_scalar(
    s: &str,
    file: &str,
    indicators: &Indicators,
    keywords: &Keywords,
) -> Result<Value, TemplateError> {
    let whole = s
        .strip_prefix(indicators.open.as_str())
        .and_then(|rest| rest.strip_suffix(indicators.close.as_str()))
        .filter(|name| !name.is_empty() && keyword_len(name) == name.len());
    if let Some(name) = whole {
        if let Some(text) = keywords.values.get(name) {
            let kind = keywords.kinds.get(name).copied().unwrap_or_default();
            let typed = match kind {
                ValueKind::Text => None,
                ValueKind::Number | ValueKind::Bool => serde_json::from_str::<Value>(text)
                    .ok()
                    .filter(|v| v.is_number() || v.is_boolean()),
                ValueKind::Yaml => Some(serde_yaml::from_str::<Value>(text).map_err(|e| {
                    TemplateError::BadValue {
                        file: file.to_string(),
                        keyword: name.to_string(),
                        placeholder: s.to_string(),
                        message: e.to_string(),
                    }
                })?),
            };
            return Ok(typed.unwrap_or_else(|| Value::String(text.clone())));
        }
    }
    render(s, file, indicators, keywords).map(Value::String)
}

/// Every document must be a mapping with `apiVersion`, `kind` and `metadata.name` strings.
fn check_documents(docs: Vec<(usize, Value)>, file: &str) -> Result<Vec<Value>, TemplateError> {
    let mut objects = Vec::new();
    for (index, value) in docs {
        let bad = |message: String| TemplateError::BadDocument {
            file: file.to_string(),
            index: index + 1,
            message,
        };
        if !value.is_object() {
            return Err(bad("not a mapping".to_string()));
        }
        for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
            match value.pointer(pointer).and_then(Value::as_str) {
                Some(s) if !s.is_empty() => {}
                _ => {
                    return Err(bad(format!(
                        "{} must be a non-empty string (generateName is not supported: the API must know every name)",
                        &pointer[1..].replace('/', ".")
                    )))
                }
            }
        }
        objects.push(value);
    }
    if objects.is_empty() {
        return Err(TemplateError::Empty {
            file: file.to_string(),
        });
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(pairs: &[(&str, &str)]) -> Keywords {
        Keywords {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Keywords::default()
        }
    }

    fn r(text: &str, kw: &Keywords) -> Result<String, TemplateError> {
        render(text, "f.yaml", &Indicators::default(), kw)
    }

    #[test]
    fn replaces_known_placeholders_once() {
        let kw = table(&[("id", "abc"), ("loop", "<id>")]);
        assert_eq!(r("name: <id>-x <loop>", &kw).unwrap(), "name: abc-x <id>");
    }

    #[test]
    fn leaves_non_placeholders_alone() {
        let kw = table(&[("id", "abc")]);
        for text in [
            "a < b > c",
            "<<: *base",
            "x: <",
            "x: >",
            "x: <1abc>",
            "x: <id",
            "x: <-id>",
            "x: <>",
            "|\n  <\n",
        ] {
            assert_eq!(r(text, &kw).unwrap(), text, "{text:?}");
        }
        assert_eq!(r("<<id>>", &kw).unwrap(), "<abc>");
    }

    #[test]
    fn unknown_placeholder_names_file_line_and_keyword() {
        let kw = table(&[("id", "abc")]);
        let err = r("a: <id>\nb: c\nd: <nope>\n", &kw).unwrap_err();
        assert_eq!(err.keyword(), Some("nope"));
        assert_eq!(err.file(), "f.yaml");
        assert!(!err.is_caller_error());
        let text = err.to_string();
        assert!(
            text.contains("f.yaml:3") && text.contains("<nope>"),
            "{text}"
        );
        let err = r("x: <user_options.image>", &kw).unwrap_err();
        assert!(err.is_caller_error());
        assert!(err.to_string().contains("no such key"), "{err}");
    }

    #[test]
    fn other_indicators_work_and_multibyte_text_is_kept() {
        let ind = Indicators {
            open: "{{".into(),
            close: "}}".into(),
        };
        let kw = table(&[("id", "x")]);
        assert_eq!(
            render("é {{id}} <id> {{ id }} ü{{", "f", &ind, &kw).unwrap(),
            "é x <id> {{ id }} ü{{"
        );
    }

    #[test]
    fn keyword_table_precedence_and_user_options() {
        let names = KeywordNames::default();
        let stage: BTreeMap<String, String> = [
            ("image".into(), "stage".into()),
            ("domain".into(), "d".into()),
        ]
        .into();
        let client: BTreeMap<String, String> = [("image".into(), "client".into())].into();
        let opts = serde_json::json!({"service": "jupyterlab/default", "cpus": 2, "gpu": true,
            "bad": "a: b", "nested": {"x": 1}});
        let input = KeywordInput {
            names: &names,
            service_id: "svc",
            start_id: "s",
            user_id: "u",
            unique_user_id: "c_u",
            client: "c",
            secret_name: "svc-env",
            cert_secret_name: "svc-tls",
            namespace: "team",
            tag: "svc",
            input: None,
            stage_table: Some(&stage),
            client_table: Some(&client),
            client_stage_table: None,
            user_options: opts.as_object(),
        };
        let kw = keywords(&input);
        assert_eq!(kw.values["image"], "client");
        assert_eq!(kw.values["domain"], "d");
        let client_stage: BTreeMap<String, String> =
            [("image".into(), "client-stage".into())].into();
        let with_stage = keywords(&KeywordInput {
            client_stage_table: Some(&client_stage),
            user_options: None,
            ..input
        });
        assert_eq!(with_stage.values["image"], "client-stage");
        assert_eq!(with_stage.values["domain"], "d");
        assert_eq!(kw.values["id"], "svc");
        assert_eq!(kw.values["user_options.cpus"], "2");
        assert_eq!(kw.values["user_options.gpu"], "true");
        assert_eq!(kw.values["user_options.service"], "jupyterlab/default");
        assert!(kw.refused.contains_key("user_options.bad"));
        assert!(kw.refused.contains_key("user_options.nested"));
        assert!(kw.refused.contains_key("input"));
        let err = r("x: <user_options.bad>", &kw).unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
        let err = r("x: <input>", &kw).unwrap_err();
        assert!(err.to_string().contains("no input/"), "{err}");
    }

    #[test]
    fn inert_values_cannot_add_yaml_structure() {
        for bad in [
            "a: b", "a\nb", "'x'", "\"x\"", "a#b", "[a]", "{a}", "a,b", "*a", "&a", "!a", "|",
            "a b", "%",
        ] {
            assert!(!is_inert(bad), "{bad:?}");
        }
        for good in ["abc", "a.b-c_d", "user@example.org", "x+y=z", "reg/img:1.2"] {
            assert!(is_inert(good), "{good:?}");
        }
    }

    #[test]
    fn parse_checks_documents() {
        let ok = parse(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n",
            "f",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        let err = parse("a: [b\n", "f").unwrap_err();
        assert!(matches!(err, TemplateError::InvalidYaml { .. }), "{err}");
        let err = parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {generateName: a-}\n",
            "f",
        )
        .unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = parse("- a\n", "f").unwrap_err();
        assert!(err.to_string().contains("not a mapping"), "{err}");
        assert!(matches!(
            parse("", "f").unwrap_err(),
            TemplateError::Empty { .. }
        ));
    }

    #[test]
    fn a_replaced_value_that_breaks_yaml_is_reported() {
        let kw = table(&[("cmd", "[unclosed")]);
        let text = r(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nx: <cmd>\n",
            &kw,
        )
        .unwrap();
        assert!(matches!(
            parse(&text, "f").unwrap_err(),
            TemplateError::InvalidYaml { .. }
        ));
    }

    fn objects(text: &str, kw: &Keywords) -> Result<Vec<Value>, TemplateError> {
        render_objects(text, "f.yaml", &Indicators::default(), kw)
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: <id>\n  annotations: {a: <v>, b: \"<v>\", c: x-<v>}\nspec:\n  args:\n    - <v>\n  <v>: key\n";

    #[test]
    fn request_strings_stay_strings_whatever_yaml_would_read() {
        for value in [
            "null",
            "true",
            "False",
            "0x1F",
            "+1",
            ".inf",
            "-.inf",
            ".nan",
            "-",
            "k:",
            "~",
            "1e3",
            "0o17",
            "yes",
            "2026-01-01",
            "=",
            "",
        ] {
            let kw = table(&[("id", "p"), ("v", value)]);
            let out = objects(POD, &kw).unwrap();
            let o = &out[0];
            for key in ["a", "b"] {
                assert_eq!(o["metadata"]["annotations"][key], json!(value), "{value:?}");
            }
            assert_eq!(
                o["metadata"]["annotations"]["c"],
                json!(format!("x-{value}"))
            );
            assert_eq!(o["spec"]["args"], json!([value]), "{value:?}");
            assert_eq!(o["spec"][value], json!("key"), "{value:?}");
        }
    }

    #[test]
    fn request_numbers_and_booleans_and_table_values_keep_their_type_when_alone() {
        let mut kw = table(&[
            ("id", "p"),
            ("n", "2"),
            ("t", "true"),
            ("tbl", "3"),
            ("s", "2"),
        ]);
        kw.kinds.insert("n".into(), ValueKind::Number);
        kw.kinds.insert("t".into(), ValueKind::Bool);
        kw.kinds.insert("tbl".into(), ValueKind::Yaml);
        let out = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: <id>}\nspec: {n: <n>, t: <t>, tbl: <tbl>, s: <s>, m: <n>x}\n",
            &kw,
        )
        .unwrap();
        assert_eq!(
            out[0]["spec"],
            json!({"n": 2, "t": true, "tbl": 3, "s": "2", "m": "2x"})
        );
        // A number that is not one (a forged kind) is placed as text.
        kw.values.insert("n".into(), "null".into());
        let out = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: <id>}\nspec: {n: <n>}\n",
            &kw,
        )
        .unwrap();
        assert_eq!(out[0]["spec"]["n"], json!("null"));
    }

    #[test]
    fn the_keyword_table_marks_how_each_value_is_placed() {
        let names = KeywordNames::default();
        let client: BTreeMap<String, String> = [("image".into(), "busybox".into())].into();
        let opts = serde_json::json!({"n": 2, "b": false, "s": "null"});
        let kw = keywords(&KeywordInput {
            names: &names,
            service_id: "svc",
            start_id: "s",
            user_id: "true",
            unique_user_id: "c_true",
            client: "c",
            secret_name: "svc-env",
            cert_secret_name: "svc-tls",
            namespace: "team",
            tag: "svc",
            input: None,
            stage_table: None,
            client_table: Some(&client),
            client_stage_table: None,
            user_options: opts.as_object(),
        });
        assert_eq!(kw.kinds.get("image"), Some(&ValueKind::Yaml));
        assert_eq!(kw.kinds.get("user_options.n"), Some(&ValueKind::Number));
        assert_eq!(kw.kinds.get("user_options.b"), Some(&ValueKind::Bool));
        assert_eq!(kw.kinds.get("user_options.s"), Some(&ValueKind::Text));
        assert_eq!(kw.kinds.get("user_id"), None);
        let out = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: <id>}\nspec: {u: <user_id>, s: <user_options.s>}\n",
            &kw,
        )
        .unwrap();
        assert_eq!(out[0]["spec"], json!({"u": "true", "s": "null"}));
    }

    #[test]
    fn a_table_value_that_is_not_yaml_and_an_unknown_placeholder_are_named() {
        let mut kw = table(&[("id", "p"), ("cmd", "[unclosed")]);
        kw.kinds.insert("cmd".into(), ValueKind::Yaml);
        let err = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: <id>}\nx: <cmd>\n",
            &kw,
        )
        .unwrap_err();
        assert_eq!(err.keyword(), Some("cmd"));
        assert!(err.to_string().contains("not valid YAML"), "{err}");
        let err = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: <id>}\n\nx: <nope>\n",
            &kw,
        )
        .unwrap_err();
        assert!(err.to_string().contains("f.yaml:5"), "{err}");
        let err = objects("a: [b\n", &kw).unwrap_err();
        assert!(matches!(err, TemplateError::InvalidYaml { .. }), "{err}");
    }
}
