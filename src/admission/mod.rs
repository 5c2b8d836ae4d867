//! AdmissionReview in, AdmissionReview out.
//!
//! Owns the wire format (decoding the parts of a review the decision needs, encoding the reply
//! with a base64 JSON Patch and warnings) and turns [`crate::core`] decisions into answers. It does
//! no IO: the server and the offline `review` command both call [`Webhook::answer`].

use std::sync::Arc;

use base64::Engine as _;

use crate::config::{AuditMode, Config};
use crate::core::cluster::{ClusterView, NoView};
use crate::core::{self, decision::Verdict, Policy};
use review::{to_request, ResponseOut, ReviewIn, ReviewOut, StatusOut};

pub mod patch;
pub mod review;
pub mod snapshot;

/// Which endpoint a review arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /mutate`: stamp routing labels and identity.
    Mutate,
    /// `POST /validate`: police Services and Exposures that select routing labels.
    Validate,
}

/// What one review decided, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub uid: String,
    pub operation: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub tag: Option<String>,
    pub route: Option<String>,
    pub allowed: bool,
    pub mutated: bool,
    pub dry_run: bool,
    pub patch_bytes: usize,
    /// A short machine-readable reason (`forged-label`, `tag-too-long`, …) when denied.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Warn mode (`audit.mode: warn`): the decision was a denial, answered as allowed with a
    /// warning. `reason` and `message` still say why.
    pub would_deny: bool,
    /// The JSON Patch returned, as JSON text (for the audit trail).
    pub patch: Option<String>,
}

impl Summary {
    /// What came of the review, as metrics and the audit trail name it: `would-deny` (warn
    /// mode), `denied`, `mutated` or `allowed`.
    pub fn outcome(&self) -> &'static str {
        if self.would_deny {
            "would-deny"
        } else if !self.allowed {
            "denied"
        } else if self.mutated {
            "mutated"
        } else {
            "allowed"
        }
    }
}

/// The answer to a review: an HTTP 200 body, plus what was decided.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Vec<u8>,
    pub summary: Summary,
}

/// A body that is not an AdmissionReview at all: answered with HTTP 400 and this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadReview {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAReview(String),
}

/// The webhook's decision engine: configuration in, answers out.
#[derive(Clone)]
pub struct Webhook {
    policy: Arc<Policy>,
    /// What the watches know of routed pods and Services; [`NoView`] until one is given.
    view: Arc<dyn ClusterView + Send + Sync>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn new(config: Config) -> Self {
        Self {
            policy: Arc::new(Policy::new(config)),
            view: Arc::new(NoView),
        }
    }

    /// The same webhook reading the cluster through `view` (watch-fed in the server, a snapshot
    /// offline).
    pub fn with_view(mut self, view: Arc<dyn ClusterView + Send + Sync>) -> Self {
        self.view = view;
        self
    }

