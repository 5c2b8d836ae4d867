//! The webhook's HTTP handling: route, check, read the body within limits, call
//! [`Webhook::answer`], reply, log and count.
//!
//! Every reply is either the AdmissionReview JSON (200) or a short plain-text message saying what
//! was wrong with the request. Nothing here panics on input, and the body is never buffered past
//! the limit: a body that goes over is read on and discarded (up to a bound) so the client gets
//! to read the 413 instead of a reset connection, then the connection is closed.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

use super::metrics::{AdmissionLabels, Metrics};
use super::Limits;
use crate::admission::{Answer, BadReview, Endpoint, Webhook};

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct App {
    pub webhook: Webhook,
    pub metrics: Metrics,
    pub limits: Limits,
    pub audit: super::audit_log::AuditLog,
}

/// How a request that got no review answer failed, for the reply, the log and the metric.
struct Rejection {
    status: StatusCode,
    reason: &'static str,
    message: String,
    /// Close the connection after replying (its state is unknown, or the client is misbehaving).
    close: bool,
}

impl Rejection {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            close: false,
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// Handles one request on the webhook port.
pub(crate) async fn handle(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let version = req.version();
    let endpoint = match req.uri().path() {
        "/mutate" => Endpoint::Mutate,
        "/validate" => Endpoint::Validate,
        other => {
            tracing::debug!(path = other, "no such endpoint");
            return Ok(text(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint: {other}; Portico answers POST /mutate and POST /validate\n"
                ),
            ));
        }
    };
    let endpoint_name = match endpoint {
        Endpoint::Mutate => "mutate",
        Endpoint::Validate => "validate",
    };
    let result = review(app, endpoint, req).await;
    let elapsed = started.elapsed();
    let response = match result {
        Ok(answer) => {
            log_decision(endpoint_name, &answer, elapsed);
            let summary = &answer.summary;
            if app.audit.enabled() {
                app.audit.write(&super::audit_log::AuditRecord::admission(
                    endpoint_name,
                    summary,
                ));
            }
            app.metrics.admission.observe(
                AdmissionLabels {
                    endpoint: endpoint_name.to_owned(),
                    operation: summary.operation.clone(),
                    kind: summary.kind.clone(),
                    outcome: summary.outcome().to_owned(),
                    reason: summary.reason.clone().unwrap_or_default(),
                },
                elapsed,
            );
            let mut response = Response::new(Full::new(Bytes::from(answer.body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(rejection) => {
            tracing::info!(
                endpoint = endpoint_name,
                status = rejection.status.as_u16(),
                reason = rejection.reason,
                message = %rejection.message,
                "request rejected"
            );
            // 404/405 are not admission requests; everything else on these paths is counted.
            if rejection.status != StatusCode::METHOD_NOT_ALLOWED {
                app.metrics.admission.observe(
                    AdmissionLabels {
                        endpoint: endpoint_name.to_owned(),
                        operation: String::new(),
                        kind: String::new(),
                        outcome: "rejected".to_owned(),
                        reason: rejection.reason.to_owned(),
                    },
                    elapsed,
                );
            }
            let mut response = text(rejection.status, format!("{}\n", rejection.message));
            if rejection.status == StatusCode::METHOD_NOT_ALLOWED {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            // `Connection` is an HTTP/1 header; HTTP/2 forbids it (streams end on their own).
            if rejection.close && version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    Ok(response)
}

async fn review(
    app: &App,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Answer, Rejection> {
    if req.method() != Method::POST {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!(
                "method {} not allowed on {}; send the AdmissionReview with POST",
                req.method(),
                req.uri().path()
            ),
        ));
    }
    check_content_type(req.headers().get(header::CONTENT_TYPE))?;

    let limit = app.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let deadline = tokio::time::Instant::now() + app.limits.body_read_timeout;
    // A client waiting for `100 Continue` sends no body until we read it; reading nothing means
    // the oversize body is never sent at all.
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut body = req.into_body();

    if declared.is_some_and(|len| len > limit as u64) {
        if !expects_continue {
            discard_if_small(&mut body, declared, &app.limits, deadline).await;
        }
        return Err(too_large(limit));
    }
    let bytes = match tokio::time::timeout_at(deadline, read_limited(&mut body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(ReadError::TooLarge)) => {
            discard_if_small(&mut body, declared, &app.limits, deadline).await;
            return Err(too_large(limit));
        }
        Ok(Err(ReadError::Body(e))) => {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "body-error",
                format!("cannot read the request body: {e}"),
            )
            .closing())
        }
        Err(_) => {
            return Err(Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                    "request body not received within {}",
                    seconds(app.limits.body_read_timeout)
                ),
            )
            .closing())
        }
    };
    tracing::trace!(body = %String::from_utf8_lossy(&bytes), "review body");
    let answer = app.webhook.answer(endpoint, &bytes).map_err(|bad| {
        let reason = match bad {
            BadReview::NotJson(_) => "not-json",
            BadReview::NotAReview(_) => "not-a-review",
        };
        Rejection::new(StatusCode::BAD_REQUEST, reason, bad.to_string())
    })?;
    tracing::trace!(body = %String::from_utf8_lossy(&answer.body), "review answer");
    Ok(answer)
}

fn check_content_type(value: Option<&HeaderValue>) -> Result<(), Rejection> {
    let unsupported = |got: &str| {
        Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            format!("Content-Type must be application/json, got {got}"),
        )
    };
    let Some(value) = value else {
        return Err(unsupported("none"));
    };
    let Ok(value) = value.to_str() else {
        return Err(unsupported("a non-ASCII value"));
    };
    // Parameters such as `; charset=utf-8` are fine; media types are case-insensitive.
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(unsupported(&format!("{value:?}")))
    }
}

