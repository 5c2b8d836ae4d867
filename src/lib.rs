//! Portico: an admission webhook that stamps every pod of a job with user-prefixed routing labels,
//! and a provisioner that keeps Services and Ingress pointed at those pods.
//!
//! - [`core`] — pure decisions: identity, prefix encoding, tags, route values, mutation and
//!   validation of objects. No IO, no clock, no async.
//! - [`admission`] — AdmissionReview in, AdmissionReview out: decoding, JSON Patch, the reply.
//! - [`provisioner`] — the controller: watches, desired state, one writer, the Lease.
//! - [`server`] — the shell: TLS listener, certificate reload, ops endpoints and metrics.
//! - [`cli`] — the `portico` command tree: `serve`, `certs`, `review`, `mutate`, `config check`.
//! - [`audit`] — `portico audit`'s pure checks (objects in, findings out) and report formats.
//! - [`api`] — the `Exposure` custom resource and the per-job exposure annotations.
//! - [`config`] — the one configuration type.
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod admission;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod core;
pub mod provisioner;
pub mod server;
pub mod service_api;
