//! The `api` section of the configuration: clients and their credentials, where the templates
//! are, how placeholders look, the replacement tables, and how much failure detail to report.
//!
//! Plain data with defaults and [`ApiConfig::problems`]; secrets are never written here, only
//! where to read them from (a file or an environment variable).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::ServiceType;

/// The service API's settings (`api:` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The folder of templates: `<descriptions>/<client>/<service>/<option>/service.yaml`.
    pub descriptions: String,
    /// The template's file name in each option's folder (the manager's `yaml_filename`).
    pub yaml_filename: String,
    /// The folder beside the template packed into `<input>` (the manager's `input_dir`).
    pub input_dir: String,
    /// Which entry of `stages` applies to this installation (empty: the value of `stageEnv`,
    /// else none).
    pub stage: String,
    /// An environment variable naming the stage when `stage` is empty (the manager reads
    /// `STAGE`); empty: none is read.
    pub stage_env: String,
    /// What opens and closes a placeholder, `<` and `>` by default.
    pub indicators: Indicators,
    /// The names of the built-in keywords.
    pub keywords: KeywordNames,
    /// Replacement tables per stage: keyword → value. The active one is `stages[stage]`.
    pub stages: BTreeMap<String, BTreeMap<String, String>>,
    /// Where the API keeps one ConfigMap per started service (what it created, for whom).
    pub state_namespace: String,
    /// The `env` entry that names the user a start is for.
    pub user_id_env: String,
    /// Pod events reported with a failed service (the most recent).
    pub events: usize,
    /// Container log lines reported with a failed service (the last).
    pub log_lines: usize,
    /// Bytes read from each container log when a failed service is reported.
    pub log_bytes: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a start may take to create its objects before it is rolled back (it goes on
    /// after its client has gone or its request has timed out).
    pub start_timeout_seconds: u64,
    /// A start or stop whose record has not moved on for this long was abandoned by a replica
    /// that went away; its record and objects are collected.
    pub abandoned_after_seconds: u64,
    /// Starts one client may have in flight at once (per replica).
    pub max_starts_in_flight: usize,
    /// Starts one client may begin per minute (per replica).
    pub starts_per_minute: u32,
    /// Service type of the Exposure made for a template that brings none.
    pub service_type: ServiceType,
    /// The host a service's node ports are reached at from outside (a load balancer or DNS name
    /// in front of the nodes); empty: the external address of the node the pod runs on.
    pub node_port_host: String,
    /// The `user_options` key a portal's user may choose the ipaddr tag with (JARVICE's "IP
    /// Address Tag"), so that an administrator's persistent Service selecting
    /// `<prefix>-<tag>` finds the service; empty: the tag is always the service's id.
    pub tag_option: String,
    /// The container whose state alone says how a service is doing, in pods that have one of
    /// that name (the manager's `container_main_name`); empty: every container counts.
    pub container_main_name: String,
    /// The lab's internal TLS (the manager's `services.ssl`).
    pub ssl: Ssl,
    /// Persistent home folders, one per client and user, kept across stops (the manager's
    /// `userhomes`).
    pub user_homes: UserHomes,
    /// Kubeconfig the API creates objects with (default: the same as the provisioner's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Context of that kubeconfig (default: its current context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A user to impersonate for every request (needs `impersonate` RBAC on that user). The
    /// identity the API acts as must be a trusted submitter and must not be Portico's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonate: Option<String>,
    /// The portals allowed to call the API.
    pub clients: Vec<ApiClient>,
}

/// Persistent user homes: a PersistentVolumeClaim per client and user, made by the first start
/// that needs it and never deleted by a stop, so what a user keeps there survives stops and
/// restarts. Templates mount it by the `userhome_claim` keyword and may seed it from the
/// `userhome_skel` keyword (the skeleton folder, packed) when it is new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UserHomes {
    pub enabled: bool,
    /// The claim's requested size.
    pub size: String,
    /// The claim's storage class (default: the cluster's default class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// A folder whose files seed a new home (the manager's `userhomes.skel`); empty: none.
    pub skel: String,
}

impl Default for UserHomes {
    fn default() -> Self {
        Self {
            enabled: false,
            size: "10Gi".into(),
            storage_class_name: None,
            skel: String::new(),
        }
    }
}

