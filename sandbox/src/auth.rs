//! Authentication: the static token table (token → user, uid, groups), the apiserver's static
//! token file format, and `Impersonate-User` / `Impersonate-Group` (allowed for system:masters).

use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// Who is making a request (as sent in `AdmissionReview.request.userInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Username.
    pub username: String,
    /// User uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with the given name and groups (system:authenticated added).
    pub fn new(username: &str, groups: &[&str]) -> Self {
        let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        if !g.iter().any(|x| x == "system:authenticated") {
            g.push("system:authenticated".into());
        }
        Self {
            username: username.into(),
            uid: String::new(),
            groups: g,
        }
    }

    /// A service account user with its groups.
    pub fn service_account(ns: &str, name: &str) -> Self {
        let mut u = Self::new(
            &format!("system:serviceaccount:{ns}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{ns}"),
            ],
        );
        u.uid = format!("sa-{ns}-{name}");
        u
    }

    /// Member of system:masters.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// One row of the token table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Kubeconfig context name (`admin`, `user1`, ...), if the kubeconfig should carry it.
    pub context: Option<String>,
    /// Bearer token.
    pub token: String,
    /// The user it authenticates as.
    pub user: UserInfo,
}

/// The usernames of the kube-system controllers the sandbox acts as.
pub const JOB_CONTROLLER: &str = "job-controller";
/// statefulset-controller
pub const STATEFULSET_CONTROLLER: &str = "statefulset-controller";
/// replicaset-controller
pub const REPLICASET_CONTROLLER: &str = "replicaset-controller";
/// deployment-controller
pub const DEPLOYMENT_CONTROLLER: &str = "deployment-controller";
/// generic-garbage-collector
pub const GC_CONTROLLER: &str = "generic-garbage-collector";
/// replication-controller (the ReplicationController manager's service account)
pub const REPLICATION_CONTROLLER: &str = "replication-controller";
/// cronjob-controller
pub const CRONJOB_CONTROLLER: &str = "cronjob-controller";
/// namespace-controller (deletes a deleted namespace's contents)
pub const NAMESPACE_CONTROLLER: &str = "namespace-controller";

/// The default token table: admin, user1, user2, portal, portico's service account and the
/// kube-system controllers.
pub fn default_tokens() -> Vec<TokenEntry> {
    let mut admin = UserInfo::new("admin", &["system:masters"]);
    admin.uid = "admin-uid".into();
    let mut t = vec![
        entry(Some("admin"), "sandbox-admin-token", admin),
        entry(Some("user1"), "sandbox-user1-token", named("user1")),
        entry(Some("user2"), "sandbox-user2-token", named("user2")),
        entry(Some("portal"), "sandbox-portal-token", named("portal")),
        entry(
            Some("portico"),
            "sandbox-portico-token",
            UserInfo::service_account("portico-system", "portico"),
        ),
    ];
    for c in [
        JOB_CONTROLLER,
        STATEFULSET_CONTROLLER,
        REPLICASET_CONTROLLER,
        DEPLOYMENT_CONTROLLER,
        "daemon-set-controller",
        CRONJOB_CONTROLLER,
        REPLICATION_CONTROLLER,
        NAMESPACE_CONTROLLER,
        GC_CONTROLLER,
    ] {
        t.push(entry(
            None,
            &format!("sandbox-{c}-token"),
            UserInfo::service_account("kube-system", c),
        ));
    }
    t
}

fn named(name: &str) -> UserInfo {
    let mut u = UserInfo::new(name, &[]);
    u.uid = format!("{name}-uid");
    u
}

fn entry(context: Option<&str>, token: &str, user: UserInfo) -> TokenEntry {
    TokenEntry {
        context: context.map(str::to_string),
        token: token.into(),
        user,
    }
}

/// Parses the apiserver's static token file: `token,user,uid,"group1,group2"` per line.
pub fn parse_token_file(text: &str) -> Result<Vec<TokenEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() < 3 {
            return Err(format!("line {}: want token,user,uid[,\"groups\"]", n + 1));
        }
        let groups: Vec<&str> = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut user = UserInfo::new(fields[1].trim(), &groups);
        user.uid = fields[2].trim().to_string();
        out.push(TokenEntry {
            context: Some(fields[1].trim().replace(':', "-")),
            token: fields[0].trim().to_string(),
            user,
        });
    }
    Ok(out)
}

/// Resolves the requester from the Authorization and impersonation headers.
pub fn authenticate(
    tokens: &[TokenEntry],
    headers: &http::HeaderMap,
) -> Result<UserInfo, ApiError> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    let user = tokens
        .iter()
        .find(|t| t.token == token)
        .map(|t| t.user.clone())
        .ok_or_else(ApiError::unauthorized)?;
    let Some(target) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    else {
        if headers.contains_key("impersonate-group") {
            return Err(ApiError::internal(
                "requested [{Kind:Group}] without impersonating a user",
            ));
        }
        return Ok(user);
    };
    if !user.is_admin() {
        return Err(ApiError::forbidden(format!(
            "users \"{target}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
            user.username
        )));
    }
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let mut imp = if let Some(known) = tokens.iter().find(|t| t.user.username == target) {
        let mut u = known.user.clone();
        if !groups.is_empty() {
            u.groups = groups;
        }
        u
    } else if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
        let (ns, name) = rest.split_once(':').unwrap_or((rest, ""));
        let mut u = UserInfo::service_account(ns, name);
        u.groups.extend(groups);
        u
    } else {
        let g: Vec<&str> = groups.iter().map(String::as_str).collect();
        UserInfo::new(target, &g)
    };
    if !imp.groups.iter().any(|g| g == "system:authenticated") {
        imp.groups.push("system:authenticated".into());
    }
    if let Some(uid) = headers.get("impersonate-uid").and_then(|v| v.to_str().ok()) {
        imp.uid = uid.to_string();
    }
    Ok(imp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_and_impersonation() {
        let t = default_tokens();
        let u = authenticate(
            &t,
            &headers(&[("authorization", "Bearer sandbox-user1-token")]),
        )
        .unwrap();
        assert_eq!(u.username, "user1");
        assert!(authenticate(&t, &headers(&[])).is_err());
        let imp = authenticate(
            &t,
            &headers(&[
                ("authorization", "Bearer sandbox-admin-token"),
                ("impersonate-user", "user2"),
            ]),
        )
        .unwrap();
        assert_eq!(imp.username, "user2");
        let e = authenticate(
            &t,
            &headers(&[
                ("authorization", "Bearer sandbox-user1-token"),
                ("impersonate-user", "user2"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
    }

    #[test]
    fn token_file() {
        let t = parse_token_file("abc,alice,1,\"g1,g2\"\n# c\nxyz,bob,2\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].user.groups, vec!["g1", "g2", "system:authenticated"]);
    }
}
