//! The REST surface: routing, authentication before anything else is read, body limits, and
//! JSON replies. Every error is `{"error": code, "message": …}` (plus `file` and `keyword` for
//! template errors).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::{json, Value};

use super::auth::{self, Client};
use super::cluster::{Failure, ServiceStatus, Services, StartRequest};
use super::config::Wire;
use super::handlers::{HandlerError, Handlers};
use super::k8smgr::{self, Action};
use super::logs::{LogChange, LogControl};

/// What every request needs.
pub struct App {
    pub services: Services,
    pub clients: Vec<Client>,
    pub logs: Option<LogControl>,
    pub max_body_bytes: usize,
    /// A body must have arrived within this once its head has: a client that trickles a body
    /// holds its connection no longer.
    pub body_read_timeout: std::time::Duration,
}

/// The header naming the service on `POST`.
pub const SERVICE_HEADER: &str = "uuidcode";
/// The optional header naming the client's user a request is for.
pub const USER_HEADER: &str = "user-id";

enum Route {
    Health,
    Services,
    Service(String),
    LogLevel,
    LogTest,
    Handlers,
    Handler(String),
}

/// The endpoint of a path. Every path is served with and without its trailing slash, and
/// never answered with a redirect: a client that follows one turns a `POST` into a `GET`. A
/// service name's percent-escapes are decoded (a broken escape names no endpoint).
fn route(path: &str) -> Option<Route> {
    let path = path.strip_suffix('/').unwrap_or(path);
    match path {
        "/api/health" => Some(Route::Health),
        "/api/services" => Some(Route::Services),
        "/api/logs/level" => Some(Route::LogLevel),
        "/api/logs/logtest" => Some(Route::LogTest),
        "/api/logs/handler" => Some(Route::Handlers),
        _ if path.starts_with("/api/logs/handler/") => {
            let kind = path.strip_prefix("/api/logs/handler/")?;
            (!kind.is_empty() && !kind.contains('/')).then(|| Route::Handler(kind.to_string()))
        }
        _ => {
            let segment = path.strip_prefix("/api/services/")?;
            if segment.is_empty() || segment.contains('/') {
                return None;
            }
            super::names::decode_segment(segment).map(Route::Service)
        }
    }
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn error_reply(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Response<Full<Bytes>> {
    json_reply(status, &json!({"error": code, "message": message.into()}))
}

fn failure_reply(f: Failure) -> Response<Full<Bytes>> {
    let mut body = json!({"error": f.code, "message": f.message});
    if let Some(file) = f.file {
        body["file"] = json!(file);
    }
    if let Some(keyword) = f.keyword {
        body["keyword"] = json!(keyword);
    }
    let mut reply = json_reply(f.status, &body);
    if let Some(secs) = f.retry_after {
        reply
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    reply
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("this path answers {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A refusal before the request reached the service logic.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn reply(self) -> Response<Full<Bytes>> {
        error_reply(self.0, self.1, self.2)
    }
}

fn header_str<'r, B>(req: &'r Request<B>, name: &str) -> Result<Option<&'r str>, Refusal> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Refusal(
                StatusCode::BAD_REQUEST,
                "header",
                format!("header {name} is not visible ASCII"),
            )
        }),
    }
}

async fn read_json<B, T>(body: B, limit: usize, within: std::time::Duration) -> Result<T, Refusal>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
    T: serde::de::DeserializeOwned,
{
    let Ok(collected) = tokio::time::timeout(within, Limited::new(body, limit).collect()).await
    else {
        return Err(Refusal(
            StatusCode::REQUEST_TIMEOUT,
            "body",
            format!(
                "the body did not arrive within {} ms; send it at once",
                within.as_millis()
            ),
        ));
    };
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                format!("the body is larger than {limit} bytes"),
            ))
        }
        Err(e) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "body",
                format!("cannot read the body: {e}"),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            "body",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

/// Handles one request.
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = serve(&app, req).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), "api request");
    Ok(response)
}

