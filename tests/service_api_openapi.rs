//! The server matches openapi/service-api.yaml: every documented path and method is exercised,
//! every answer has a status the description lists for that operation, and every JSON body
//! has the fields (and types and enum values) its documented schema requires.

mod harness;
mod service_api_support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use service_api_support::*;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/service-api.yaml"
    ))
    .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Follows a local `$ref`.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                spec,
                spec.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Checks `value` against a (small) JSON schema; returns what does not match.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            out.push(format!("{at}: expected {t}, got {value}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            out.push(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let Some(obj) = value.as_object() {
        for field in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = field.as_str().unwrap();
            if !obj.contains_key(field) {
                out.push(format!("{at}: required field {field} missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(spec, s, v, &format!("{at}.{k}"), out),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{at}: undocumented field {k}")),
                    Some(s) if s.is_object() => check(spec, s, v, &format!("{at}.{k}"), out),
                    // Plain objects with documented properties only: an extra field is a
                    // mismatch between the description and the server.
                    None if props.is_some() => out.push(format!("{at}: undocumented field {k}")),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            check(spec, items, v, &format!("{at}[{i}]"), out);
        }
    }
}

struct Case {
    method: &'static str,
    /// The documented path this request exercises.
    documented: &'static str,
    path: String,
    auth: Auth<'static>,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Value>,
    /// The status this case is meant to produce (the description must list it too).
    expect: u16,
}