fn too_large(limit: usize) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("request body exceeds the {limit}-byte limit (the apiserver's own limit is 3 MiB)"),
    )
    .closing()
}

enum ReadError {
    TooLarge,
    Body(hyper::Error),
}

/// Reads the whole body, failing as soon as it would pass `limit` bytes.
async fn read_limited(body: &mut Incoming, limit: usize) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and throws away the rest of an oversize body when it is small enough to be worth it,
/// so that the client, still writing, is not reset before it reads the 413.
async fn discard_if_small(
    body: &mut Incoming,
    declared: Option<u64>,
    limits: &Limits,
    deadline: tokio::time::Instant,
) {
    let bound = limits.max_discard_bytes;
    if declared.is_some_and(|len| len > bound as u64) {
        return;
    }
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > bound {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, discard).await;
}

/// Denials (and warn mode's would-be denials) are logged at `info`: they are what an operator
/// looks for. Allowed decisions are logged at `debug`: the audit trail already has one line for
/// every decision, and a line per pod on stderr would cost more than the decision itself.
fn log_decision(endpoint: &str, answer: &Answer, elapsed: Duration) {
    let s = &answer.summary;
    macro_rules! decision {
        ($level:expr) => {
            tracing::event!(
                $level,
                endpoint,
                uid = %s.uid,
                user = %s.user,
                operation = %s.operation,
                kind = %s.kind,
                namespace = %s.namespace,
                name = %s.name,
                tag = s.tag.as_deref().unwrap_or(""),
                route = s.route.as_deref().unwrap_or(""),
                allowed = s.allowed,
                mutated = s.mutated,
                dry_run = s.dry_run,
                would_deny = s.would_deny,
                patch_bytes = s.patch_bytes,
                reason = s.reason.as_deref().unwrap_or(""),
                message = s.message.as_deref().unwrap_or(""),
                micros = elapsed.as_micros() as u64,
                "admission decision"
            )
        };
    }
    if s.allowed && !s.would_deny {
        decision!(tracing::Level::DEBUG);
    } else {
        decision!(tracing::Level::INFO);
    }
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = |v: &str| check_content_type(Some(&HeaderValue::from_str(v).unwrap())).is_ok();
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
        assert!(check_content_type(None).is_err());
    }
}
