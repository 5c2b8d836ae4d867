//! The admission decisions: what to stamp on a pod or a workload's pod template, and whether a
//! Service or Exposure may select what it selects.
//!
//! [`mutate`] and [`validate`] are plain functions of a [`Request`] and a [`Policy`]. They return
//! edits (labels and annotations to set or remove, at the object or its pod template), never JSON:
//! turning edits into a JSON Patch is the admission layer's job.

use std::collections::BTreeMap;

use super::claims;
use super::cluster::ClusterView;
use super::host::may_claim;
use super::identity::{
    identity_of, is_cluster_component, role_of, stamped_user, Identity, Role, Source,
};
use super::object::{Kind, Map, Meta, Object, Operation, Request};
use super::ownership;
use super::policy::Policy;
use super::prefix::{namespace_user, Prefix};
use super::route::{route_value, RouteValue};

/// The indexed-Job annotation and label naming a pod's completion index.
pub const JOB_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The StatefulSet label naming a pod's ordinal.
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// Where an edit applies: the object's own metadata, its pod template's metadata, or a CronJob's
/// `spec.jobTemplate.metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Object,
    Template,
    /// A CronJob's `spec.jobTemplate.metadata`, which the cronjob controller copies onto each Job.
    JobTemplate,
}

/// One change to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    SetLabel {
        place: Place,
        key: String,
        value: String,
    },
    RemoveLabel {
        place: Place,
        key: String,
    },
    SetAnnotation {
        place: Place,
        key: String,
        value: String,
    },
    RemoveAnnotation {
        place: Place,
        key: String,
    },
    /// An Exposure's `spec.user`.
    SetExposureUser(String),
}

/// Allowed (with edits and warnings) or denied (with a reason code and a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        edits: Vec<Edit>,
        warnings: Vec<String>,
    },
    Deny {
        code: &'static str,
        message: String,
    },
}

/// A decision and what it was about, for the reply, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub user: Option<String>,
    pub tag: Option<String>,
    pub route: Option<String>,
    pub verdict: Verdict,
}

impl Decision {
    fn allow() -> Self {
        Decision {
            user: None,
            tag: None,
            route: None,
            verdict: Verdict::Allow {
                edits: Vec::new(),
                warnings: Vec::new(),
            },
        }
    }

    fn deny(code: &'static str, message: impl Into<String>) -> Self {
        Decision {
            user: None,
            tag: None,
            route: None,
            verdict: Verdict::Deny {
                code,
                message: message.into(),
            },
        }
    }

    fn about(mut self, user: Option<&str>, tag: Option<&str>) -> Self {
        self.user = user.map(str::to_string);
        self.tag = tag.map(str::to_string);
        self
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allow { .. })
    }

    /// The edits of an allowed decision; empty when denied.
    pub fn edits(&self) -> &[Edit] {
        match &self.verdict {
            Verdict::Allow { edits, .. } => edits,
            Verdict::Deny { .. } => &[],
        }
    }
}

/// The routing-relevant state of an object, compared across UPDATE.
#[derive(Debug, PartialEq, Eq)]
struct RoutingState<'a> {
    job: Option<&'a str>,
    pod0: Option<&'a str>,
    owner: Option<&'a str>,
    user: Option<&'a str>,
    tag: Option<&'a str>,
    object_tag: Option<&'a str>,
    job_template_tag: Option<&'a str>,
}

fn routing_state<'a>(policy: &Policy, object: &'a Object, place: Place) -> RoutingState<'a> {
    let meta = place_meta(object, place);
    RoutingState {
        job: meta.and_then(|m| m.label(policy.job_label())),
        pod0: meta.and_then(|m| m.label(policy.pod0_label())),
        owner: meta.and_then(|m| m.label(&policy.owner_label)),
        user: meta.and_then(|m| m.annotation(&policy.user_annotation)),
        tag: meta.and_then(|m| m.annotation(&policy.tag_annotation)),
        object_tag: match place {
            Place::Template => object.meta.annotation(&policy.tag_annotation),
            Place::Object | Place::JobTemplate => None,
        },
        job_template_tag: match place {
            Place::Template => object
                .job_template
                .as_ref()
                .and_then(|m| m.annotation(&policy.tag_annotation)),
            Place::Object | Place::JobTemplate => None,
        },
    }
}

