//! Property tests of template rendering, the pure heart of the service API: it never panics,
//! text without placeholders comes back unchanged, every placeholder with a value is replaced,
//! a value from a request (inert characters only) can never add YAML structure, and placed into
//! the parsed document it is always the very string it was.

use std::collections::BTreeMap;

use portico::service_api::config::Indicators;
use portico::service_api::template::{is_inert, parse, render, render_objects, Keywords};
use proptest::prelude::*;

fn keywords(pairs: &[(String, String)]) -> Keywords {
    Keywords {
        values: pairs.iter().cloned().collect(),
        refused: BTreeMap::new(),
        kinds: BTreeMap::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rendering_any_text_never_panics(text in "\\PC{0,200}", value in "\\PC{0,20}") {
        let kw = keywords(&[("id".into(), value)]);
        let _ = render(&text, "f", &Indicators::default(), &kw);
    }

    #[test]
    fn text_without_the_open_indicator_is_unchanged(text in "[^<]{0,200}") {
        let out = render(&text, "f", &Indicators::default(), &keywords(&[])).unwrap();
        prop_assert_eq!(out, text);
    }

    #[test]
    fn known_placeholders_are_all_replaced(
        parts in proptest::collection::vec(("[a-z ]{0,10}", "[a-z_][a-z0-9_]{0,8}"), 1..6),
        value in "[A-Za-z0-9]{0,12}",
    ) {
        let mut text = String::new();
        let mut expected = String::new();
        let mut pairs = Vec::new();
        for (literal, name) in &parts {
            text.push_str(&format!("{literal}<{name}>"));
            expected.push_str(&format!("{literal}{value}"));
            pairs.push((name.clone(), value.clone()));
        }
        let out = render(&text, "f", &Indicators::default(), &keywords(&pairs)).unwrap();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn an_unknown_placeholder_is_always_named(literal in "[a-z: ]{0,20}", name in "[a-z][a-z0-9_.-]{0,10}") {
        let text = format!("{literal}<{name}>");
        let err = render(&text, "f.yaml", &Indicators::default(), &keywords(&[])).unwrap_err();
        prop_assert_eq!(err.keyword(), Some(name.as_str()));
        prop_assert!(err.to_string().contains("f.yaml:1"));
    }

    #[test]
    fn inert_values_never_change_the_structure(value in "[A-Za-z0-9._+=/@:-]{1,40}") {
        prop_assume!(is_inert(&value));
        let template = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  annotations:\n    a: \"<v>\"\n    b: <v>\nspec: {}\n";
        let text = render(template, "f", &Indicators::default(), &keywords(&[("v".into(), value.clone())])).unwrap();
        match parse(&text, "f") {
            Ok(objects) => {
                prop_assert_eq!(objects.len(), 1);
                let o = &objects[0];
                let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
                prop_assert_eq!(keys, vec!["apiVersion", "kind", "metadata", "spec"]);
                let ann = o["metadata"]["annotations"].as_object().unwrap();
                prop_assert_eq!(ann.len(), 2);
                prop_assert_eq!(ann["a"].as_str(), Some(value.as_str()));
                prop_assert_eq!(&o["spec"], &serde_json::json!({}));
            }
            // A value YAML reserves (`@x`) may make the text invalid; it never adds structure.
            Err(e) => prop_assert!(e.to_string().contains("not valid YAML"), "{e}"),
        }
    }

    #[test]
    fn rendering_objects_from_any_text_never_panics(text in "\\PC{0,200}", value in "\\PC{0,20}") {
        let kw = keywords(&[("id".into(), value)]);
        let _ = render_objects(&text, "f", &Indicators::default(), &kw);
    }

    #[test]
    fn a_request_string_is_placed_as_exactly_that_string(value in "[A-Za-z0-9._+=/@:-]{0,40}") {
        prop_assume!(is_inert(&value));
        let template = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  annotations:\n    a: \"<v>\"\n    b: <v>\n    c: pre-<v>\nspec:\n  args:\n    - <v>\n  list: [<v>, <v>]\n  map: {k: <v>}\n";
        let objects = render_objects(template, "f", &Indicators::default(), &keywords(&[("v".into(), value.clone())])).unwrap();
        prop_assert_eq!(objects.len(), 1);
        let o = &objects[0];
        let v = serde_json::Value::String(value.clone());
        prop_assert_eq!(&o["metadata"]["annotations"]["a"], &v);
        prop_assert_eq!(&o["metadata"]["annotations"]["b"], &v);
        prop_assert_eq!(&o["metadata"]["annotations"]["c"], &serde_json::Value::String(format!("pre-{value}")));
        prop_assert_eq!(&o["spec"]["args"], &serde_json::json!([value.clone()]));
        prop_assert_eq!(&o["spec"]["list"], &serde_json::json!([value.clone(), value.clone()]));
        prop_assert_eq!(&o["spec"]["map"], &serde_json::json!({"k": value.clone()}));
    }
}