fn case(
    method: &'static str,
    documented: &'static str,
    path: &str,
    auth: Auth<'static>,
    expect: u16,
) -> Case {
    Case {
        method,
        documented,
        path: path.to_string(),
        auth,
        headers: Vec::new(),
        body: None,
        expect,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let spec = spec();
    let env = ApiEnv::start(&shipped_descriptions(), with_hubs).await;
    let portal = || Auth::Bearer(PORTAL_TOKEN);
    let admin = || Auth::Bearer(ADMIN_TOKEN);
    let svc = "/api/services/{name}/";
    let start = |id: &'static str, start_id: &str, service: &str, expect: u16| Case {
        headers: vec![("uuidcode", id)],
        body: Some(start_body(start_id, service, "alice")),
        ..case(
            "POST",
            "/api/services/",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            expect,
        )
    };
    // The Kubernetes manager's clients: the same operations, the other reply shape.
    let hub = || Auth::Raw("Token hub-token-0123456789abcdef");
    let hub_start = |id: &'static str, start_id: &str, service: &str, expect: u16| Case {
        headers: vec![("uuidcode", id)],
        body: Some(json!({"user_options": {"service": service}, "certs": {},
            "env": {"JUPYTERHUB_USER": "alice", "JUPYTERHUB_USER_ID": 7}, "start_id": start_id})),
        auth: hub(),
        ..start(id, start_id, service, expect)
    };
    let cases = vec![
        case("GET", "/api/health/", "/api/health/", Auth::None, 200),
        case("GET", "/api/health/", "/api/health", Auth::None, 200),
        hub_start("Hub-Lab", "1a2b3c4d", "JupyterLab/JupyterLab", 201),
        hub_start("Hub-Lab", "1a2b3c4d", "JupyterLab/JupyterLab", 200),
        hub_start("hub-x", "1a2b3c4d", "JupyterLab/Nothing", 400),
        case("GET", svc, "/api/services/Hub-Lab/", hub(), 200),
        case("GET", svc, "/api/services/nothing/", hub(), 404),
        case("DELETE", svc, "/api/services/Hub-Lab/", hub(), 200),
        case("DELETE", svc, "/api/services/Hub-Lab/", hub(), 404),
        start("oa-1", "s1", "jupyterlab", 201),
        start("oa-1", "s1", "jupyterlab", 200),
        start("oa-2", "s1", "no-such-service", 400),
        Case {
            headers: vec![],
            ..start("oa-3", "s1", "jupyterlab", 400)
        },
        Case {
            body: Some(json!({"start_id": 5})),
            ..start("oa-3", "s1", "jupyterlab", 400)
        },
        Case {
            auth: Auth::Bearer("wrong"),
            ..start("oa-3", "s1", "jupyterlab", 401)
        },
        Case {
            headers: vec![("uuidcode", "oa-1"), ("user-id", "bob")],
            body: Some(start_body("s2", "jupyterlab", "bob")),
            ..start("oa-1", "s2", "jupyterlab", 409)
        },
        case("GET", svc, "/api/services/oa-1/", portal(), 200),
        case("GET", svc, "/api/services/oa-1", portal(), 200),
        case("GET", svc, "/api/services/nothing/", portal(), 404),
        case("GET", svc, "/api/services/oa-1/", Auth::None, 401),
        Case {
            headers: vec![("user-id", "bob")],
            ..case("GET", svc, "/api/services/oa-1/", portal(), 404)
        },
        case(
            "DELETE",
            svc,
            "/api/services/oa-1/",
            Auth::Bearer("wrong"),
            401,
        ),
        case("DELETE", svc, "/api/services/oa-1/", portal(), 200),
        case("DELETE", svc, "/api/services/oa-1/", portal(), 404),
        case(
            "GET",
            "/api/logs/handler/",
            "/api/logs/handler/",
            admin(),
            200,
        ),
        case(
            "GET",
            "/api/logs/handler/",
            "/api/logs/handler/",
            portal(),
            403,
        ),
        case(
            "GET",
            "/api/logs/handler/",
            "/api/logs/handler",
            Auth::None,
            401,
        ),
        Case {
            body: Some(
                json!({"handler": "stream", "configuration": {"level": 30, "stream": "ext://sys.stderr"}}),
            ),
            ..case(
                "POST",
                "/api/logs/handler/",
                "/api/logs/handler/",
                admin(),
                201,
            )
        },
        Case {
            body: Some(json!({"handler": "stream", "configuration": {}})),
            ..case(
                "POST",
                "/api/logs/handler/",
                "/api/logs/handler/",
                admin(),
                400,
            )
        },
        Case {
            body: Some(json!({"handler": "smtp", "configuration": {}})),
            ..case(
                "POST",
                "/api/logs/handler/",
                "/api/logs/handler/",
                admin(),
                400,
            )
        },
        Case {
            body: Some(json!({"handler": "stream"})),
            ..case(
                "POST",
                "/api/logs/handler/",
                "/api/logs/handler/",
                portal(),
                403,
            )
        },
        case(
            "POST",
            "/api/logs/handler/",
            "/api/logs/handler/",
            Auth::None,
            401,
        ),
        case(
            "GET",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            admin(),
            200,
        ),
        case(
            "GET",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/file/",
            admin(),
            404,
        ),
        case(
            "GET",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            portal(),
            403,
        ),
        case(
            "GET",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            Auth::None,
            401,
        ),
        Case {
            body: Some(json!({"handler": "stream", "configuration": {"level": "ERROR"}})),
            ..case(
                "PUT",
                "/api/logs/handler/{handler}/",
                "/api/logs/handler/stream/",
                admin(),
                200,
            )
        },
        Case {
            body: Some(json!({"configuration": {"level": "LOUD"}})),
            ..case(
                "PUT",
                "/api/logs/handler/{handler}/",
                "/api/logs/handler/stream/",
                admin(),
                400,
            )
        },
        Case {
            body: Some(json!({"configuration": {}})),
            ..case(
                "PUT",
                "/api/logs/handler/{handler}/",
                "/api/logs/handler/file/",
                admin(),
                404,
            )
        },
        Case {
            body: Some(json!({"configuration": {}})),
            ..case(
                "PUT",
                "/api/logs/handler/{handler}/",
                "/api/logs/handler/stream/",
                portal(),
                403,
            )
        },
        case(
            "PUT",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            Auth::None,
            401,
        ),
        case(
            "DELETE",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            portal(),
            403,
        ),
        case(
            "DELETE",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            admin(),
            204,
        ),
        case(
            "DELETE",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            admin(),
            404,
        ),
        case(
            "DELETE",
            "/api/logs/handler/{handler}/",
            "/api/logs/handler/stream/",
            Auth::None,
            401,
        ),
        case(
            "GET",
            "/api/logs/logtest/",
            "/api/logs/logtest/",
            admin(),
            200,
        ),
        case(
            "GET",
            "/api/logs/logtest/",
            "/api/logs/logtest",
            portal(),
            403,
        ),
        case(
            "GET",
            "/api/logs/logtest/",
            "/api/logs/logtest/",
            Auth::None,
            401,
        ),
        case("GET", "/api/logs/level", "/api/logs/level", admin(), 200),
        case("GET", "/api/logs/level", "/api/logs/level", portal(), 403),
        case("GET", "/api/logs/level", "/api/logs/level", Auth::None, 401),
        Case {
            body: Some(json!({"targets": {"portico::service_api": "debug"}})),
            ..case("PUT", "/api/logs/level", "/api/logs/level", admin(), 200)
        },
        Case {
            body: Some(json!({"level": "loud"})),
            ..case("PUT", "/api/logs/level", "/api/logs/level", admin(), 400)
        },
        Case {
            body: Some(json!({"targets": {}})),
            ..case("PUT", "/api/logs/level", "/api/logs/level", portal(), 403)
        },
    ];
    let mut exercised = BTreeSet::new();
    let mut problems = Vec::new();
    for c in cases {
        let reply = env
            .call(c.method, &c.path, c.auth, &c.headers, c.body.as_ref())
            .await;
        let status = reply.status.as_u16();
        let what = format!("{} {} → {status}", c.method, c.path);
        if status != c.expect {
            problems.push(format!("{what}: expected {} ({})", c.expect, reply.body));
        }
        exercised.insert((c.documented, c.method.to_ascii_lowercase()));
        let operation = &spec["paths"][c.documented][c.method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is not documented",
            c.method,
            c.documented
        );
        let Some(response) = operation["responses"].get(status.to_string()) else {
            problems.push(format!("{what}: status not documented"));
            continue;
        };
        let response = resolve(&spec, response);
        match response.pointer("/content/application~1json/schema") {
            Some(schema) => {
                let ct = reply
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if ct != "application/json" {
                    problems.push(format!("{what}: content-type {ct:?}"));
                }
                let mut out = Vec::new();
                check(&spec, schema, &reply.body, "body", &mut out);
                problems.extend(out.into_iter().map(|p| format!("{what}: {p}")));
            }
            None => {
                if !reply.body.is_null() {
                    problems.push(format!("{what}: undocumented body {}", reply.body));
                }
            }
        }
    }
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some()
                && !exercised.contains(&(path.as_str(), method.to_string()))
            {
                problems.push(format!("{method} {path} is documented but not exercised"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the server and openapi/service-api.yaml disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_description_is_well_formed() {
    let spec = spec();
    assert_eq!(
        spec["openapi"].as_str().unwrap().split('.').next(),
        Some("3")
    );
    // Every $ref resolves, every operation lists 401 (authentication is always required).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec, &mut all);
    for r in all {
        assert!(
            spec.pointer(r.trim_start_matches('#')).is_some(),
            "dangling {r}"
        );
    }
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // Only an operation documented as needing no credentials (`security: []`) may
            // lack 401.
            let open = op["security"].as_array().is_some_and(|s| s.is_empty());
            if method == "parameters" || open {
                continue;
            }
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path} lacks 401"
            );
        }
    }
}

#[test]
fn the_checker_catches_mismatches() {
    let spec = spec();
    let schema = json!({"$ref": "#/components/schemas/ServiceStatus"});
    let mut out = Vec::new();
    check(
        &spec,
        &schema,
        &json!({"name": "x", "status": "sleeping", "extra": 1}),
        "body",
        &mut out,
    );
    let text = out.join("\n");
    for needle in [
        "required field reason missing",
        "sleeping",
        "undocumented field extra",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let mut out = Vec::new();
    check(
        &spec,
        &json!({"$ref": "#/components/schemas/Address"}),
        &json!({"type": "NodePort", "node_ports": {"http": "x"}}),
        "a",
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:?}");
}