fn place_meta(object: &Object, place: Place) -> Option<&Meta> {
    match place {
        Place::Object => Some(&object.meta),
        Place::Template => object.template.as_ref(),
        Place::JobTemplate => object.job_template.as_ref(),
    }
}

/// The metadata of a workload that a built-in controller copies onto the objects it makes: the
/// workload's own (the deployment controller copies a Deployment's annotations onto its
/// ReplicaSets) and a CronJob's `jobTemplate.metadata` (copied onto each Job). Identity never comes
/// from there, and Portico's identity keys there are either what Portico stamps or removed, so
/// that nothing downstream can mistake them for a stamp.
fn copied_places(kind: &Kind) -> &'static [Place] {
    match kind {
        Kind::CronJob => &[Place::Object, Place::JobTemplate],
        k if k.is_workload() => &[Place::Object],
        _ => &[],
    }
}

fn describe_place(kind: &Kind, place: Place) -> String {
    match (kind, place) {
        (Kind::CronJob, Place::JobTemplate) => {
            "spec.jobTemplate.metadata, which the cronjob controller copies onto every Job".into()
        }
        (Kind::Deployment, Place::Object) => {
            "the Deployment's metadata, whose annotations the deployment controller copies onto its ReplicaSets".into()
        }
        (k, Place::Object) => format!("the {}'s own metadata", k.name()),
        (_, _) => "the pod template".into(),
    }
}

/// Edits and the warnings that explain them.
type Cleared = (Vec<Edit>, Vec<String>);

/// The edits that clear Portico's identity keys from the copied metadata of a workload, given the
/// user and prefix it is stamped for (`None` when it asks for no tag). A denial in strict mode.
fn clear_copied(
    policy: &Policy,
    kind: &Kind,
    object: &Object,
    user: Option<&str>,
    prefix: Option<&str>,
) -> Result<Cleared, (&'static str, String)> {
    let (mut edits, mut warnings) = (Vec::new(), Vec::new());
    for found in copied_identity_keys(policy, kind, object, user, prefix) {
        let CopiedKey {
            place,
            label,
            key,
            value,
        } = found;
        let what = if label { "label" } else { "annotation" };
        let why = format!(
            "{what} {key}={value:?} in {} is not yours to set: identity comes only from the stamp Portico writes on the pod template",
            describe_place(kind, place)
        );
        if policy.config.strict {
            let code = if label {
                "forged-label"
            } else {
                "forged-identity"
            };
            return Err((code, format!("{why}; remove it")));
        }
        warnings.push(format!("portico: removed {why}"));
        let key = key.to_string();
        edits.push(if label {
            Edit::RemoveLabel { place, key }
        } else {
            Edit::RemoveAnnotation { place, key }
        });
    }
    Ok((edits, warnings))
}

/// One of Portico's identity keys in metadata a controller copies that is not the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedKey<'a> {
    pub place: Place,
    pub label: bool,
    pub key: &'a str,
    pub value: &'a str,
}

