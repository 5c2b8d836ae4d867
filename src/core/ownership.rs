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
use super::host::{host_prefix, host_space, HostSpace};
use super::identity::{is_cluster_component, role_of, Role};
use super::object::{Kind, Map, Object, Operation, Request};
use super::policy::Policy;
use super::prefix::Prefix;
use super::route::RouteValue;

/// Whose an object is: the owner's prefix (or, for an object that claims hosts, the host prefix
/// of the host space it claims), and the user's name when the object records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub prefix: String,
    pub user: Option<String>,
    /// `prefix` is a host prefix ([`host_prefix`]), not a routing prefix.
    pub by_host: bool,
}

impl Owner {
    fn of(prefix: &str, user: Option<&str>) -> Owner {
        Owner {
            prefix: prefix.to_string(),
            user: user.map(str::to_string),
            by_host: false,
        }
    }

    fn describe(&self) -> String {
        match (&self.user, self.by_host) {
            (Some(user), _) => format!("user {user:?} (prefix \"{}\")", self.prefix),
            (None, false) => format!("the user with prefix \"{}\"", self.prefix),
            (None, true) => format!(
                "the user whose hosts start with \"{}-\" (it claims a host in their space)",
                self.prefix
            ),
        }
    }

    /// Whether the requester with this routing prefix is the owner.
    fn is(&self, requester_prefix: Option<&str>) -> bool {
        match (requester_prefix, self.by_host) {
            (Some(p), false) => p == self.prefix,
            (Some(p), true) => host_prefix(&Prefix::from_encoded(p)) == self.prefix,
            (None, _) => false,
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
        Some(Owner::of(prefix, meta.annotation(&policy.user_annotation)))
    };
    match kind {
        Kind::Pod => from_meta(&object.meta),
        k if k.is_workload() => object.template.as_ref().and_then(from_meta),
        Kind::Exposure => {
            let user = object.exposure.as_ref()?.user.clone()?;
            let prefix = policy.prefix_for(&user).ok()?;
            Some(Owner::of(prefix.as_str(), Some(&user)))
        }
        Kind::Service => selector_owner(policy, object),
        Kind::Ingress => {
            if let Some(prefix) = object.meta.label(&policy.owner_label) {
                return Some(Owner::of(prefix, None));
            }
            let ingress = object.ingress.as_ref()?;
            let by_host = ingress
                .hosts
                .iter()
                .find_map(|host| match host_space(policy, host) {
                    HostSpace::Owned(space) => Some(Owner {
                        prefix: space,
                        user: None,
                        by_host: true,
                    }),
                    _ => None,
                });
            by_host.or_else(|| {
                ingress.services.iter().find_map(|service| {
                    match view.service_owner(namespace, service) {
                        Known::Yes(Some(prefix)) => Some(Owner::of(&prefix, None)),
                        _ => None,
                    }
                })
            })
        }
        _ => None,
    }
}

/// The prefix a Service's selector routes to: its owner label, else the prefix of the route
/// values it selects.
pub fn selector_owner(policy: &Policy, object: &Object) -> Option<Owner> {
    let prefix = selector_prefix(policy, object.selector.as_ref()?)?;
    Some(Owner::of(prefix, None))
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
    // Status is written by whatever runs the object (the kubelet, a load balancer or readiness
    // gate controller of the cluster's choosing): RBAC decides who that is. What status writes
    // could do to routing — a pod's labels — is refused to everyone but Portico elsewhere.
    if request.subresource.as_deref() == Some("status") {
        return None;
    }
    let old = request.old_object.as_ref()?;
    let owner = owner_of(policy, &request.kind, &request.namespace, old, view)?;
    if owner.is(requester_prefix) {
        return None;
    }
    let what = request.kind.name();
    Some(format!(
        "{what} {}/{} belongs to {}; {} may not {verb} it. Only its owner, administrators (identity.administrators), Portico and the cluster's own controllers may; ask its owner or an administrator",
        request.namespace,
        old.name,
        owner.describe(),
        request.requester.username,
    ))
}