/// The lab's internal TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Ssl {
    /// When a start's body carries `certs` (a hub with internal SSL), keep them in the Secret
    /// named by the `cert_secret_name` keyword, under `JUPYTERHUB_SSL_KEYFILE_DATA`,
    /// `JUPYTERHUB_SSL_CERTFILE_DATA` and `JUPYTERHUB_SSL_CLIENT_CA_DATA`, deleted with the
    /// service. Off: the certificates are dropped unread.
    pub enabled: bool,
}

/// Placeholder delimiters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Indicators {
    pub open: String,
    pub close: String,
}

impl Default for Indicators {
    fn default() -> Self {
        Self {
            open: "<".into(),
            close: ">".into(),
        }
    }
}

/// The names under which the built-in values appear in templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KeywordNames {
    /// The service's name (`uuidcode`).
    pub service_id: String,
    /// This start attempt's `start_id`.
    pub start_id: String,
    /// The user the client named.
    pub user_id: String,
    /// `<client>_<user>`: unique across clients.
    pub unique_user_id: String,
    /// The client's name.
    pub client: String,
    /// The Secret holding `env`.
    pub secret_name: String,
    /// The name reserved for the service's certificate Secret.
    pub cert_secret_name: String,
    /// The namespace everything is created in.
    pub namespace: String,
    /// The ipaddr tag the service's pods get.
    pub tag: String,
    /// The template folder's `input/`, packed as base64 tar.gz.
    pub input: String,
    /// The user's persistent home: the name of its PersistentVolumeClaim (`api.userHomes`).
    pub user_home: String,
    /// The skeleton a new home is seeded from (`api.userHomes.skel`), packed as base64 tar.gz.
    pub user_home_skel: String,
}

impl Default for KeywordNames {
    fn default() -> Self {
        Self {
            service_id: "id".into(),
            start_id: "start_id".into(),
            user_id: "user_id".into(),
            unique_user_id: "unique_user_id".into(),
            client: "client".into(),
            secret_name: "secret_name".into(),
            cert_secret_name: "cert_secret_name".into(),
            namespace: "namespace".into(),
            tag: "tag".into(),
            input: "input".into(),
            user_home: "userhome_claim".into(),
            user_home_skel: "userhome_skel".into(),
        }
    }
}

impl KeywordNames {
    /// `(config key, keyword)` of every built-in.
    pub fn all(&self) -> [(&'static str, &str); 12] {
        [
            ("serviceId", &self.service_id),
            ("startId", &self.start_id),
            ("userId", &self.user_id),
            ("uniqueUserId", &self.unique_user_id),
            ("client", &self.client),
            ("secretName", &self.secret_name),
            ("certSecretName", &self.cert_secret_name),
            ("namespace", &self.namespace),
            ("tag", &self.tag),
            ("input", &self.input),
            ("userHome", &self.user_home),
            ("userHomeSkel", &self.user_home_skel),
        ]
    }
}

/// The prefix of keywords taken from the request's `user_options` (`<user_options.image>`).
pub const USER_OPTIONS_PREFIX: &str = "user_options.";

/// One portal allowed to call the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiClient {
    /// The client's name: its folder under `descriptions`, part of the unique user id and of the
    /// labels on what it starts. Letters, digits and `-`.
    pub name: String,
    /// Bearer token, read from this file (trailing whitespace dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Bearer token, read from this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// HTTP basic user name (with `passwordFile` or `passwordEnv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Namespace of the client's services; `{client}` and `{user}` are replaced (the user id must
    /// then be a valid namespace name part).
    pub namespace: String,
    /// Patterns (`*`: any characters) the namespace a start makes must match; empty: the
    /// `namespace` with `{user}` as `*`. System and Portico namespaces are refused regardless.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
    /// Replacement table for this client's templates: keyword → value (wins over the stage's).
    pub replacements: BTreeMap<String, String>,
    /// Replacement tables of this client per stage (the manager's `stage_credential`): the
    /// active stage's wins over `replacements` and the stage's own table.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stage_replacements: BTreeMap<String, BTreeMap<String, String>>,
    /// May read and change the log level (`/api/logs/level`).
    pub admin: bool,
    /// Whose identity the client's services are stamped with.
    pub stamp_as: StampAs,
    /// Which clients' wire format the client speaks: Portico's own (the default), or that of
    /// the Jupyter-JSC Kubernetes manager's clients (`k8smgr`): see [`Wire`].
    pub wire: Wire,
}