/// The identity keys in a workload's copied metadata (its own, a CronJob's
/// `jobTemplate.metadata`) that differ from the stamp: a user annotation other than `user`, an
/// owner label other than `prefix`, any pod0 label. The one rule the webhook clears by and
/// `portico audit` reports by.
pub fn copied_identity_keys<'a>(
    policy: &'a Policy,
    kind: &Kind,
    object: &'a Object,
    user: Option<&str>,
    prefix: Option<&str>,
) -> Vec<CopiedKey<'a>> {
    let mut out = Vec::new();
    for &place in copied_places(kind) {
        let Some(meta) = place_meta(object, place) else {
            continue;
        };
        let found = [
            (
                false,
                policy.user_annotation.as_str(),
                meta.annotation(&policy.user_annotation),
                user,
            ),
            (
                true,
                policy.owner_label.as_str(),
                meta.label(&policy.owner_label),
                prefix,
            ),
            (
                true,
                policy.pod0_label(),
                meta.label(policy.pod0_label()),
                None,
            ),
        ];
        for (label, key, current, allowed) in found {
            match current {
                Some(value) if Some(value) != allowed => out.push(CopiedKey {
                    place,
                    label,
                    key,
                    value,
                }),
                _ => {}
            }
        }
    }
    out
}

/// A pod's index in its Indexed Job or StatefulSet, from the annotation or labels their
/// controllers set.
pub fn pod_index<'a>(labels: Option<&'a Map>, annotations: Option<&'a Map>) -> Option<&'a str> {
    let get = |m: Option<&'a Map>, key: &str| m?.get(key).map(String::as_str);
    get(annotations, JOB_INDEX)
        .or_else(|| get(labels, JOB_INDEX))
        .or_else(|| get(labels, POD_INDEX))
}

/// Whether a pod is the first of its job: index 0 of an Indexed Job or a StatefulSet, or a pod
/// that no controller owns.
pub fn is_first_pod(meta: &Meta) -> bool {
    match pod_index(meta.labels.as_ref(), meta.annotations.as_ref()) {
        Some(i) => i == "0",
        None => meta.controller_kind.is_none(),
    }
}

/// The mutating decision: stamp routing labels and identity on pods and pod templates.
pub fn mutate(policy: &Policy, request: &Request) -> Decision {
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return Decision::allow();
    }
    let place = match &request.kind {
        Kind::Pod => Place::Object,
        k if k.is_workload() => Place::Template,
        Kind::Exposure => return mutate_exposure(policy, request),
        _ => return Decision::allow(),
    };
    let Some(object) = &request.object else {
        return Decision::deny(
            "no-object",
            "the admission request carries no object to review",
        );
    };
    let role = role_of(policy, request);
    if role == Role::Portico {
        return Decision::allow();
    }
    if request.operation == Operation::Update {
        if let Some(old) = &request.old_object {
            let unchanged =
                routing_state(policy, old, place) == routing_state(policy, object, place);
            let copied_clean = || {
                let template = object.template.as_ref();
                let user = template.and_then(|t| t.annotation(&policy.user_annotation));
                let prefix = template.and_then(|t| t.label(&policy.owner_label));
                matches!(clear_copied(policy, &request.kind, object, user, prefix), Ok((e, _)) if e.is_empty())
            };
            if unchanged && (place == Place::Object || copied_clean()) {
                return Decision::allow();
            }
            if place == Place::Object {
                if let Some(denial) = routing_change(policy, request, place) {
                    return denial;
                }
            }
        }
    }
    stamp(policy, request, object, place)
}

/// The refusal of an UPDATE (of a pod, or its `status`) that changes its routing labels or
/// Portico's annotations; `None` when they are unchanged. Only Portico may change them (the
/// caller decides that).
fn routing_change(policy: &Policy, request: &Request, place: Place) -> Option<Decision> {
    if request.operation != Operation::Update {
        return None;
    }
    let (old, new) = (request.old_object.as_ref()?, request.object.as_ref()?);
    if routing_state(policy, old, place) == routing_state(policy, new, place) {
        return None;
    }
    let through = match &request.subresource {
        Some(sub) => format!(" (through the {sub} subresource)"),
        None => String::new(),
    };
    Some(Decision::deny(
        "routing-change",
        format!(
            "the routing labels ({}, {}, {}) and the {} and {} annotations of a pod are set by Portico at creation and cannot be changed afterwards (requested by {}{through}); delete the pod and create it with the tag you want",
            policy.job_label(),
            policy.pod0_label(),
            policy.owner_label,
            policy.tag_annotation,
            policy.user_annotation,
            request.requester.username
        ),
    ))
}

