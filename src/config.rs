//! The one configuration type: every key has a default, and [`Config::check`] explains bad values.
//!
//! The file is YAML with camelCase keys. A missing file section means its defaults; an unknown
//! key is an error (a typo must not silently fall back to a default in a security component).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod parse;

use crate::core::host::{longest_host_prefix, HostTemplate, MIN_ENCODED_HOST_TAG, TEMPLATE_RULE};
use crate::core::label::validate_label_key;

/// The longest `provisioner.domain`: a host is a label of up to 63 characters, `.`, the domain,
/// and at most 253 characters in all.
const MAX_HOST_DOMAIN: usize = 253 - 63 - 1;

/// Everything Portico can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Label keys Portico writes and polices.
    pub labels: LabelKeys,
    /// Domain of Portico's own annotations and owner label: `<domain>/ipaddr`, `<domain>/user`,
    /// `<domain>/owner`.
    pub annotation_domain: String,
    /// Who the user is, whom to trust, and what to do with the unclear cases.
    pub identity: IdentityConfig,
    /// Deny (instead of overwrite) objects that arrive carrying forged routing labels or identity.
    pub strict: bool,
    /// The controller that keeps Services and Ingress pointed at labelled pods.
    pub provisioner: ProvisionerConfig,
    /// Enforce or only warn, and where the audit trail of decisions and writes goes.
    pub audit: AuditConfig,
    /// The service API (`portico serve --api`): clients, templates, replacement tables.
    pub api: crate::service_api::ApiConfig,
}

/// Rollout mode and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `enforce`: denials are denials. `warn`: every decision is computed and recorded, but a
    /// denial is answered as allowed with the admission warning
    /// `portico (warn mode): would deny: <message>` (for rolling Portico out on a busy cluster).
    pub mode: AuditMode,
    /// Where the audit trail (one JSON line per admission decision and per provisioner write)
    /// goes: `stdout`, `file` (see `file`, `maxFileBytes`, `keepFiles`) or `off`.
    pub trail: TrailTarget,
    /// The trail's file when `trail: file`; rotated files get `.1`, `.2`, … appended.
    pub file: String,
    /// The file is rotated before it would grow past this many bytes.
    pub max_file_bytes: u64,
    /// How many rotated files are kept besides the current one.
    pub keep_files: u32,
}

/// Whether denials are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum AuditMode {
    #[default]
    Enforce,
    Warn,
}

/// Where the audit trail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum TrailTarget {
    #[default]
    Stdout,
    File,
    Off,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            mode: AuditMode::Enforce,
            trail: TrailTarget::Stdout,
            file: "/var/log/portico/audit.jsonl".to_string(),
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 5,
        }
    }
}

/// The provisioner's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProvisionerConfig {
    /// Default Ingress host of an Exposure without `spec.ingress.host`. Must have the form
    /// `{user}-{tag}<suffix>.{domain}`: `{user}`, `{tag}` and `{domain}` each once, one DNS label
    /// that starts with `{user}-{tag}` (optionally followed by lowercase letters, digits and `-`,
    /// short enough to leave a tag room in 63 characters), then `.{domain}`. `{user}` becomes the
    /// user's host prefix and `{tag}` the host tag: the prefix and the tag themselves when they
    /// are lowercase and DNS-safe, else an encoded form with a hash of the exact value (see
    /// `core::host`), so every (user, tag) gets its own host and every default host lies in its
    /// user's host space — names whose first label under the domain starts with
    /// `<host prefix>-`.
    pub ingress_host_template: String,
    /// The `{domain}` of the host template. Exposures without an explicit host need one.
    pub domain: String,
    /// The field manager of Portico's server-side applies.
    pub field_manager: String,
    /// The Lease that elects the one replica that reconciles.
    pub lease_name: String,
    /// Namespace of the Lease (Portico's own).
    pub lease_namespace: String,
    /// How long a leader's claim lasts without renewal.
    pub lease_seconds: u32,
    /// How long a write the apiserver refused (a node port taken, a name in use) waits for a
    /// change Portico watches before it is tried again anyway: what freed the port or the name
    /// may be an object Portico does not watch.
    pub refusal_recheck_seconds: u32,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            ingress_host_template: "{user}-{tag}.{domain}".to_string(),
            domain: String::new(),
            field_manager: "portico".to_string(),
            lease_name: "portico-provisioner".to_string(),
            lease_namespace: "portico-system".to_string(),
            lease_seconds: 15,
            refusal_recheck_seconds: 300,
        }
    }
}