/// The reply shapes and naming a client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Wire {
    /// Portico's own: `{"status": …}` polls, `{"error": code, "message"}` refusals, names that
    /// must be lowercase DNS labels.
    #[default]
    Portico,
    /// A drop-in for the Kubernetes manager's clients (JupyterHub's BackendSpawner): polls add a
    /// boolean `running` (and `details` once the service failed or ended), refusals are
    /// `{"error": summary, "detailed_error": details}`, any `uuidcode` is mapped to an object
    /// name injectively, the objects the API makes are named per start
    /// (`svc-<id>-<start_id>`, `secret-<id>-<start_id>`), and every request is answered within
    /// the clients' 30 s timeout.
    #[serde(rename = "k8smgr")]
    K8smgr,
}

impl Wire {
    /// How long a request of this wire may take before it is answered `504` (a start goes on
    /// regardless). The manager's clients give up after 30 s and count that as a failed start,
    /// so they get an answer with time to spare.
    pub fn request_timeout(self) -> std::time::Duration {
        match self {
            Wire::Portico => std::time::Duration::from_secs(60),
            Wire::K8smgr => std::time::Duration::from_secs(25),
        }
    }
}

/// Which Portico user a client's services belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum StampAs {
    /// `<client>_<user>`: two clients' users never share routing values.
    #[default]
    Unique,
    /// The user id as the client sends it: the same user as a `kubectl` user of that name.
    User,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            descriptions: "descriptions".into(),
            yaml_filename: "service.yaml".into(),
            input_dir: "input".into(),
            stage: String::new(),
            stage_env: String::new(),
            indicators: Indicators::default(),
            keywords: KeywordNames::default(),
            stages: BTreeMap::new(),
            state_namespace: "portico-system".into(),
            user_id_env: "JUPYTERHUB_USER".into(),
            events: 10,
            log_lines: 50,
            log_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            start_timeout_seconds: 50,
            abandoned_after_seconds: 300,
            max_starts_in_flight: 4,
            starts_per_minute: 30,
            service_type: ServiceType::NodePort,
            node_port_host: String::new(),
            tag_option: String::new(),
            container_main_name: String::new(),
            ssl: Ssl::default(),
            user_homes: UserHomes::default(),
            kubeconfig: None,
            context: None,
            impersonate: None,
            clients: Vec::new(),
        }
    }
}