/// What one key should be, compared with what it is.
struct Want<'a> {
    label: bool,
    key: &'a str,
    want: Option<String>,
    /// A present value that differs is a forgery (not merely a request to be stamped).
    forged_if_different: bool,
    /// A present value equal to this is a bare-tag request, not a forgery.
    benign: Option<&'a str>,
}

fn stamp(policy: &Policy, request: &Request, object: &Object, place: Place) -> Decision {
    let empty = Meta::default();
    let meta = place_meta(object, place).unwrap_or(&empty);
    let tag = match place {
        Place::Template => object.meta.annotation(&policy.tag_annotation).or_else(|| {
            object
                .job_template
                .as_ref()
                .and_then(|m| m.annotation(&policy.tag_annotation))
        }),
        Place::Object | Place::JobTemplate => None,
    }
    .or_else(|| meta.annotation(&policy.tag_annotation))
    .or_else(|| meta.label(policy.job_label()));

    if let (Place::Template, true, Some(tag)) = (place, object.template_missing, tag) {
        let path = request.kind.pod_template_path().unwrap_or(&[]).join(".");
        return Decision::deny(
            "no-template",
            format!("this {} asks for ipaddr tag {tag:?} but has no pod template ({path}) for Portico to stamp; add the template", request.kind.name()),
        )
        .about(None, Some(tag));
    }
    let identity = match identity_of(policy, request, object, tag.is_some()) {
        Ok(identity) => identity,
        Err(e) => return Decision::deny(e.code(), e.to_string()).about(None, tag),
    };
    let user = identity.as_ref().map(|i| i.user.as_str());

    let mut wants: Vec<Want> = Vec::with_capacity(5);
    let mut route = None;
    if let (Some(tag), Some(identity)) = (tag, &identity) {
        let prefix = match policy.prefix_for(&identity.user) {
            Ok(p) => p,
            Err(e) => {
                return Decision::deny(
                    "no-prefix",
                    format!(
                        "user {:?} cannot be given a routing prefix: {e}",
                        identity.user
                    ),
                )
                .about(user, Some(tag))
            }
        };
        let value = match route_value(&identity.user, &prefix, tag) {
            Ok(v) => v,
            Err(e) => return Decision::deny(e.code(), e.to_string()).about(user, Some(tag)),
        };
        let first = place == Place::Object && is_first_pod(meta);
        wants.extend([
            Want {
                label: true,
                key: policy.job_label(),
                want: Some(value.to_string()),
                forged_if_different: true,
                benign: Some(tag),
            },
            Want {
                label: true,
                key: policy.pod0_label(),
                want: first.then(|| value.to_string()),
                forged_if_different: true,
                benign: None,
            },
            Want {
                label: true,
                key: &policy.owner_label,
                want: Some(prefix.to_string()),
                forged_if_different: true,
                benign: None,
            },
            Want {
                label: false,
                key: &policy.user_annotation,
                want: Some(identity.user.clone()),
                forged_if_different: identity_is_ours(identity),
                benign: None,
            },
            Want {
                label: false,
                key: &policy.tag_annotation,
                want: Some(tag.to_string()),
                forged_if_different: false,
                benign: None,
            },
        ]);
        route = Some(value);
    } else {
        // No tag: nothing may carry Portico's marks except a true identity annotation.
        wants.extend([
            Want {
                label: true,
                key: policy.pod0_label(),
                want: None,
                forged_if_different: true,
                benign: None,
            },
            Want {
                label: true,
                key: &policy.owner_label,
                want: None,
                forged_if_different: true,
                benign: None,
            },
        ]);
        if meta.annotation(&policy.user_annotation).is_some() {
            if let Some(identity) = identity.as_ref().filter(|i| identity_is_ours(i)) {
                wants.push(Want {
                    label: false,
                    key: &policy.user_annotation,
                    want: Some(identity.user.clone()),
                    forged_if_different: true,
                    benign: None,
                });
            }
        }
    }

    let mut edits = Vec::new();
    let mut warnings = Vec::new();
    for w in &wants {
        let current = if w.label {
            meta.label(w.key)
        } else {
            meta.annotation(w.key)
        };
        if current == w.want.as_deref() {
            continue;
        }
        let what = if w.label { "label" } else { "annotation" };
        if let Some(current) = current {
            let forged = w.forged_if_different && Some(current) != w.benign;
            if forged {
                let fix = match &w.want {
                    Some(v) => format!("Portico sets it to {v:?}"),
                    None => "only Portico may set it".to_string(),
                };
                if policy.config.strict {
                    let code = if w.label {
                        "forged-label"
                    } else {
                        "forged-identity"
                    };
                    return Decision::deny(
                        code,
                        format!("{what} {}={current:?} is not yours to set: {fix}; remove it and ask for a tag with the {} annotation", w.key, policy.tag_annotation),
                    )
                    .about(user, tag);
                }
                warnings.push(format!(
                    "portico: replaced {what} {}={current:?}: {fix}",
                    w.key
                ));
            }
        }
        edits.push(match (&w.want, w.label) {
            (Some(value), true) => Edit::SetLabel {
                place,
                key: w.key.to_string(),
                value: value.clone(),
            },
            (None, true) => Edit::RemoveLabel {
                place,
                key: w.key.to_string(),
            },
            (Some(value), false) => Edit::SetAnnotation {
                place,
                key: w.key.to_string(),
                value: value.clone(),
            },
            (None, false) => Edit::RemoveAnnotation {
                place,
                key: w.key.to_string(),
            },
        });
    }
    let stamped = !edits.is_empty();
    if place == Place::Template {
        let prefix = route
            .as_ref()
            .and_then(|r| RouteValue::prefix_of(r.as_str()));
        match clear_copied(policy, &request.kind, object, user, prefix) {
            Ok((cleared, cleared_warnings)) => {
                edits.extend(cleared);
                warnings.extend(cleared_warnings);
            }
            Err((code, message)) => return Decision::deny(code, message).about(user, tag),
        }
    }
    if let (Some(route), true) = (&route, stamped) {
        let whom = match place {
            Place::Object => "pod",
            Place::Template | Place::JobTemplate => "pods of this workload",
        };
        let mut msg = format!(
            "portico: {whom} labelled {}={route} for user {:?}",
            policy.job_label(),
            user.unwrap_or_default()
        );
        if edits
            .iter()
            .any(|e| matches!(e, Edit::SetLabel { key, .. } if key == policy.pod0_label()))
        {
            msg.push_str(&format!(" (first pod: also {})", policy.pod0_label()));
        }
        warnings.insert(0, msg);
    }
    Decision {
        user: user.map(str::to_string),
        tag: tag.map(str::to_string),
        route: route.map(|r| r.to_string()),
        verdict: Verdict::Allow { edits, warnings },
    }
}