    pub fn config(&self) -> &Config {
        &self.policy.config
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Answers one review body. `Err` only when the body is not a review at all; a review that
    /// cannot be decided is answered `allowed: false` with the reason.
    pub fn answer(&self, endpoint: Endpoint, body: &[u8]) -> Result<Answer, BadReview> {
        // JSON is UTF-8; checked once for the whole body, since decoding skips what no decision reads.
        let body = std::str::from_utf8(body)
            .map_err(|e| BadReview::NotJson(format!("it is not UTF-8 text: {e}")))?;
        let review = ReviewIn::parse(body).map_err(|e| classify(body, e))?;
        let api_version = match review.api_version.as_deref() {
            Some(v @ ("admission.k8s.io/v1" | "admission.k8s.io/v1beta1")) => v,
            Some(other) => return Err(BadReview::NotAReview(format!("apiVersion is {other:?}"))),
            None => return Err(BadReview::NotAReview("apiVersion is missing".into())),
        };
        if review.kind.as_deref() != Some("AdmissionReview") {
            return Err(BadReview::NotAReview(format!(
                "kind is {:?}",
                review.kind.unwrap_or_default()
            )));
        }
        let Some(input) = review.request else {
            return Err(BadReview::NotAReview("it has no request".into()));
        };
        let mut summary = Summary {
            uid: input.uid.clone(),
            operation: input.operation.clone(),
            kind: input
                .kind
                .as_ref()
                .map(|k| k.kind.clone())
                .unwrap_or_default(),
            namespace: input.namespace.clone().unwrap_or_default(),
            name: input.name.clone().unwrap_or_default(),
            user: input.user_info.username.clone(),
            dry_run: input.dry_run.unwrap_or(false),
            ..Summary::default()
        };
        let request = match to_request(input) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("portico cannot decide this request: {e}");
                let outcome = self.warn_only(&mut summary, Err(("undecidable", message)));
                return Ok(reply(api_version, summary, outcome));
            }
        };
        if summary.name.is_empty() {
            summary.name = request
                .object
                .as_ref()
                .map(|o| o.name.clone())
                .unwrap_or_default();
        }
        let decision = match endpoint {
            Endpoint::Mutate => core::mutate(&self.policy, &request),
            Endpoint::Validate => core::validate(&self.policy, &request, self.view.as_ref()),
        };
        summary.tag = decision.tag.clone();
        summary.route = decision.route.clone();
        let outcome = match decision.verdict {
            Verdict::Allow { edits, warnings } => {
                let patch = if edits.is_empty() {
                    None
                } else {
                    // Borrowed, not cloned: the patch only reads which maps exist.
                    let none = core::Object::default();
                    let object = request.object.as_ref().unwrap_or(&none);
                    Some(patch::build(&request.kind, object, &edits))
                };
                Ok((patch, warnings))
            }
            Verdict::Deny { code, message } => Err((code, message)),
        };
        let outcome = self.warn_only(&mut summary, outcome);
        Ok(reply(api_version, summary, outcome))
    }

    /// In warn mode (`audit.mode: warn`) a denial becomes an allowed answer without a patch,
    /// carrying the denial as an admission warning; the summary keeps the reason and message and
    /// says `would_deny`. The decision itself is the same in both modes.
    fn warn_only(&self, summary: &mut Summary, outcome: Outcome) -> Outcome {
        match outcome {
            Err((code, message)) if self.config().audit.mode == AuditMode::Warn => {
                summary.would_deny = true;
                summary.reason = Some(code.to_string());
                summary.message = Some(message.clone());
                Ok((None, vec![format!("{WARN_PREFIX}{message}")]))
            }
            other => other,
        }
    }
}

/// How a warn-mode warning starts; what follows is the denial message.
pub const WARN_PREFIX: &str = "portico (warn mode): would deny: ";

/// What a decision came to: an optional patch with warnings, or a denial code and message.
type Outcome = Result<(Option<json_patch::Patch>, Vec<String>), (&'static str, String)>;

/// Encodes the reply; the request's `uid` is always carried back.
fn reply(api_version: &str, mut summary: Summary, outcome: Outcome) -> Answer {
    let mut response = ResponseOut {
        uid: summary.uid.clone(),
        allowed: outcome.is_ok(),
        patch_type: None,
        patch: None,
        status: None,
        warnings: Vec::new(),
        audit_annotations: Default::default(),
    };
    match outcome {
        Ok((patch, warnings)) => {
            if let Some(patch) = patch.filter(|p| !p.0.is_empty()) {
                let json = serde_json::to_vec(&patch).unwrap_or_default();
                summary.patch_bytes = json.len();
                summary.mutated = true;
                response.patch_type = Some("JSONPatch");
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(&json));
                summary.patch = String::from_utf8(json).ok();
            }
            if let Some(route) = &summary.route {
                response
                    .audit_annotations
                    .insert("route".into(), route.clone());
            }
            response.warnings = warnings;
            summary.allowed = true;
        }
        Err((code, message)) => {
            summary.reason = Some(code.to_string());
            summary.message = Some(message.clone());
            response.status = Some(StatusOut {
                code: 403,
                message,
                reason: "Forbidden",
            });
        }
    }
    let out = ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response,
    };
    // Sized for the envelope plus what varies, so encoding does not grow the buffer.
    let varying = out.response.patch.as_ref().map_or(0, String::len)
        + out.response.warnings.iter().map(String::len).sum::<usize>()
        + out.response.status.as_ref().map_or(0, |s| s.message.len());
    let mut body = Vec::with_capacity(256 + out.response.uid.len() + varying);
    if serde_json::to_writer(&mut body, &out).is_err() {
        body.clear();
    }
    Answer { body, summary }
}

/// A decode failure is either not JSON at all or JSON of the wrong shape.
fn classify(body: &str, e: serde_json::Error) -> BadReview {
    match e.classify() {
        serde_json::error::Category::Data => BadReview::NotAReview(e.to_string()),
        _ if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() => {
            BadReview::NotAReview(e.to_string())
        }
        _ => BadReview::NotJson(e.to_string()),
    }
}
