//! Which namespaces a client's services may be placed in, as pure functions of the names.
//!
//! A client's `namespace` may contain `{user}`, so a user id could otherwise name any
//! namespace: Portico's own (where the API keeps its records and the provisioner its Lease), or
//! the cluster's (`kube-system`). Those are refused always; everything else must match the
//! client's `allowedNamespaces` patterns, or, when there are none, the pattern its `namespace`
//! makes with `{user}` as the wildcard (`jupyter-{user}` allows `jupyter-*`).

/// The cluster's own namespaces, refused whatever the configuration says.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Prefixes of namespaces that belong to the platform (`kube-…`, `openshift-…`).
pub const SYSTEM_PREFIXES: [&str; 2] = ["kube-", "openshift-"];

/// The namespace Portico is installed in by its manifests.
pub const PORTICO_NAMESPACE: &str = "portico-system";

/// Portico's own namespaces under `config`: the shipped one, the API's records', the Lease's.
pub fn portico_namespaces(config: &crate::config::Config) -> Vec<String> {
    let mut out = vec![
        PORTICO_NAMESPACE.to_string(),
        config.api.state_namespace.clone(),
        config.provisioner.lease_namespace.clone(),
    ];
    out.sort();
    out.dedup();
    out
}

/// Why a namespace was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceRefusal {
    #[error("namespace {namespace:?} is the cluster's own; a service may not be placed there (choose a user id that makes a tenant namespace)")]
    System { namespace: String },
    #[error("namespace {namespace:?} is Portico's own; a service may not be placed there (choose a user id that makes a tenant namespace)")]
    Portico { namespace: String },
    #[error("namespace {namespace:?} is not one this client may use (allowed: {allowed}); an administrator can add it to the client's allowedNamespaces")]
    NotAllowed { namespace: String, allowed: String },
}

/// Whether `name` matches `pattern`, where each `*` stands for any run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            // Try every split point for the remaining pattern (names are short).
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| matches(rest, &tail[i..]))
        }
    }
}

/// Whether `namespace` is the cluster's own.
pub fn is_system(namespace: &str) -> bool {
    SYSTEM_NAMESPACES.contains(&namespace)
        || SYSTEM_PREFIXES.iter().any(|p| namespace.starts_with(p))
}

/// The patterns a client's namespaces must match: its `allowedNamespaces`, else its namespace
/// template with `{client}` filled in and `{user}` as `*`.
pub fn allowed_patterns(template: &str, client: &str, allowed: &[String]) -> Vec<String> {
    if !allowed.is_empty() {
        return allowed.to_vec();
    }
    vec![template.replace("{client}", client).replace("{user}", "*")]
}

/// Decides whether a service may be placed in `namespace`. `portico` lists Portico's own
/// namespaces (the API's records, the provisioner's Lease).
pub fn check(
    namespace: &str,
    portico: &[&str],
    patterns: &[String],
) -> Result<(), NamespaceRefusal> {
    if portico.contains(&namespace) {
        return Err(NamespaceRefusal::Portico {
            namespace: namespace.to_string(),
        });
    }
    if is_system(namespace) {
        return Err(NamespaceRefusal::System {
            namespace: namespace.to_string(),
        });
    }
    if !patterns.iter().any(|p| matches(p, namespace)) {
        return Err(NamespaceRefusal::NotAllowed {
            namespace: namespace.to_string(),
            allowed: patterns.join(", "),
        });
    }
    Ok(())
}