/// An identity annotation that differs from this identity was forged, unless the annotation is
/// where this identity came from.
fn identity_is_ours(identity: &Identity) -> bool {
    matches!(identity.source, Source::Requester | Source::Namespace)
}

/// Exposures: stamp `spec.user` with the creator; only administrators may name someone else.
fn mutate_exposure(policy: &Policy, request: &Request) -> Decision {
    let Some(object) = &request.object else {
        return Decision::allow();
    };
    let role = role_of(policy, request);
    let named = object.exposure.as_ref().and_then(|e| e.user.as_deref());
    if matches!(role, Role::Portico | Role::Administrator) && named.is_some() {
        return Decision::allow();
    }
    let user = match identity_of(policy, request, object, true) {
        Ok(Some(identity)) => identity.user,
        Ok(None) => return Decision::allow(),
        Err(e) => return Decision::deny(e.code(), e.to_string()),
    };
    match named {
        Some(n) if n == user => Decision::allow().about(Some(&user), None),
        Some(n) => Decision::deny(
            "foreign-user",
            format!("{} may not create an Exposure for user {n:?}; leave spec.user empty and Portico fills in {user:?}", request.requester.username),
        )
        .about(Some(&user), None),
        None => Decision {
            user: Some(user.clone()),
            tag: None,
            route: None,
            verdict: Verdict::Allow {
                edits: vec![Edit::SetExposureUser(user.clone())],
                warnings: vec![format!("portico: exposure stamped with user {user:?}")],
            },
        },
    }
}

