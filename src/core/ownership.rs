//! Who owns a routed object, and who may change or delete it.
//!
//! The owner is fixed when the object is created: a stamped pod or workload belongs to the user
//! Portico stamped, an Exposure to its `spec.user`, a Service that selects routing labels to the
//! prefix it selects, an Ingress to the prefix whose host space it claims (or whose Service it
//! sends to). An UPDATE or DELETE by anyone else is refused, except by administrators, Portico
//! itself, trusted submitters (they act for every user they name) and the cluster's own
//! components (nodes, kube-system's controllers), which must be able to run and clean up any pod.
//! The decision reads `oldObject`, the stored object, never the new one: the new one is what the
//! requester wrote.

use super::cluster::{ClusterView, Known};
use super::identity::{is_cluster_component, role_of, Role};
use super::object::{Kind, Map, Object, Operation, Request};
use super::policy::Policy;
use super::route::RouteValue;

/// Whose an object is: the owner's prefix, and the user's name when the object records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub prefix: String,
    pub user: Option<String>,
}

impl Owner {
    fn describe(&self) -> String {
        match &self.user {
            Some(user) => format!("user {user:?} (prefix \"{}\")", self.prefix),
            None => format!("the user with prefix \"{}\"", self.prefix),
        }
    }
}

/// The owner of a stored object of `kind`, or `None` when it is not routed (nobody's in
/// particular: RBAC alone governs it).
pub fn owner_of(
    policy: &Policy,
    kind: &Kind,
    namespace: &str,
    object: &Object,
    view: &dyn ClusterView,
) -> Option<Owner> {
    let from_meta = |meta: &super::object::Meta| {
        let prefix = meta.label(&policy.owner_label).or_else(|| {
            meta.label(policy.job_label())
                .and_then(RouteValue::prefix_of)
        })?;
        Some(Owner {
            prefix: prefix.to_string(),
            user: meta.annotation(&policy.user_annotation).map(str::to_string),
        })
    };
    match kind {
        Kind::Pod => from_meta(&object.meta),
        k if k.is_workload() => object.template.as_ref().and_then(from_meta),
        Kind::Exposure => {
            let user = object.exposure.as_ref()?.user.clone()?;
            let prefix = policy.prefix_for(&user).ok()?;
            Some(Owner {
                prefix: prefix.to_string(),
                user: Some(user),
            })
        }
        Kind::Service => selector_owner(policy, object),
        Kind::Ingress => {
            if let Some(prefix) = object.meta.label(&policy.owner_label) {
                return Some(Owner {
                    prefix: prefix.to_string(),
                    user: None,
                });
            }
            let ingress = object.ingress.as_ref()?;
            ingress.services.iter().find_map(|service| {
                match view.service_owner(namespace, service) {
                    Known::Yes(Some(prefix)) => Some(Owner { prefix, user: None }),
                    _ => None,
                }
            })
        }
        _ => None,
    }
}

/// The prefix a Service's selector routes to: its owner label, else the prefix of the route
/// values it selects.
pub fn selector_owner(policy: &Policy, object: &Object) -> Option<Owner> {
    let prefix = selector_prefix(policy, object.selector.as_ref()?)?;
    Some(Owner {
        prefix: prefix.to_string(),
        user: None,
    })
}

/// [`selector_owner`] of a bare selector: the shell's Service watch keeps only this of each
/// Service, so it must agree with the rule that judges a Service under review.
pub fn selector_prefix<'a>(policy: &Policy, selector: &'a Map) -> Option<&'a str> {
    selector
        .get(&policy.owner_label)
        .map(String::as_str)
        .or_else(|| {
            [policy.job_label(), policy.pod0_label()]
                .iter()
                .find_map(|k| selector.get(*k).and_then(|v| RouteValue::prefix_of(v)))
        })
}

/// Whether the requester may change or delete objects whatever their owner.
pub fn acts_for_everyone(policy: &Policy, request: &Request) -> bool {
    matches!(
        role_of(policy, request),
        Role::Portico | Role::Administrator | Role::Submitter | Role::Controller
    ) || is_cluster_component(policy, request)
}

/// The refusal of an UPDATE or DELETE of another user's object, or `None` when it may go ahead.
pub fn check(
    policy: &Policy,
    request: &Request,
    requester_prefix: Option<&str>,
    view: &dyn ClusterView,
) -> Option<String> {
    let verb = match request.operation {
        Operation::Update => "update",
        Operation::Delete => "delete",
        _ => return None,
    };
    if acts_for_everyone(policy, request) {
        return None;
    }
    let old = request.old_object.as_ref()?;
    let owner = owner_of(policy, &request.kind, &request.namespace, old, view)?;
    if requester_prefix == Some(owner.prefix.as_str()) {
        return None;
    }
    let what = match &request.subresource {
        Some(sub) => format!("the {sub} of {}", request.kind.name()),
        None => request.kind.name().to_string(),
    };
    Some(format!(
        "{what} {}/{} belongs to {}; {} may not {verb} it. Only its owner, administrators (identity.administrators), Portico and the cluster's own controllers may; ask its owner or an administrator",
        request.namespace,
        old.name,
        owner.describe(),
        request.requester.username,
    ))
}