/// Whether `name` is one plain file name: no separator, no way up.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` can be a keyword: a letter or `_` first, then letters, digits, `_`, `.`, `-`.
pub fn is_keyword(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ApiConfig {
    /// The stage in force: `stage`, else the value of the variable `stageEnv` names.
    pub fn active_stage(&self) -> String {
        if !self.stage.is_empty() || self.stage_env.is_empty() {
            return self.stage.clone();
        }
        std::env::var(&self.stage_env)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    /// Every problem with the values, each naming its key (`api.…`).
    pub fn problems(&self, trusted_submitters_empty: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.descriptions.is_empty() {
            out.push("api.descriptions: must name a folder".to_string());
        }
        for (key, name) in [
            ("yamlFilename", &self.yaml_filename),
            ("inputDir", &self.input_dir),
        ] {
            if !is_file_name(name) {
                out.push(format!(
                    "api.{key}: {name:?} must be one file name in the option's folder (letters, digits, . _ -; not . or ..)"
                ));
            }
        }
        let (open, close) = (&self.indicators.open, &self.indicators.close);
        for (key, v) in [("open", open), ("close", close)] {
            if v.is_empty()
                || v.chars()
                    .any(|c| c.is_ascii_alphanumeric() || c.is_whitespace())
            {
                out.push(format!(
                    "api.indicators.{key}: {v:?} must be non-empty, without letters, digits or spaces"
                ));
            }
        }
        let builtins: Vec<&str> = self.keywords.all().iter().map(|(_, k)| *k).collect();
        for (key, name) in self.keywords.all() {
            if !is_keyword(name) || name.starts_with(USER_OPTIONS_PREFIX) {
                out.push(format!(
                    "api.keywords.{key}: {name:?} is not a keyword (a letter or _, then letters, digits, _ . -; not user_options.…)"
                ));
            }
            if builtins.iter().filter(|b| **b == name).count() > 1 {
                out.push(format!("api.keywords.{key}: {name:?} is used twice"));
            }
        }
        let check_table = |out: &mut Vec<String>, key: &str, table: &BTreeMap<String, String>| {
            for k in table.keys() {
                if !is_keyword(k) || k.starts_with(USER_OPTIONS_PREFIX) {
                    out.push(format!("{key}: {k:?} is not a keyword name"));
                } else if builtins.contains(&k.as_str()) {
                    out.push(format!(
                        "{key}: {k:?} is a built-in keyword and cannot be replaced"
                    ));
                }
            }
        };
        for (stage, table) in &self.stages {
            check_table(&mut out, &format!("api.stages[{stage:?}]"), table);
        }
        if !self.stage.is_empty() && !self.stages.contains_key(&self.stage) {
            out.push(format!(
                "api.stage: {:?} has no table in api.stages",
                self.stage
            ));
        }
        if !self.stage_env.is_empty() && !is_keyword(&self.stage_env) {
            out.push(format!(
                "api.stageEnv: {:?} is not an environment variable name",
                self.stage_env
            ));
        }
        if !crate::core::label::is_dns_label(&self.state_namespace) {
            out.push(format!(
                "api.stateNamespace: {:?} is not a namespace name",
                self.state_namespace
            ));
        }
        if self.user_homes.enabled
            && (self.user_homes.size.is_empty()
                || !self
                    .user_homes
                    .size
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.'))
        {
            out.push(format!(
                "api.userHomes.size: {:?} is not a quantity (e.g. 10Gi)",
                self.user_homes.size
            ));
        }
        if !self.node_port_host.is_empty()
            && !self
                .node_port_host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            out.push(format!(
                "api.nodePortHost: {:?} must be a host name or IP address",
                self.node_port_host
            ));
        }
        if !self.tag_option.is_empty() && !is_keyword(&self.tag_option) {
            out.push(format!(
                "api.tagOption: {:?} must name a user_options key (a letter or _, then letters, digits, _ . -)",
                self.tag_option
            ));
        }
        if self.user_id_env.is_empty() {
            out.push("api.userIdEnv: must name an env entry".to_string());
        }
        if self.events > 1000 || self.log_lines > 10_000 {
            out.push("api.events (≤ 1000) or api.logLines (≤ 10000) is too large".to_string());
        }
        if !(1024..=4 * 1024 * 1024).contains(&self.log_bytes) {
            out.push(format!(
                "api.logBytes: {} is outside 1 KiB..=4 MiB (bytes read per container log of a failed service)",
                self.log_bytes
            ));
        }
        if !(5..=600).contains(&self.start_timeout_seconds) {
            out.push(format!(
                "api.startTimeoutSeconds: {} is outside 5..=600",
                self.start_timeout_seconds
            ));
        }
        if self.abandoned_after_seconds < 2 * self.start_timeout_seconds + 10 {
            out.push(format!(
                "api.abandonedAfterSeconds: {} must exceed twice api.startTimeoutSeconds plus 10 s ({}), or live starts would be collected",
                self.abandoned_after_seconds,
                2 * self.start_timeout_seconds + 10
            ));
        }
        if !(1..=1000).contains(&self.max_starts_in_flight) {
            out.push(format!(
                "api.maxStartsInFlight: {} is outside 1..=1000 (starts one client may have in flight)",
                self.max_starts_in_flight
            ));
        }
        if !(1..=10_000).contains(&self.starts_per_minute) {
            out.push(format!(
                "api.startsPerMinute: {} is outside 1..=10000 (starts one client may begin per minute)",
                self.starts_per_minute
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            out.push(format!(
                "api.maxBodyBytes: {} is outside 1 KiB..=64 MiB",
                self.max_body_bytes
            ));
        }
        if self.impersonate.as_deref() == Some("") {
            out.push("api.impersonate: empty user name".to_string());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = format!("api.clients[{i}]");
            let valid_name = !c.name.is_empty()
                && c.name.len() <= 30
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !c.name.starts_with('-')
                && !c.name.ends_with('-');
            if !valid_name {
                out.push(format!(
                    "{key}.name: {:?} must be 1-30 letters, digits or inner '-'",
                    c.name
                ));
            }
            if !names.insert(c.name.clone()) {
                out.push(format!("{key}.name: {:?} is used twice", c.name));
            }
            let token = c.token_file.is_some() || c.token_env.is_some();
            let basic = c.username.is_some();
            if c.token_file.is_some() && c.token_env.is_some() {
                out.push(format!("{key}: tokenFile and tokenEnv are exclusive"));
            }
            if c.password_file.is_some() && c.password_env.is_some() {
                out.push(format!("{key}: passwordFile and passwordEnv are exclusive"));
            }
            if basic != (c.password_file.is_some() || c.password_env.is_some()) {
                out.push(format!(
                    "{key}: username needs passwordFile or passwordEnv, and they need username"
                ));
            }
            if c.username
                .as_deref()
                .is_some_and(|u| u.is_empty() || u.contains(':'))
            {
                out.push(format!("{key}.username: must be non-empty, without ':'"));
            }
            if !token && !basic {
                out.push(format!(
                    "{key}: no credentials (tokenFile, tokenEnv, or username with passwordFile/passwordEnv)"
                ));
            }
            if c.namespace.is_empty() {
                out.push(format!("{key}.namespace: must not be empty"));
            } else {
                out.extend(super::namespace::problems(
                    &key,
                    &c.namespace,
                    &c.name,
                    &c.allowed_namespaces,
                    &[
                        self.state_namespace.as_str(),
                        super::namespace::PORTICO_NAMESPACE,
                    ],
                ));
            }
            check_table(&mut out, &format!("{key}.replacements"), &c.replacements);
            for (stage, table) in &c.stage_replacements {
                check_table(
                    &mut out,
                    &format!("{key}.stageReplacements[{stage:?}]"),
                    table,
                );
            }
        }
        if !self.clients.is_empty() && trusted_submitters_empty {
            out.push("api.clients: the API creates objects as a trusted submitter; list its identity in identity.trustedSubmitters".to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ApiConfig::default().problems(true).is_empty());
    }

    #[test]
    fn the_stage_comes_from_the_setting_else_the_named_variable() {
        let mut c = ApiConfig {
            stage_env: "PORTICO_TEST_CONFIG_STAGE".into(),
            ..ApiConfig::default()
        };
        std::env::remove_var("PORTICO_TEST_CONFIG_STAGE");
        assert_eq!(c.active_stage(), "");
        std::env::set_var("PORTICO_TEST_CONFIG_STAGE", "staging\n");
        assert_eq!(c.active_stage(), "staging");
        c.stage = "production".into();
        assert_eq!(c.active_stage(), "production");
        c.stage = String::new();
        c.stage_env = String::new();
        assert_eq!(c.active_stage(), "");
    }

    #[test]
    fn bad_values_are_each_named() {
        let mut c = ApiConfig::default();
        c.indicators.open = "a".into();
        c.keywords.tag = "id".into();
        c.stage = "prod".into();
        c.max_starts_in_flight = 0;
        c.starts_per_minute = 0;
        c.log_bytes = 10;
        c.start_timeout_seconds = 200;
        c.yaml_filename = "../x.yaml".into();
        c.input_dir = String::new();
        c.tag_option = "a b".into();
        c.node_port_host = "http://x/".into();
        c.stage_env = "A B".into();
        c.clients = vec![
            ApiClient {
                name: "bad name".into(),
                namespace: "team".into(),
                replacements: [("id".to_string(), "x".to_string())].into(),
                stage_replacements: [(
                    "prod".to_string(),
                    [("bad key".to_string(), "x".to_string())].into(),
                )]
                .into(),
                ..Default::default()
            },
            ApiClient {
                name: "p".into(),
                namespace: String::new(),
                username: Some("u".into()),
                token_env: Some("T".into()),
                ..Default::default()
            },
        ];
        let problems = c.problems(true).join("\n");
        for needle in [
            "api.indicators.open",
            "api.keywords.tag",
            "api.stage",
            "api.clients[0].name",
            "api.clients[0]: no credentials",
            "built-in keyword",
            "api.clients[1]: username needs",
            "api.clients[1].namespace",
            "identity.trustedSubmitters",
            "api.maxStartsInFlight",
            "api.startsPerMinute",
            "api.logBytes",
            "api.abandonedAfterSeconds",
            "api.yamlFilename",
            "api.inputDir",
            "api.tagOption",
            "api.nodePortHost",
            "api.stageEnv",
            "stageReplacements",
        ] {
            assert!(problems.contains(needle), "missing {needle} in\n{problems}");
        }
    }
}
