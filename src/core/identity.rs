//! Who a request's objects belong to. The user always comes from the admission request — the
//! requester, a trusted submitter's named user, the stamp Portico put on a workload's template,
//! or the namespace — never from an object an ordinary user wrote.

use crate::config::{Fallback, IdentityMode};

use super::object::{Kind, Object, Request};
use super::policy::Policy;
use super::prefix::{namespace_user, NAMESPACE_USER};

/// Where an identity came from; it decides whether an identity annotation on the object is
/// evidence or forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The requester is the user.
    Requester,
    /// A trusted submitter named the user in the identity annotation.
    Submitter,
    /// A workload controller copied Portico's stamp from a template.
    Stamp,
    /// The namespace is the user (namespace mode, or the unstamped-workload fallback).
    Namespace,
}

/// The user an object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub source: Source,
}

/// Why no identity can be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{requester} is a trusted submitter and must name the user in the {annotation} annotation"
    )]
    SubmitterNamedNoUser {
        requester: String,
        annotation: String,
    },
    #[error("{requester} created this object from a workload that Portico never stamped (no {annotation} annotation on its pod template); it asks for a routing tag, so it is refused. Re-create the workload so Portico stamps it")]
    Unstamped {
        requester: String,
        annotation: String,
    },
    #[error("user {user:?} is in the space Portico reserves for namespace identities (\"{NAMESPACE_USER}<namespace>\"), so it cannot own routes; {why}")]
    ReservedName { user: String, why: &'static str },
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::SubmitterNamedNoUser { .. } => "submitter-named-no-user",
            IdentityError::Unstamped { .. } => "unstamped-workload",
            IdentityError::ReservedName { .. } => "reserved-user",
        }
    }
}

/// The role the requester plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Portico,
    Administrator,
    Submitter,
    Controller,
    User,
}

/// Which role the requester has (the first that applies, most trusted first).
pub fn role_of(policy: &Policy, request: &Request) -> Role {
    let id = &policy.config.identity;
    let (name, groups) = (&request.requester.username, &request.requester.groups);
    if *name == id.portico {
        Role::Portico
    } else if id.workload_controllers.contains(name, groups) {
        Role::Controller
    } else if id.trusted_submitters.contains(name, groups) {
        Role::Submitter
    } else if id.administrators.contains(name, groups) {
        Role::Administrator
    } else {
        Role::User
    }
}

/// Whether the requester is part of the cluster itself (nodes, the scheduler, kube-system's
/// controllers such as the garbage collector and the namespace and endpoint controllers). They
/// may update and delete any user's objects; they never choose whose a route is.
pub fn is_cluster_component(policy: &Policy, request: &Request) -> bool {
    let id = &policy.config.identity;
    let (name, groups) = (&request.requester.username, &request.requester.groups);
    id.cluster_components.contains(name, groups) || id.workload_controllers.contains(name, groups)
}

/// The identity annotation as a trusted submitter wrote it: on the pod itself, or on a workload's
/// pod template, else on the workload's own metadata.
pub fn stamped_user<'a>(policy: &Policy, object: &'a Object) -> Option<&'a str> {
    let key = &policy.user_annotation;
    object
        .template
        .as_ref()
        .and_then(|t| t.annotation(key))
        .or_else(|| object.meta.annotation(key))
}

/// The stamp a workload controller's object carries: Portico's own, on the pod template a
/// workload was stamped through (or, for a pod, on the pod, which its controller copied from such
/// a template). Never the object's own metadata: controllers copy that from places any user can
/// write (a CronJob's `jobTemplate.metadata`, a Deployment's annotations).
fn controller_stamp<'a>(policy: &Policy, kind: &Kind, object: &'a Object) -> Option<&'a str> {
    let key = &policy.user_annotation;
    if kind.is_workload() {
        object.template.as_ref().and_then(|t| t.annotation(key))
    } else {
        object.meta.annotation(key)
    }
}

/// A user name that a requester or submitter may not have: the namespace identities' space.
fn check_not_reserved(user: &str, why: &'static str) -> Result<(), IdentityError> {
    if user.starts_with(NAMESPACE_USER) {
        return Err(IdentityError::ReservedName {
            user: user.to_string(),
            why,
        });
    }
    Ok(())
}

/// The user of `object` in `request`. `Ok(None)` when a controller's object has no stamp and
/// asks for nothing (there is nothing to decide).
pub fn identity_of(
    policy: &Policy,
    request: &Request,
    object: &Object,
    wants_routing: bool,
) -> Result<Option<Identity>, IdentityError> {
    let id = &policy.config.identity;
    if id.mode == IdentityMode::Namespace {
        return Ok(Some(Identity {
            user: namespace_user(&request.namespace),
            source: Source::Namespace,
        }));
    }
    let requester = &request.requester.username;
    match role_of(policy, request) {
        Role::Controller => match controller_stamp(policy, &request.kind, object) {
            Some(user) if !user.is_empty() => Ok(Some(Identity {
                user: user.to_string(),
                source: Source::Stamp,
            })),
            _ if !wants_routing => Ok(None),
            _ => match id.unstamped_fallback {
                Fallback::Deny => Err(IdentityError::Unstamped {
                    requester: requester.clone(),
                    annotation: policy.user_annotation.clone(),
                }),
                Fallback::Namespace => Ok(Some(Identity {
                    user: namespace_user(&request.namespace),
                    source: Source::Namespace,
                })),
            },
        },
        Role::Submitter => match stamped_user(policy, object) {
            Some(user) if !user.is_empty() => {
                check_not_reserved(user, "a trusted submitter must name a user")?;
                Ok(Some(Identity {
                    user: user.to_string(),
                    source: Source::Submitter,
                }))
            }
            _ if !wants_routing => Ok(None),
            _ => Err(IdentityError::SubmitterNamedNoUser {
                requester: requester.clone(),
                annotation: policy.user_annotation.clone(),
            }),
        },
        Role::Portico | Role::Administrator | Role::User => {
            check_not_reserved(
                requester,
                "no authenticator should issue such a name (Kubernetes reserves \"system:\")",
            )?;
            Ok(Some(Identity {
                user: requester.clone(),
                source: Source::Requester,
            }))
        }
    }
}
