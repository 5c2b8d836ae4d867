//! How the parts of a start's body are read, as the Kubernetes manager's clients send them:
//! `start_id` as a string or a number, `env` values as strings, numbers or booleans (the hub
//! sends `JUPYTERHUB_USER_ID` as a number), and `certs` present, empty or absent.
//!
//! Every refusal names the key and says what it must be.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The hub's certificates for a lab's internal TLS (PEM text).
#[derive(Clone, PartialEq, Eq)]
pub struct Certs {
    pub keyfile: String,
    pub certfile: String,
    pub cafile: String,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.write_str("Certs(..)")
    }
}

/// The certificates as the data of their Secret, under the names the manager gives them (a lab
/// set up for the manager reads them so).
pub fn cert_env(c: &Certs) -> BTreeMap<String, String> {
    [
        ("JUPYTERHUB_SSL_KEYFILE_DATA", &c.keyfile),
        ("JUPYTERHUB_SSL_CERTFILE_DATA", &c.certfile),
        ("JUPYTERHUB_SSL_CLIENT_CA_DATA", &c.cafile),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// The text of a scalar, as it is placed into an environment variable; `None` for anything
/// that is not a string, number or boolean.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether `key` can be a key of a Secret's data (and so a variable of the service's env):
/// letters, digits, `-`, `_` and `.`.
pub fn is_env_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads `env`: an object of scalars with Secret-key names.
pub fn env_of(value: Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err("env must be an object of variables".into());
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if !is_env_key(&k) {
            return Err(format!(
                "env key {k:?} cannot name a variable: use letters, digits, - _ ."
            ));
        }
        let Some(text) = scalar_text(&v) else {
            return Err(format!(
                "env.{k} must be a string, number or boolean, not {v}"
            ));
        };
        out.insert(k, text);
    }
    Ok(out)
}

/// Reads `certs`: `{}`, `null` and absence mean none; otherwise all three files as strings.
pub fn certs_of(value: Value) -> Result<Option<Certs>, String> {
    let map = match value {
        Value::Null => return Ok(None),
        Value::Object(map) if map.is_empty() => return Ok(None),
        Value::Object(map) => map,
        other => return Err(format!("certs must be an object, not {other}")),
    };
    let field = |name: &str| {
        match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!(
            "certs.{name} is missing: certs holds keyfile, certfile and cafile (PEM text), or is empty"
        )),
    }
    };
    Ok(Some(Certs {
        keyfile: field("keyfile")?,
        certfile: field("certfile")?,
        cafile: field("cafile")?,
    }))
}

/// Reads `start_id`: a string, or a number (kept as its text).
pub fn start_id_of(value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("start_id must be a string, not {other}")),
    }
}

pub(super) fn env<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    env_of(Value::deserialize(d)?).map_err(D::Error::custom)
}

pub(super) fn certs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Certs>, D::Error> {
    certs_of(Value::deserialize(d)?).map_err(D::Error::custom)
}

pub(super) fn start_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    start_id_of(Value::deserialize(d)?).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::service_api::cluster::StartRequest;

    #[test]
    fn env_takes_what_the_hub_sends() {
        let env = env_of(
            json!({"JUPYTERHUB_USER_ID": 17, "JUPYTER_MODULE_X_ENABLED": 0,
            "JUPYTERHUB_USER": "alice", "FLAG": true, "RATIO": 1.5}),
        )
        .unwrap();
        assert_eq!(env["JUPYTERHUB_USER_ID"], "17");
        assert_eq!(env["JUPYTER_MODULE_X_ENABLED"], "0");
        assert_eq!(env["JUPYTERHUB_USER"], "alice");
        assert_eq!(env["FLAG"], "true");
        assert_eq!(env["RATIO"], "1.5");
    }

    #[test]
    fn env_refusals_name_the_key() {
        for (value, needle) in [
            (json!({"A": null}), "env.A"),
            (json!({"A": {"b": 1}}), "env.A"),
            (json!({"A": [1]}), "env.A"),
            (json!({"a=b": "1"}), "\"a=b\""),
            (json!({"": "1"}), "\"\""),
            (json!({"../x": "1"}), "\"../x\""),
            (json!("x"), "object"),
        ] {
            let err = env_of(value).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn certs_present_empty_or_absent() {
        assert_eq!(certs_of(json!(null)).unwrap(), None);
        assert_eq!(certs_of(json!({})).unwrap(), None);
        let c = certs_of(json!({"keyfile": "K", "certfile": "C", "cafile": "A"}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.keyfile.as_str(), c.certfile.as_str(), c.cafile.as_str()),
            ("K", "C", "A")
        );
        assert_eq!(format!("{c:?}"), "Certs(..)");
        let data = cert_env(&c);
        assert_eq!(data["JUPYTERHUB_SSL_KEYFILE_DATA"], "K");
        assert_eq!(data["JUPYTERHUB_SSL_CERTFILE_DATA"], "C");
        assert_eq!(data["JUPYTERHUB_SSL_CLIENT_CA_DATA"], "A");
        let err = certs_of(json!({"keyfile": "K"})).unwrap_err();
        assert!(err.contains("certs.certfile"), "{err}");
        assert!(certs_of(json!({"keyfile": 1, "certfile": "C", "cafile": "A"})).is_err());
        assert!(certs_of(json!("x")).is_err());
    }

    #[test]
    fn the_spawners_body_parses_and_unknown_keys_are_dropped() {
        let body = json!({"user_options": {"name": "My lab", "service": "JupyterLab/JupyterLab", "system": "HDF-Cloud"},
            "env": {"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_STATUS_URL": "users/progress/status/alice/x",
                    "JUPYTERHUB_USER_ID": 17, "JUPYTERHUB_USER": "alice"},
            "certs": {}, "start_id": "1a2b3c4d", "auth_state": {"access_token": "secret-at"}});
        let req: StartRequest = serde_json::from_value(body).unwrap();
        assert_eq!(req.start_id, "1a2b3c4d");
        assert_eq!(req.env["JUPYTERHUB_USER_ID"], "17");
        assert!(req.certs.is_none());
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("secret-at") && !shown.contains("\"t\""),
            "{shown}"
        );
        let req: StartRequest =
            serde_json::from_value(json!({"start_id": 12345678, "env": {}})).unwrap();
        assert_eq!(req.start_id, "12345678");
        assert!(serde_json::from_value::<StartRequest>(json!({"start_id": [1]})).is_err());
        assert!(serde_json::from_value::<StartRequest>(json!({"env": {}})).is_err());
    }
}
