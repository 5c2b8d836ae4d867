//! Persistent user homes (`api.userHomes`): one PersistentVolumeClaim per client and user, in
//! the namespace the user's services run in, made by the first start that needs it and never
//! deleted by a stop — unlike a claim in a template, which is the service's and goes with it.
//!
//! The claim is not in any service's record, so no stop reaches it. It is the user's only when it
//! carries the home label the API set (a hash of client and user) and the client label: a claim
//! of that name made by anyone else is refused, never mounted.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cluster::{conflict, Failure, Services};
use super::plan::Keys;

/// The label (under the annotation domain) naming whose home a claim is.
pub fn home_label(keys: &Keys) -> String {
    let domain = keys.service.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    format!("{domain}/api-home")
}

/// The home's key: a hash of client and user (label-safe; two clients' users never meet).
pub fn home_key(client: &str, user_id: &str) -> String {
    let digest = Sha256::digest(format!("{client}/{user_id}").as_bytes());
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// The claim's name.
pub fn claim_name(key: &str) -> String {
    format!("home-{key}")
}

/// The claim a user's home is.
pub fn claim(
    keys: &Keys,
    key: &str,
    client: &str,
    namespace: &str,
    size: &str,
    storage_class: Option<&str>,
) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    });
    if let Some(class) = storage_class {
        spec["storageClassName"] = json!(class);
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(key),
            "namespace": namespace,
            "labels": {home_label(keys): key, keys.client.clone(): client},
        },
        "spec": spec,
    })
}

/// Whether a claim found under the home's name is that home (made by the API for this client
/// and user), by its labels.
pub fn is_home(keys: &Keys, found: &Value, key: &str, client: &str) -> bool {
    let labels = &found["metadata"]["labels"];
    labels[home_label(keys)] == key && labels[keys.client.as_str()] == client
}

impl Services {
    /// The user's home claim in `namespace`, made if it does not exist yet; its name.
    pub(super) async fn ensure_home(
        &self,
        client: &str,
        user_id: &str,
        namespace: &str,
    ) -> Result<String, Failure> {
        let homes = &self.policy.config.api.user_homes;
        let key = home_key(client, user_id);
        let name = claim_name(&key);
        let api: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            kube::Api::namespaced(self.kube.clone(), namespace);
        let wanted = claim(
            &self.keys,
            &key,
            client,
            namespace,
            &homes.size,
            homes.storage_class_name.as_deref(),
        );
        let found = match api
            .get_opt(&name)
            .await
            .map_err(|e| Failure::cluster("reading the user's home claim", &e))?
        {
            Some(found) => found,
            None => {
                let pvc = serde_json::from_value(wanted).map_err(|e| {
                    Failure::new(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "home",
                        format!("the home claim: {e}"),
                    )
                })?;
                let params = kube::api::PostParams {
                    field_manager: Some(super::cluster::FIELD_MANAGER.to_string()),
                    ..Default::default()
                };
                match api.create(&params, &pvc).await {
                    Ok(created) => created,
                    // Another start of the same user made it meanwhile: check it as found.
                    Err(e) if conflict(&e) => api
                        .get(&name)
                        .await
                        .map_err(|e| Failure::cluster("reading the user's home claim", &e))?,
                    Err(e) => return Err(Failure::cluster("creating the user's home claim", &e)),
                }
            }
        };
        let found = serde_json::to_value(&found).unwrap_or(Value::Null);
        if !is_home(&self.keys, &found, &key, client) {
            return Err(Failure::new(
                http::StatusCode::CONFLICT,
                "home",
                format!("the claim {name} in {namespace} is not this user's home (someone else made it); remove or rename it"),
            ));
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_home_is_one_per_client_and_user_and_known_by_its_labels() {
        let keys = Keys::new(&Config::default());
        assert_eq!(home_label(&keys), "portico.dev/api-home");
        let a = home_key("hub", "alice");
        assert_ne!(a, home_key("hub", "bob"));
        assert_ne!(a, home_key("hub2", "alice"));
        assert_eq!(a, home_key("hub", "alice"));
        let c = claim(&keys, &a, "hub", "userlabs", "10Gi", Some("fast"));
        assert_eq!(c["metadata"]["name"], claim_name(&a));
        assert_eq!(c["spec"]["resources"]["requests"]["storage"], "10Gi");
        assert_eq!(c["spec"]["storageClassName"], "fast");
        assert!(is_home(&keys, &c, &a, "hub"));
        assert!(!is_home(&keys, &c, &a, "hub2"));
        assert!(!is_home(&keys, &c, &home_key("hub", "bob"), "hub"));
        let squatter = json!({"metadata": {"name": claim_name(&a), "labels": {"portico.dev/api-client": "hub"}}});
        assert!(!is_home(&keys, &squatter, &a, "hub"));
        let plain = claim(&keys, &a, "hub", "userlabs", "1Gi", None);
        assert!(plain["spec"].get("storageClassName").is_none());
    }
}
