//! `portico audit`'s output formats: a table for people, JSON for scripts, and wg-policy
//! `PolicyReport`s (`wgpolicyk8s.io/v1alpha2`) for policy dashboards. Pure: findings in, text out.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::{Finding, Scanned, Severity, RULES};

/// What one audit found, with what it looked at.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the objects came from: `cluster <context>` or `manifests <dir>`.
    pub source: String,
    pub scanned: Scanned,
    /// Kinds that could not be listed (said, so that a clean report is not misread).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
    pub violations: usize,
    pub warnings: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(
        source: String,
        scanned: Scanned,
        unavailable: Vec<String>,
        findings: Vec<Finding>,
    ) -> Self {
        let violations = findings
            .iter()
            .filter(|f| f.severity == Severity::Violation)
            .count();
        Report {
            source,
            scanned,
            unavailable,
            violations,
            warnings: findings.len() - violations,
            findings,
        }
    }

    /// The exit code: 0 clean, 1 when there are violations (or, with `strict`, warnings).
    pub fn exit_code(&self, strict: bool) -> u8 {
        u8::from(self.violations > 0 || (strict && self.warnings > 0))
    }

    /// Columns for a terminal, then a summary line.
    pub fn table(&self) -> String {
        let header = [
            "SEVERITY",
            "RULE",
            "NAMESPACE",
            "OBJECT",
            "ROUTE",
            "MESSAGE",
        ];
        let rows: Vec<[String; 6]> = self
            .findings
            .iter()
            .map(|f| {
                [
                    match f.severity {
                        Severity::Violation => "violation".into(),
                        Severity::Warning => "warning".into(),
                    },
                    f.rule.to_string(),
                    f.object.namespace.clone(),
                    format!("{}/{}", f.object.kind, f.object.name),
                    f.route.clone().unwrap_or_else(|| "-".into()),
                    f.message.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        if !rows.is_empty() {
            let line = |cells: Vec<&str>| {
                let mut l = String::new();
                for (i, c) in cells.iter().enumerate() {
                    if i + 1 == cells.len() {
                        l.push_str(c);
                    } else {
                        l.push_str(&format!("{c:<w$}  ", w = widths[i]));
                    }
                }
                l.push('\n');
                l
            };
            out.push_str(&line(header.to_vec()));
            for row in &rows {
                out.push_str(&line(row.iter().map(String::as_str).collect()));
            }
            out.push('\n');
        }
        let s = &self.scanned;
        out.push_str(&format!(
            "{}: {} violation(s), {} warning(s) in {} pod(s), {} service(s), {} ingress(es), {} exposure(s), {} workload(s), {} endpoint object(s)\n",
            self.source, self.violations, self.warnings, s.pods, s.services, s.ingresses, s.exposures, s.workloads, s.endpoints
        ));
        if !self.unavailable.is_empty() {
            out.push_str(&format!(
                "not audited (the source does not serve them): {}\n",
                self.unavailable.join(", ")
            ));
        }
        out
    }

    /// The report as JSON (the fields of [`Report`]).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// One `PolicyReport` per namespace with findings (a multi-document YAML stream). Each finding
    /// is a result with `result: fail` (violation) or `warn` (warning); the summary counts them.
    pub fn policy_reports(&self) -> String {
        let mut by_ns: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            by_ns.entry(&f.object.namespace).or_default().push(f);
        }
        let mut out = String::new();
        for (ns, findings) in by_ns {
            let fail = findings
                .iter()
                .filter(|f| f.severity == Severity::Violation)
                .count();
            let results: Vec<Value> = findings.iter().map(|f| result(f)).collect();
            let doc = json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": "PolicyReport",
                "metadata": {
                    "name": "portico-audit",
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": "portico"},
                },
                "summary": {"pass": 0, "fail": fail, "warn": findings.len() - fail, "error": 0, "skip": 0},
                "results": results,
            });
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&doc).unwrap_or_default());
        }
        out
    }
}

fn result(f: &Finding) -> Value {
    let description = RULES
        .iter()
        .find(|(id, _, _)| *id == f.rule)
        .map_or("", |(_, _, d)| d);
    let mut properties = serde_json::Map::new();
    properties.insert("description".into(), json!(description));
    if let Some(route) = &f.route {
        properties.insert("route".into(), json!(route));
    }
    let mut resource = json!({
        "apiVersion": f.object.api_version,
        "kind": f.object.kind,
        "namespace": f.object.namespace,
        "name": f.object.name,
    });
    if !f.object.uid.is_empty() {
        resource["uid"] = json!(f.object.uid);
    }
    json!({
        "source": "portico",
        "policy": "portico-routing",
        "rule": f.rule,
        "category": "Portico",
        "result": match f.severity { Severity::Violation => "fail", Severity::Warning => "warn" },
        "severity": match f.severity { Severity::Violation => "high", Severity::Warning => "medium" },
        "scored": true,
        "message": f.message,
        "resources": [resource],
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ObjectRef;
    use super::*;

    fn finding(rule: &'static str, severity: Severity, ns: &str) -> Finding {
        Finding {
            rule,
            severity,
            object: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: ns.into(),
                name: "p".into(),
                uid: String::new(),
            },
            route: Some("user1-foobar".into()),
            message: "m".into(),
        }
    }

    #[test]
    fn exit_codes_and_policy_reports() {
        let report = Report::new(
            "manifests x".into(),
            Scanned::default(),
            vec![],
            vec![
                finding("prefix-mismatch", Severity::Violation, "a"),
                finding("missing-pod0-label", Severity::Warning, "a"),
                finding("unstamped-route", Severity::Violation, "b"),
            ],
        );
        assert_eq!(report.exit_code(false), 1);
        let clean = Report::new(
            "x".into(),
            Scanned::default(),
            vec![],
            vec![finding("missing-pod0-label", Severity::Warning, "a")],
        );
        assert_eq!(clean.exit_code(false), 0);
        assert_eq!(clean.exit_code(true), 1);
        let yaml = report.policy_reports();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(docs[0]["kind"], "PolicyReport");
        assert_eq!(docs[0]["metadata"]["namespace"], "a");
        assert_eq!(docs[0]["summary"]["fail"], 1);
        assert_eq!(docs[0]["summary"]["warn"], 1);
        assert_eq!(docs[0]["results"][0]["result"], "fail");
        assert_eq!(docs[0]["results"][0]["resources"][0]["kind"], "Pod");
        assert!(report.table().contains("2 violation(s), 1 warning(s)"));
    }
}