/// The routing label keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelKeys {
    /// Set on every pod of a job.
    pub job: String,
    /// Set on the first pod of a job only.
    pub pod0: String,
}

/// Whose request counts as whose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `user`: the requesting user; `namespace`: the namespace is the user (one namespace per tenant).
    pub mode: IdentityMode,
    /// Portals and other submitters that act for users: the user is named in the object's
    /// `<domain>/user` annotation.
    pub trusted_submitters: Principals,
    /// Controllers that create pods (and workloads) from templates Portico already stamped.
    pub workload_controllers: Principals,
    /// What a workload controller's object without a stamp gets.
    pub unstamped_fallback: Fallback,
    /// May select or expose any user's route values, and update or delete any user's objects.
    pub administrators: Principals,
    /// The cluster's own components (nodes, the scheduler, kube-system's controllers: garbage
    /// collector, namespace, endpoint and disruption controllers, …). They may update and delete
    /// any user's routed objects, as the cluster must; they never choose whose a route is.
    pub cluster_components: Principals,
    /// Portico's own identity: the only one allowed to change routing labels on UPDATE.
    pub portico: String,
    /// Explicit user → prefix map; overrides the encoding. Mapped prefixes are reserved.
    pub prefixes: BTreeMap<String, String>,
    /// Longest prefix kept verbatim; longer names are hashed.
    pub max_prefix_length: usize,
}

/// How the user of a request is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum IdentityMode {
    /// The requester (or the trusted submitter's named user, or the workload's stamp).
    #[default]
    User,
    /// The namespace of the object.
    Namespace,
}

/// What happens to a workload controller's object that carries no identity stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Fallback {
    /// Refuse it.
    #[default]
    Deny,
    /// Use the namespace as the user.
    Namespace,
}

/// A set of users and groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Principals {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Principals {
    /// Whether a requester with this name and these groups is one of the set.
    pub fn contains(&self, username: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == username)
            || groups.iter().any(|g| self.groups.iter().any(|c| c == g))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            labels: LabelKeys::default(),
            annotation_domain: "portico.dev".to_string(),
            identity: IdentityConfig::default(),
            strict: false,
            provisioner: ProvisionerConfig::default(),
            audit: AuditConfig::default(),
            api: crate::service_api::ApiConfig::default(),
        }
    }
}

impl Default for LabelKeys {
    fn default() -> Self {
        Self {
            job: "jarvice-job-ipaddr".to_string(),
            pod0: "jarvice-pod0-job-ipaddr".to_string(),
        }
    }
}

/// The cluster's own users: the scheduler and the controller manager when it runs without
/// per-controller credentials.
pub const DEFAULT_CLUSTER_COMPONENT_USERS: [&str; 3] = [
    "system:kube-scheduler",
    "system:kube-controller-manager",
    "system:apiserver",
];

/// The nodes (kubelets) and kube-system's service accounts (the controllers run as these with
/// `--use-service-account-credentials`). Whoever can act as a kube-system service account
/// already administers the cluster.
pub const DEFAULT_CLUSTER_COMPONENT_GROUPS: [&str; 2] =
    ["system:nodes", "system:serviceaccounts:kube-system"];