/// Problems with a client's namespace settings, each naming its key (`key` is
/// `api.clients[i]`).
pub fn problems(
    key: &str,
    template: &str,
    client: &str,
    allowed: &[String],
    portico: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in allowed.iter().enumerate() {
        let valid = !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*');
        if !valid {
            out.push(format!(
                "{key}.allowedNamespaces[{i}]: {p:?} must be a namespace name, '*' standing for any characters"
            ));
        } else if p.chars().all(|c| c == '*') {
            out.push(format!(
                "{key}.allowedNamespaces[{i}]: {p:?} allows every namespace; name the tenants' namespaces (e.g. \"jupyter-*\")"
            ));
        } else if !p.contains('*') && (is_system(p) || portico.contains(&p.as_str())) {
            out.push(format!(
                "{key}.allowedNamespaces[{i}]: {p:?} is a system or Portico namespace, which is refused whatever this list says"
            ));
        }
    }
    let patterns = allowed_patterns(template, client, allowed);
    if allowed.is_empty() && patterns.iter().any(|p| p.chars().all(|c| c == '*')) {
        out.push(format!(
            "{key}.namespace: {template:?} lets a user id name any namespace; list the namespaces it may make in {key}.allowedNamespaces"
        ));
    }
    if !template.contains("{user}") {
        let fixed = template.replace("{client}", client);
        if let Err(refusal) = check(&fixed, portico, &patterns) {
            out.push(format!("{key}.namespace: {refusal}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTICO: [&str; 1] = ["portico-system"];

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns_match_with_any_number_of_stars() {
        for (p, n, want) in [
            ("team", "team", true),
            ("team", "team2", false),
            ("jupyter-*", "jupyter-alice", true),
            ("jupyter-*", "jupyter-", true),
            ("jupyter-*", "jupyte", false),
            ("*-lab", "alice-lab", true),
            ("*-lab", "alice-lab2", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("*", "anything", true),
        ] {
            assert_eq!(matches(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn system_and_portico_namespaces_are_refused_even_when_listed() {
        let all = v(&["*"]);
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "default",
            "kube-x",
            "openshift-etcd",
        ] {
            assert!(
                matches!(
                    check(ns, &PORTICO, &all),
                    Err(NamespaceRefusal::System { .. })
                ),
                "{ns}"
            );
        }
        let err = check("portico-system", &PORTICO, &all).unwrap_err();
        assert!(matches!(err, NamespaceRefusal::Portico { .. }));
        assert!(err.to_string().contains("portico-system"));
        assert_eq!(check("team", &PORTICO, &all), Ok(()));
    }

    #[test]
    fn a_namespace_outside_the_patterns_is_refused_naming_them() {
        let patterns = allowed_patterns("jupyter-{user}", "portal", &[]);
        assert_eq!(patterns, ["jupyter-*"]);
        assert_eq!(check("jupyter-alice", &PORTICO, &patterns), Ok(()));
        let err = check("elsewhere", &PORTICO, &patterns).unwrap_err();
        assert!(
            err.to_string().contains("jupyter-*") && err.to_string().contains("allowedNamespaces"),
            "{err}"
        );
        let listed = allowed_patterns("{user}", "portal", &v(&["team", "lab-*"]));
        assert_eq!(check("lab-1", &PORTICO, &listed), Ok(()));
        assert!(check("team2", &PORTICO, &listed).is_err());
        assert_eq!(allowed_patterns("{client}-{user}", "hub", &[]), ["hub-*"]);
    }

    #[test]
    fn configuration_problems_are_named() {
        let key = "api.clients[0]";
        assert!(problems(key, "jupyter-{user}", "p", &[], &PORTICO).is_empty());
        assert!(problems(key, "team", "p", &[], &PORTICO).is_empty());
        let text = problems(key, "{user}", "p", &[], &PORTICO).join("\n");
        assert!(
            text.contains("api.clients[0].namespace") && text.contains("allowedNamespaces"),
            "{text}"
        );
        let text = problems(
            key,
            "{user}",
            "p",
            &v(&["*", "Bad", "kube-system", "portico-system"]),
            &PORTICO,
        )
        .join("\n");
        for needle in [
            "[0]: \"*\" allows every",
            "[1]: \"Bad\"",
            "[2]: \"kube-system\"",
            "[3]: \"portico-system\"",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let text = problems(key, "portico-system", "p", &[], &PORTICO).join("\n");
        assert!(text.contains("Portico's own"), "{text}");
        let text = problems(key, "kube-system", "p", &[], &PORTICO).join("\n");
        assert!(text.contains("cluster's own"), "{text}");
    }
}
