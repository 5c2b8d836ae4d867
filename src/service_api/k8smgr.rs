//! The reply shapes of the Kubernetes manager's clients ([`super::config::Wire::K8smgr`]), as
//! pure functions of Portico's own answers.
//!
//! What those clients read (JupyterHub's BackendSpawner and Jupyter-JSC's spawners):
//! - a poll: a JSON object with a boolean `running`. One `false` stops the user's lab, so it
//!   is `false` only for a service that failed for good or ended, never for one that is
//!   starting, retrying an image pull or being read while the cluster hiccups (that is a `5xx`,
//!   which those clients read as "still running");
//! - `details: {error, detailed_error}` beside a `false`, shown to the user: `detailed_error`
//!   is HTML (the spawner puts it into its progress page), so every text in it is escaped;
//! - a refused request: `{"error": summary, "detailed_error": details}`.
//!
//! Portico's own fields stay beside these, so nothing a Portico client reads is lost.

use serde_json::{json, Value};

use super::cluster::{Failure, ServiceStatus};
use super::status::Phase;

/// What a request was doing, for the summary line of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Poll,
    Stop,
    Other,
}

impl Action {
    /// The manager's own summary lines, so a hub's users see what they are used to.
    fn summary(self) -> &'static str {
        match self {
            Action::Start => "Could not start service",
            Action::Poll => "Could not check status service.",
            Action::Stop => "Could not stop service",
            Action::Other => "Request refused",
        }
    }
}

/// Text made safe to place in HTML.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// Whether the manager's clients should keep the lab: `false` only once it failed for good or
/// ended.
pub fn running(status: &ServiceStatus) -> bool {
    match status.status {
        Phase::Starting | Phase::Running => true,
        // The kubelet retries a first failed image pull by itself.
        Phase::Failed => status.retrying,
        Phase::Stopped => false,
    }
}

fn section(title: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let body: Vec<String> = lines.iter().map(|l| escape_html(l)).collect();
    format!(
        "<details><summary>{}</summary>{}</details>",
        escape_html(title),
        body.join("<br>")
    )
}

/// `details` for a service the clients should stop: a summary and, as escaped HTML, why,
/// with the service's recent events and log lines.
pub fn details(status: &ServiceStatus) -> Option<Value> {
    if running(status) {
        return None;
    }
    let error = match status.status {
        Phase::Failed => "Service cannot start",
        _ => "Service has ended",
    };
    let events: Vec<String> = status
        .events
        .iter()
        .map(|e| format!("{} {} {}: {}", e.time, e.type_, e.object, e.message))
        .collect();
    let detailed = format!(
        "{}{}{}",
        escape_html(&status.reason),
        section("Kubernetes events", &events),
        section("Container logs", &status.logs)
    );
    Some(json!({"error": error, "detailed_error": detailed}))
}

/// A poll's (or start's, or stop's) reply: Portico's fields plus `running`, `details` and the
/// manager's `servername` and `start_id`.
pub fn status_body(status: &ServiceStatus) -> Value {
    let mut body = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(obj) = body.as_object_mut() {
        obj.insert("running".into(), json!(running(status)));
        obj.insert("servername".into(), json!(status.name));
        obj.insert("stop_pending".into(), json!(false));
        if let Some(d) = details(status) {
            obj.insert("details".into(), d);
        }
    }
    body
}

/// A refusal: the manager's `{"error", "detailed_error"}`, with Portico's `code` and
/// `message` beside them.
pub fn error_body(action: Action, code: &str, message: &str) -> Value {
    json!({
        "error": action.summary(),
        "detailed_error": escape_html(message),
        "code": code,
        "message": message,
    })
}

/// [`error_body`] of a [`Failure`], with its template `file` and `keyword` when it has them.
pub fn failure_body(action: Action, f: &Failure) -> Value {
    let mut body = error_body(action, f.code, &f.message);
    if let Some(file) = &f.file {
        body["file"] = json!(file);
    }
    if let Some(keyword) = &f.keyword {
        body["keyword"] = json!(keyword);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_api::status::EventLine;

    fn status(phase: Phase) -> ServiceStatus {
        ServiceStatus {
            name: "lab".into(),
            status: phase,
            reason: "why".into(),
            start_id: "1a2b3c4d".into(),
            user_id: "alice".into(),
            service: "JupyterLab/JupyterLab".into(),
            namespace: "userlabs".into(),
            tag: "lab".into(),
            address: None,
            events: Vec::new(),
            logs: Vec::new(),
            retrying: false,
        }
    }

    #[test]
    fn running_is_false_only_for_failed_or_ended_services() {
        assert!(running(&status(Phase::Starting)));
        assert!(running(&status(Phase::Running)));
        assert!(!running(&status(Phase::Failed)));
        assert!(!running(&status(Phase::Stopped)));
        let mut pulling = status(Phase::Failed);
        pulling.retrying = true;
        assert!(running(&pulling));
        assert_eq!(details(&pulling), None);
    }

    #[test]
    fn bodies_keep_portico_fields_and_add_the_managers() {
        let b = status_body(&status(Phase::Running));
        assert_eq!(b["running"], true);
        assert_eq!(b["status"], "running");
        assert_eq!(b["servername"], "lab");
        assert_eq!(b["start_id"], "1a2b3c4d");
        assert!(b.get("details").is_none());
        let b = status_body(&status(Phase::Stopped));
        assert_eq!(b["running"], false);
        assert_eq!(b["details"]["error"], "Service has ended");
        assert_eq!(b["details"]["detailed_error"], "why");
    }

    #[test]
    fn details_escape_whatever_a_lab_writes() {
        let mut s = status(Phase::Failed);
        s.reason = "pod <b>x</b> failed".into();
        s.events = vec![EventLine {
            time: "t".into(),
            type_: "Warning".into(),
            reason: "BackOff".into(),
            object: "Pod/x".into(),
            message: "<img src=x onerror=alert(1)>".into(),
        }];
        s.logs = vec!["[x/c] <script>alert('hi')</script> & \"q\"".into()];
        let d = details(&s).unwrap();
        let html = d["detailed_error"].as_str().unwrap();
        assert_eq!(d["error"], "Service cannot start");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#x27;hi&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"),
            "{html}"
        );
        assert!(html.contains("<details><summary>Kubernetes events</summary>"));
        assert!(html.contains("<details><summary>Container logs</summary>"));
    }

    #[test]
    fn refusals_have_the_managers_shape() {
        let f = Failure {
            file: Some("f.yaml".into()),
            ..Failure::new(http::StatusCode::BAD_REQUEST, "template", "bad <x>")
        };
        let b = failure_body(Action::Start, &f);
        assert_eq!(b["error"], "Could not start service");
        assert_eq!(b["detailed_error"], "bad &lt;x&gt;");
        assert_eq!(b["code"], "template");
        assert_eq!(b["message"], "bad <x>");
        assert_eq!(b["file"], "f.yaml");
        assert_eq!(
            error_body(Action::Poll, "cluster", "x")["error"],
            "Could not check status service."
        );
        assert_eq!(
            error_body(Action::Stop, "c", "x")["error"],
            "Could not stop service"
        );
        assert_eq!(escape_html("a&b"), "a&amp;b");
    }
}