/// The validating decision: Services and Exposures may select only their own user's route values.
pub fn validate(policy: &Policy, request: &Request, view: &dyn ClusterView) -> Decision {
    if request.operation == Operation::Connect {
        return Decision::allow();
    }
    let role = role_of(policy, request);
    let privileged = matches!(role, Role::Portico | Role::Administrator);
    let user = match policy.config.identity.mode {
        crate::config::IdentityMode::Namespace => namespace_user(&request.namespace),
        crate::config::IdentityMode::User => match (role, &request.object) {
            (Role::Submitter, Some(object)) => match stamped_user(policy, object) {
                Some(u) => u.to_string(),
                None => request.requester.username.clone(),
            },
            _ => request.requester.username.clone(),
        },
    };
    let requester_prefix = policy.prefix_for(&user).ok();
    let requester_prefix = requester_prefix.as_ref().map(|p| p.as_str());
    if let Some(message) = ownership::check(policy, request, requester_prefix, view) {
        return Decision::deny("not-owner", message).about(Some(&user), None);
    }
    if request.operation == Operation::Delete {
        return Decision::allow();
    }
    if request.kind == Kind::Pod && role != Role::Portico {
        if let Some(denial) = routing_change(policy, request, Place::Object) {
            return denial;
        }
    }
    let Some(object) = &request.object else {
        return Decision::allow();
    };
    let refused =
        |(code, message): claims::Refusal| Decision::deny(code, message).about(Some(&user), None);
    let trusted_with_pointers = privileged || is_cluster_component(policy, request);
    match &request.kind {
        Kind::Service => {
            if !privileged {
                if let Err(r) =
                    claims::external_name(&request.namespace, object, requester_prefix, view)
                {
                    return refused(r);
                }
            }
            let Some(selector) = &object.selector else {
                return Decision::allow();
            };
            if privileged {
                return Decision::allow();
            }
            check_selector(policy, &user, selector, "Service")
        }
        Kind::EndpointSlice | Kind::Endpoints if !trusted_with_pointers => {
            match claims::endpoints(
                &request.kind,
                &request.namespace,
                object,
                requester_prefix,
                view,
            ) {
                Ok(()) => Decision::allow().about(Some(&user), None),
                Err(r) => refused(r),
            }
        }
        Kind::Ingress if !privileged => {
            // A prefix that cannot be had owns no host space: every owned space refuses it.
            let claimant = Prefix::from_encoded(requester_prefix.unwrap_or_default());
            let hosts = object.ingress.iter().flat_map(|i| i.hosts.iter());
            for host in hosts {
                if let Err(e) = may_claim(policy, &claimant, host) {
                    return Decision::deny(
                        e.code(),
                        format!("Ingress {}/{}: {e}", request.namespace, object.name),
                    )
                    .about(Some(&user), None);
                }
            }
            if let Err(r) =
                claims::ingress_backends(&request.namespace, object, requester_prefix, view)
            {
                return refused(r);
            }
            Decision::allow().about(Some(&user), None)
        }
        Kind::Exposure => {
            let Some(exposure) = &object.exposure else {
                return Decision::allow();
            };
            let owner = exposure.user.clone().unwrap_or_else(|| user.clone());
            if !privileged && owner != user {
                return Decision::deny(
                    "foreign-user",
                    format!(
                        "{} may only expose their own tags, not those of user {owner:?}",
                        request.requester.username
                    ),
                );
            }
            let Some(tag) = exposure.tag.as_deref() else {
                return Decision::deny("tag-empty", "an Exposure needs spec.tag");
            };
            // Its Service takes its name: a name that cannot be a Service's would leave the
            // Exposure unready for ever. Checked at creation only (a name never changes, and an
            // older Exposure must stay deletable and editable).
            if request.operation == Operation::Create {
                if let Err(e) = exposure_name_ok(&object.name) {
                    return Decision::deny(
                        "exposure-name",
                        format!("Exposure {}/{}: {e}", request.namespace, object.name),
                    )
                    .about(Some(&owner), Some(tag));
                }
            }
            let prefix = match policy.prefix_for(&owner) {
                Ok(p) => p,
                Err(e) => {
                    return Decision::deny(
                        "no-prefix",
                        format!("user {owner:?} cannot be given a routing prefix: {e}"),
                    )
                }
            };
            // An empty host means the default one, which is always in the owner's space.
            if let Some(host) = exposure.host.as_deref().filter(|h| !h.is_empty()) {
                if let (false, Err(e)) = (privileged, may_claim(policy, &prefix, host)) {
                    return Decision::deny(
                        e.code(),
                        format!("Exposure {}/{}: {e}", request.namespace, object.name),
                    )
                    .about(Some(&owner), Some(tag));
                }
            }
            match route_value(&owner, &prefix, tag) {
                Ok(route) => Decision {
                    user: Some(owner),
                    tag: Some(tag.to_string()),
                    route: Some(route.to_string()),
                    verdict: Verdict::Allow {
                        edits: Vec::new(),
                        warnings: Vec::new(),
                    },
                },
                Err(e) => Decision::deny(e.code(), e.to_string()).about(Some(&owner), Some(tag)),
            }
        }
        _ => Decision::allow(),
    }
}

