//! The pure core: identity, prefix encoding, tags, route values, and the admission decisions.
//! No IO, no clock, no async: every function here is a plain function of plain data, shared by
//! the webhook, the provisioner and the offline commands.

pub mod claims;
pub mod cluster;
pub mod decision;
pub mod desired;
pub mod host;
pub mod identity;
pub mod label;
pub mod object;
pub mod ownership;
pub mod policy;
pub mod prefix;
pub mod route;

pub use decision::{mutate, validate, Decision, Edit, Place};
pub use object::{Kind, Meta, Object, Operation, Request, Requester};
pub use policy::Policy;