async fn serve<B>(app: &App, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(route) = route(req.uri().path()) else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not-found",
            format!(
                "no such endpoint: {}; see openapi/service-api.yaml",
                req.uri().path()
            ),
        );
    };
    if let Route::Health = route {
        // For probes: no credentials, no body, nothing read.
        return match *req.method() {
            Method::GET | Method::HEAD => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::OK;
                r
            }
            _ => method_not_allowed("GET, HEAD"),
        };
    }
    // Who is calling is settled from the Authorization header alone, before anything else.
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let Some(client) = auth::authenticate(&app.clients, authorization) else {
        // Which wire the caller speaks is not known yet: the body carries both shapes' fields.
        let message = "missing or wrong client credentials (Authorization: Bearer <token>, Token <token> or Basic <user:password>)";
        let mut r = json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthorized", "message": message, "detailed_error": message}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portico\", Basic realm=\"portico\""),
        );
        return r;
    };
    let user = match header_str(&req, USER_HEADER) {
        Ok(u) => u.map(str::to_string),
        Err(r) => {
            return match client.config.wire {
                Wire::Portico => r.reply(),
                Wire::K8smgr => json_reply(r.0, &k8smgr::error_body(Action::Other, r.1, &r.2)),
            }
        }
    };
    tracing::debug!(client = %client.config.name, "authenticated");
    let wire = client.config.wire;
    if wire == Wire::K8smgr {
        let action = match (&route, req.method()) {
            (Route::Services, &Method::POST) => Action::Start,
            (Route::Service(_), &Method::GET) => Action::Poll,
            (Route::Service(_), &Method::DELETE) => Action::Stop,
            _ => Action::Other,
        };
        let within = wire.request_timeout();
        let served = tokio::time::timeout(within, serve_client(app, client, user, route, req));
        return match served.await {
            Ok(reply) => k8smgr_reply(reply, action),
            Err(_) => json_reply(
                StatusCode::GATEWAY_TIMEOUT,
                &k8smgr::error_body(
                    action,
                    "timeout",
                    &format!("no answer within {} s; a start goes on and completes or rolls back on its own, a poll tells which", within.as_secs()),
                ),
            ),
        };
    }
    portico_reply(serve_client(app, client, user, route, req).await)
}

/// What a request came to, before it is put in a wire's shape.
enum Served {
    /// A service's status; `created` for a start that made a new one.
    Status {
        created: bool,
        status: Box<ServiceStatus>,
    },
    /// No such service (for this client and user).
    NotFound(String),
    Failed(Failure),
    /// A reply that is the same on every wire (log levels, refusals before the service logic).
    Plain(Response<Full<Bytes>>),
}

fn portico_reply(served: Served) -> Response<Full<Bytes>> {
    match served {
        Served::Status { created, status } => json_reply(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &serde_json::to_value(*status).unwrap_or(Value::Null),
        ),
        Served::NotFound(name) => error_reply(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no service {name:?}"),
        ),
        Served::Failed(f) => failure_reply(f),
        Served::Plain(r) => r,
    }
}