/// Whether an Exposure's name (or its `generateName`, which ends in `-` and gets five letters and
/// digits after it, the whole kept to 63 characters) can name its Service.
fn exposure_name_ok(name: &str) -> Result<(), crate::core::desired::PlanError> {
    let name = match name.strip_suffix('-') {
        Some(stem) => format!("{}-x0000", stem.chars().take(57).collect::<String>()),
        None => name.to_string(),
    };
    crate::core::desired::check_service_name(
        &name,
        "Exposure's name",
        crate::core::desired::EXPOSURE_NAME_FIX,
    )
}

/// A selector may name routing labels only with the user's own prefix.
fn check_selector(
    policy: &Policy,
    user: &str,
    selector: &BTreeMap<String, String>,
    what: &str,
) -> Decision {
    let routing = [policy.job_label(), policy.pod0_label()];
    let owner_value = selector.get(&policy.owner_label);
    let selected: Vec<(&String, &String)> = selector
        .iter()
        .filter(|(k, _)| routing.contains(&k.as_str()))
        .collect();
    if selected.is_empty() && owner_value.is_none() {
        return Decision::allow();
    }
    let prefix = match policy.prefix_for(user) {
        Ok(p) => p,
        Err(e) => {
            return Decision::deny(
                "no-prefix",
                format!("user {user:?} cannot be given a routing prefix: {e}"),
            )
        }
    };
    for (key, value) in &selected {
        if RouteValue::prefix_of(value) != Some(prefix.as_str()) {
            return Decision::deny(
                "foreign-route",
                format!(
                    "{what} selects {key}={value:?}, which is not a route value of user {user:?}: {user:?} may only select values starting with \"{prefix}-\""
                ),
            )
            .about(Some(user), None);
        }
    }
    if let Some(owner) = owner_value {
        if owner != prefix.as_str() {
            return Decision::deny(
                "foreign-route",
                format!(
                    "{what} selects {}={owner:?}, but user {user:?} has prefix \"{prefix}\"",
                    policy.owner_label
                ),
            )
            .about(Some(user), None);
        }
    }
    Decision::allow().about(Some(user), None)
}