/// The kube-system controllers that create pods and workloads from templates.
pub const DEFAULT_WORKLOAD_CONTROLLERS: [&str; 7] = [
    "system:serviceaccount:kube-system:job-controller",
    "system:serviceaccount:kube-system:replication-controller",
    "system:serviceaccount:kube-system:cronjob-controller",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:daemon-set-controller",
];

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            mode: IdentityMode::User,
            trusted_submitters: Principals::default(),
            workload_controllers: Principals {
                users: DEFAULT_WORKLOAD_CONTROLLERS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                groups: Vec::new(),
            },
            unstamped_fallback: Fallback::Deny,
            administrators: Principals {
                users: Vec::new(),
                groups: vec!["system:masters".to_string()],
            },
            cluster_components: Principals {
                users: DEFAULT_CLUSTER_COMPONENT_USERS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                groups: DEFAULT_CLUSTER_COMPONENT_GROUPS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
            portico: "system:serviceaccount:portico-system:portico".to_string(),
            prefixes: BTreeMap::new(),
            max_prefix_length: 40,
        }
    }
}

/// Why a configuration cannot be used. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is part of the message and not a `source`, so that a chain printed whole
    // (`{:#}`) does not say it twice.
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("{} problem(s) in the configuration:\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and checks YAML text; `origin` names it in errors. Every problem is reported at
    /// once: unknown keys, values of the wrong type and bad values alike.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let root: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                message: e.to_string(),
            })?;
        if root.is_null() {
            return Ok(Config::default());
        }
        let (mut problems, cleaned) = parse::key_problems(&root);
        match serde_yaml::from_value::<Config>(cleaned) {
            Ok(config) => problems.extend(config.problems()),
            // Not expected once the bad keys are gone; reported rather than lost.
            Err(e) => problems.push(e.to_string()),
        }
        if problems.is_empty() {
            // The file exactly as written (nothing was removed).
            serde_yaml::from_value(root).map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                message: e.to_string(),
            })
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Settings that work but weaken a guarantee, each naming its key and what to do instead:
    /// `portico config check` prints them and `portico serve` logs them.
    pub fn cautions(&self) -> Vec<String> {
        let submitters = &self.identity.trusted_submitters;
        let mut out: Vec<String> = submitters
            .users
            .iter()
            .filter(|u| !u.starts_with("system:serviceaccount:"))
            .map(|u| format!("identity.trustedSubmitters.users: {u:?} is not a service account; a plain user name can be minted by an OIDC provider or a client certificate the cluster's CSR signer issues, and whoever holds it may name any user. Name the portal by its service account (system:serviceaccount:<namespace>:<name>)"))
            .collect();
        out.extend(submitters.groups.iter().map(|g| format!("identity.trustedSubmitters.groups: {g:?}: every member may name any user, and groups can be minted like user names (an OIDC groups claim, a certificate's O=); prefer naming service accounts one by one")));
        out
    }

    /// Every problem with the values, each naming its key; empty means usable.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, value) in [
            ("labels.job", &self.labels.job),
            ("labels.pod0", &self.labels.pod0),
        ] {
            if let Err(e) = validate_label_key(value) {
                out.push(format!("{key}: {value:?} is not a valid label key: {e}"));
            }
        }
        if self.labels.job == self.labels.pod0 {
            out.push("labels.job and labels.pod0 must differ".to_string());
        }
        let owner = self.owner_label();
        if let Err(e) = validate_label_key(&owner) {
            out.push(format!(
                "annotationDomain: {:?} does not make a valid label key ({owner:?}): {e}",
                self.annotation_domain
            ));
        }
        if [&self.labels.job, &self.labels.pod0].contains(&&owner) {
            out.push(format!(
                "annotationDomain: the owner label {owner:?} clashes with a routing label"
            ));
        }
        let id = &self.identity;
        if id.portico.is_empty() {
            out.push("identity.portico: must name Portico's own user".to_string());
        }
        if !(8..=46).contains(&id.max_prefix_length) {
            out.push(format!(
                "identity.maxPrefixLength: {} is outside 8..=46 (a prefix must leave room for '-' and a tag of 16 characters)",
                id.max_prefix_length
            ));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (user, prefix) in &id.prefixes {
            if user.is_empty() {
                out.push("identity.prefixes: a user name is empty".to_string());
            }
            if let Err(e) = crate::core::prefix::check_mapped_prefix(prefix, id.max_prefix_length) {
                out.push(format!("identity.prefixes[{user:?}]: {prefix:?} {e}"));
            }
            if let Some(other) = seen.insert(prefix, user) {
                out.push(format!(
                    "identity.prefixes: {other:?} and {user:?} both map to {prefix:?}; prefixes must be unique"
                ));
            }
        }
        for (key, set) in [
            ("identity.trustedSubmitters", &id.trusted_submitters),
            ("identity.workloadControllers", &id.workload_controllers),
            ("identity.administrators", &id.administrators),
        ] {
            if set.users.iter().chain(&set.groups).any(|s| s.is_empty()) {
                out.push(format!("{key}: empty user or group name"));
            }
        }
        let p = &self.provisioner;
        match HostTemplate::parse(&p.ingress_host_template) {
            Err(e) => out.push(format!(
                "provisioner.ingressHostTemplate: {:?} {e}; {TEMPLATE_RULE}",
                p.ingress_host_template
            )),
            Ok(template) => {
                let longest = longest_host_prefix(id.max_prefix_length);
                let room = template.tag_room(longest);
                if room < MIN_ENCODED_HOST_TAG {
                    out.push(format!(
                        "provisioner.ingressHostTemplate: the suffix {:?} after {{user}}-{{tag}} leaves {room} characters for the tag after the longest host prefix ({longest} characters, from identity.maxPrefixLength {}) in a 63-character DNS label; the tag needs {MIN_ENCODED_HOST_TAG}: shorten the suffix or lower identity.maxPrefixLength",
                        template.suffix(),
                        id.max_prefix_length
                    ));
                }
            }
        }
        if !p.domain.is_empty() && !crate::core::label::is_dns_subdomain(&p.domain) {
            out.push(format!(
                "provisioner.domain: {:?} is not a lowercase DNS name",
                p.domain
            ));
        } else if p.domain.len() > MAX_HOST_DOMAIN {
            out.push(format!(
                "provisioner.domain: {:?} has {} characters; with a first label of up to 63 the host would pass 253, so at most {MAX_HOST_DOMAIN}",
                p.domain,
                p.domain.len()
            ));
        }
        if p.field_manager.is_empty() || p.lease_name.is_empty() || p.lease_namespace.is_empty() {
            out.push(
                "provisioner.fieldManager, leaseName and leaseNamespace must not be empty"
                    .to_string(),
            );
        }
        if !(5..=300).contains(&p.lease_seconds) {
            out.push(format!(
                "provisioner.leaseSeconds: {} is outside 5..=300",
                p.lease_seconds
            ));
        }
        if !(1..=86_400).contains(&p.refusal_recheck_seconds) {
            out.push(format!(
                "provisioner.refusalRecheckSeconds: {} is outside 1..=86400",
                p.refusal_recheck_seconds
            ));
        }
        let a = &self.audit;
        if a.trail == TrailTarget::File && a.file.trim().is_empty() {
            out.push("audit.file: must name a file when audit.trail is file".to_string());
        }
        if a.max_file_bytes < 4096 {
            out.push(format!(
                "audit.maxFileBytes: {} is below 4096 (one record may take a few kilobytes)",
                a.max_file_bytes
            ));
        }
        if !(1..=100).contains(&a.keep_files) {
            out.push(format!(
                "audit.keepFiles: {} is outside 1..=100",
                a.keep_files
            ));
        }
        if id.trusted_submitters.users.contains(&id.portico) {
            out.push(
                "identity.trustedSubmitters: Portico's own user need not be listed".to_string(),
            );
        }
        let no_submitters =
            id.trusted_submitters.users.is_empty() && id.trusted_submitters.groups.is_empty();
        out.extend(self.api.problems(no_submitters));
        if self.api.impersonate.as_deref() == Some(id.portico.as_str()) {
            out.push("api.impersonate: the API must not act as Portico's own user (the webhook would stamp its objects as Portico's)".to_string());
        }
        out
    }

    /// The defaults as YAML, every key listed (those unset by default as `null`), for
    /// `portico config defaults`.
    pub fn defaults_yaml() -> Result<String, serde_yaml::Error> {
        let defaults = serde_yaml::to_value(Config::default())?;
        serde_yaml::to_string(&parse::with_every_key(&defaults))
    }

    /// `Ok` when [`Config::problems`] finds none.
    pub fn check(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// `<domain>/ipaddr`: the requested tag.
    pub fn tag_annotation(&self) -> String {
        format!("{}/ipaddr", self.annotation_domain)
    }

    /// `<domain>/user`: the stamped identity.
    pub fn user_annotation(&self) -> String {
        format!("{}/user", self.annotation_domain)
    }

    /// `<domain>/owner`: the owner label, value = prefix.
    pub fn owner_label(&self) -> String {
        format!("{}/owner", self.annotation_domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_empty_file_means_defaults() {
        assert!(Config::default().problems().is_empty());
        assert_eq!(Config::from_yaml("", "t").unwrap(), Config::default());
    }

    #[test]
    fn host_templates_that_would_break_injectivity_or_ownership_are_refused() {
        for bad in [
            "{user}.{domain}",
            "{tag}.{domain}",
            "{user}{tag}.{domain}",
            "{tag}-{user}.{domain}",
            "{tag}.{user}.{domain}",
            "www.{user}-{tag}.{domain}",
            "{user}-{tag}.apps.example.com",
            "{user}-{tag}.{domain}.{tag}",
            "{user}-{tag}_x.{domain}",
        ] {
            let mut c = Config::default();
            c.provisioner.ingress_host_template = bad.into();
            let problems = c.problems().join("\n");
            assert!(
                problems.contains("provisioner.ingressHostTemplate")
                    && problems.contains("{user}-{tag}<suffix>.{domain}"),
                "{bad}: {problems}"
            );
        }
        let mut c = Config::default();
        c.provisioner.ingress_host_template = "{user}-{tag}-web.{domain}".into();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        // The longest prefixes (46) leave 16 characters for "-web" and the tag: 12 is too few.
        c.identity.max_prefix_length = 46;
        let problems = c.problems().join("\n");
        assert!(
            problems.contains("leaves 12 characters") && problems.contains("maxPrefixLength"),
            "{problems}"
        );
    }

    #[test]
    fn a_domain_that_leaves_no_room_for_the_first_label_is_refused() {
        let mut c = Config::default();
        c.provisioner.domain = format!(
            "{}.{}.{}.example",
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60)
        );
        let problems = c.problems().join("\n");
        assert!(
            problems.contains("provisioner.domain") && problems.contains("189"),
            "{problems}"
        );
        c.provisioner.domain = "apps.example.com".into();
        assert!(c.problems().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_yaml("strcit: true\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("strcit"), "{err}");
    }

    #[test]
    fn bad_values_are_each_explained() {
        let yaml = "labels:\n  job: 'bad key!'\n  pod0: 'bad key!'\nidentity:\n  maxPrefixLength: 3\n  prefixes:\n    alice: 'a-b'\n    bob: x\n    carol: x\n";
        let err = Config::from_yaml(yaml, "t").unwrap_err().to_string();
        for needle in [
            "labels.job",
            "labels.pod0",
            "must differ",
            "maxPrefixLength",
            "\"alice\"",
            "both map to",
        ] {
            assert!(err.contains(needle), "missing {needle} in {err}");
        }
    }
}