fn k8smgr_reply(served: Served, action: Action) -> Response<Full<Bytes>> {
    match served {
        Served::Status { created, status } => json_reply(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &k8smgr::status_body(&status),
        ),
        Served::NotFound(name) => json_reply(
            StatusCode::NOT_FOUND,
            &k8smgr::error_body(action, "not-found", &format!("no service {name:?}")),
        ),
        Served::Failed(f) => {
            let status = f.status;
            let retry_after = f.retry_after;
            let mut reply = json_reply(status, &k8smgr::failure_body(action, &f));
            if let Some(secs) = retry_after {
                reply
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            reply
        }
        Served::Plain(r) => r,
    }
}

/// A fresh service name for a manager's client that sent none (as the manager does).
fn invented_name() -> String {
    super::cluster::new_nonce("invented", "")
        .chars()
        .chain(super::cluster::new_nonce("invented", "2").chars())
        .take(32)
        .collect()
}

async fn serve_client<B>(
    app: &App,
    client: &Client,
    user: Option<String>,
    route: Route,
    req: Request<B>,
) -> Served
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let plain = |r: Refusal| Served::Failed(Failure::bad(r.1, r.2).with_status(r.0));
    match (route, req.method().clone()) {
        (Route::Services, Method::POST) => {
            let id = match header_str(&req, SERVICE_HEADER) {
                Ok(Some(id)) => id.to_string(),
                Ok(None) if client.config.wire == Wire::K8smgr => invented_name(),
                Ok(None) => {
                    return Served::Failed(Failure::bad(
                        "uuidcode",
                        "header uuidcode (the service's name) is missing",
                    ))
                }
                Err(r) => return plain(r),
            };
            let body: StartRequest =
                match read_json(req.into_body(), app.max_body_bytes, app.body_read_timeout).await {
                    Ok(b) => b,
                    Err(r) => return plain(r),
                };
            match app.services.start(client, &id, user.as_deref(), body).await {
                Ok((created, status)) => Served::Status {
                    created,
                    status: Box::new(status),
                },
                Err(f) => Served::Failed(f),
            }
        }
        (Route::Services, _) => Served::Plain(method_not_allowed("POST")),
        (Route::Service(name), m) if m == Method::GET || m == Method::DELETE => {
            let outcome = if m == Method::GET {
                app.services.status(client, &name, user.as_deref()).await
            } else {
                app.services.stop(client, &name, user.as_deref()).await
            };
            match outcome {
                Ok(Some(status)) => Served::Status {
                    created: false,
                    status: Box::new(status),
                },
                Ok(None) => Served::NotFound(name),
                Err(f) => Served::Failed(f),
            }
        }
        (Route::Service(_), _) => Served::Plain(method_not_allowed("GET, DELETE")),
        (Route::LogLevel, m) if m == Method::GET || m == Method::PUT => {
            Served::Plain(log_level(app, client, m, req).await)
        }
        (Route::LogLevel, _) => Served::Plain(method_not_allowed("GET, PUT")),
        (Route::Handlers | Route::Handler(_), _) if !client.config.admin => {
            Served::Plain(error_reply(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only clients with admin: true may see or change log handlers",
            ))
        }
        (Route::Handlers, Method::GET) => Served::Plain(json_reply(
            StatusCode::OK,
            &Value::Array(Handlers::global().list()),
        )),
        (Route::Handlers, Method::POST) => {
            let body: HandlerBody =
                match read_json(req.into_body(), app.max_body_bytes, app.body_read_timeout).await {
                    Ok(b) => b,
                    Err(r) => return plain(r),
                };
            Served::Plain(handler_reply(
                StatusCode::CREATED,
                Handlers::global().create(&body.handler, body.configuration),
            ))
        }
        (Route::Handlers, _) => Served::Plain(method_not_allowed("GET, POST")),
        (Route::Handler(kind), Method::GET) => Served::Plain(match Handlers::global().get(&kind) {
            Some(h) => json_reply(StatusCode::OK, &h),
            None => handler_reply(StatusCode::OK, Err(HandlerError::NotFound)),
        }),
        (Route::Handler(kind), m) if m == Method::PUT || m == Method::PATCH => {
            let body: HandlerChange =
                match read_json(req.into_body(), app.max_body_bytes, app.body_read_timeout).await {
                    Ok(b) => b,
                    Err(r) => return plain(r),
                };
            Served::Plain(handler_reply(
                StatusCode::OK,
                Handlers::global().update(&kind, body.configuration),
            ))
        }
        (Route::Handler(kind), Method::DELETE) => {
            Served::Plain(match Handlers::global().delete(&kind) {
                Ok(()) => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Err(e) => handler_reply(StatusCode::OK, Err(e)),
            })
        }
        (Route::Handler(_), _) => Served::Plain(method_not_allowed("GET, PUT, PATCH, DELETE")),
        (Route::LogTest, Method::GET) => Served::Plain(log_test(client)),
        (Route::LogTest, _) => Served::Plain(method_not_allowed("GET")),
        // Answered before authentication.
        (Route::Health, _) => Served::Plain(method_not_allowed("GET, HEAD")),
    }
}

/// The body creating a log handler: `{"handler": kind, "configuration": {…}}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerBody {
    handler: String,
    #[serde(default)]
    configuration: serde_json::Map<String, Value>,
}

/// The body changing one: its configuration, key by key (`handler` may be repeated, as the
/// manager's clients do).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerChange {
    #[serde(default, rename = "handler")]
    _handler: Option<String>,
    #[serde(default)]
    configuration: serde_json::Map<String, Value>,
}

fn handler_reply(ok: StatusCode, outcome: Result<Value, HandlerError>) -> Response<Full<Bytes>> {
    match outcome {
        Ok(v) => json_reply(ok, &v),
        Err(HandlerError::Invalid(m)) => error_reply(StatusCode::BAD_REQUEST, "handler", m),
        Err(HandlerError::NotFound) => error_reply(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such log handler (GET /api/logs/handler/ lists them)",
        ),
    }
}

/// `GET /api/logs/logtest/` (the manager's `logtest`): one line at each level, so an operator
/// sees which reach the log with the levels in force. Answers an empty `200`.
fn log_test(client: &Client) -> Response<Full<Bytes>> {
    if !client.config.admin {
        return error_reply(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only clients with admin: true may write test log lines",
        );
    }
    let by = client.config.name.as_str();
    tracing::trace!(target: "portico::service_api::logtest", client = by, "logtest: trace");
    tracing::debug!(target: "portico::service_api::logtest", client = by, "logtest: debug");
    tracing::info!(target: "portico::service_api::logtest", client = by, "logtest: info");
    tracing::warn!(target: "portico::service_api::logtest", client = by, "logtest: warn");
    tracing::error!(target: "portico::service_api::logtest", client = by, "logtest: error");
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::OK;
    r
}

async fn log_level<B>(
    app: &App,
    client: &Client,
    m: Method,
    req: Request<B>,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !client.config.admin {
        return error_reply(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only clients with admin: true may see or change log levels",
        );
    }
    let Some(logs) = &app.logs else {
        return error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-log-control",
            "this process's logging cannot be changed at run time",
        );
    };
    if m == Method::GET {
        return json_reply(StatusCode::OK, &json!(logs.levels()));
    }
    let change: LogChange =
        match read_json(req.into_body(), app.max_body_bytes, app.body_read_timeout).await {
            Ok(c) => c,
            Err(r) => return r.reply(),
        };
    match logs.change(change) {
        Ok(levels) => json_reply(StatusCode::OK, &json!(levels)),
        Err(e) => error_reply(StatusCode::BAD_REQUEST, "level", e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::service_api::config::ApiClient;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn client(name: &str, admin: bool) -> Client {
        let var = format!("PORTICO_TEST_REST_{}", name.to_uppercase());
        std::env::set_var(&var, format!("token-of-{name}"));
        auth::load(&[ApiClient {
            name: name.into(),
            token_env: Some(var),
            admin,
            ..Default::default()
        }])
        .unwrap()
        .remove(0)
    }

    #[test]
    fn logtest_writes_one_line_per_level_for_admins_only() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let (admin, other) = (client("ops", true), client("hub", false));
        let (allowed, refused) = tracing::subscriber::with_default(subscriber, || {
            (log_test(&admin).status(), log_test(&other).status())
        });
        assert_eq!(allowed, StatusCode::OK);
        assert_eq!(refused, StatusCode::FORBIDDEN);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        for level in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] {
            let lines = text
                .lines()
                .filter(|l| l.contains(level) && l.contains("logtest:"))
                .count();
            assert_eq!(lines, 1, "{level} in\n{text}");
        }
        assert!(
            text.contains("client=\"ops\"") || text.contains("client=ops"),
            "{text}"
        );
    }
}
