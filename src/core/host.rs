//! Host names: the default Ingress host of a (user, tag), and whose host space a host is in.
//!
//! A route value `<prefix>-<tag>` is case sensitive and may hold `_` and `.`; a DNS label may not,
//! and DNS ignores case. Lowercasing and replacing would merge `Alice` with `alice` and `a.b` with
//! `a-b`, so the default host encodes both parts injectively instead:
//!
//! - **host prefix**: the prefix itself when it is lowercase letters and digits (`user1`);
//!   otherwise `<stem>--<hash>`: 3 to 8 lowercased leading letters/digits of the prefix (padded
//!   with `0` to 3), `--`, and 16 base32 characters (80 bits) of the SHA-256 of the exact prefix
//!   (`Alice` → `alice--…`, `alice_76gz…` → `alice--…`).
//! - **host tag**: the tag itself when it is lowercase letters, digits and `-`, has no `--` and
//!   fits the label; otherwise `<stem>--<hash>`: up to 8 lowercased leading letters/digits of the
//!   tag, `--`, and 12 base32 characters (60 bits) of the SHA-256 of the exact tag.
//! - **default host**: `<host prefix>-<host tag><suffix>.<domain>` for the template
//!   `{user}-{tag}<suffix>.{domain}` (default `{user}-{tag}.{domain}`).
//!
//! Why this is injective: a plain host prefix has no `-`, an encoded one is `<stem>--` followed
//! by a fixed-length hash, and a host tag always starts with a letter or digit. So in the label
//! `<host prefix>-<host tag><suffix>` the host prefix is whatever precedes the first `-` when a
//! letter or digit follows it, else `<stem>--<16 characters>`; the host tag is what remains
//! before the fixed suffix. Plain forms never contain `--` and encoded ones always do, so a plain
//! and an encoded form never meet; two encoded forms meet only when their hashes do.
//!
//! Why it is DNS-safe: both parts are lowercase letters, digits and `-`, start and end with a
//! letter or digit, and the host tag is encoded when the plain tag would push the label past 63
//! characters. An encoded stem of at least 3 characters keeps `--` out of positions 3–4 of the
//! label, which IDNA reserves (`xn--`).
//!
//! Ownership follows from the same shape: a host is in host prefix P's space when the label just
//! before the domain starts with `P-` and a letter or digit (plain P) or is `P-…` with P of the
//! encoded shape. Deeper names (`x.<that label>.<domain>`) are in the same space.

use crate::config::ProvisionerConfig;

use super::policy::Policy;
use super::prefix::{sha256_base32, Prefix, BASE32_ALPHABET};

/// Base32 characters of an encoded host prefix's hash: 80 bits, as many as a hashed prefix has,
/// since two users whose host prefixes meet would share a host space.
const PREFIX_HASH: usize = 16;
/// Base32 characters of an encoded host tag's hash: 60 bits. Tags only ever meet tags of the same
/// host prefix, so a collision could only make two of one user's own tags share a host; the
/// shorter hash leaves room for the tag after the longest plain prefix.
const TAG_HASH: usize = 12;
/// The most leading characters an encoded form keeps for people to read.
const STEM: usize = 8;
/// An encoded host prefix's stem is at least this long, so its `--` starts at position 4 or
/// later: positions 3–4 are IDNA's (`xn--`).
const MIN_PREFIX_STEM: usize = 3;
/// What pads a short stem.
const PAD: char = '0';
/// The longest DNS label.
const MAX_LABEL: usize = 63;
/// The longest DNS name.
const MAX_NAME: usize = 253;

/// The longest encoded host prefix: stem, `--`, hash.
pub const MAX_ENCODED_HOST_PREFIX: usize = STEM + 2 + PREFIX_HASH;
/// The shortest encoded host tag: one stem character, `--`, hash. A template must leave at least
/// this much room for the tag after the longest host prefix.
pub const MIN_ENCODED_HOST_TAG: usize = 1 + 2 + TAG_HASH;

/// The template rule, for the configuration's error message and docs.
pub const TEMPLATE_RULE: &str = "the template must be \"{user}-{tag}<suffix>.{domain}\": \
    {user}, {tag} and {domain} each exactly once, one DNS label that starts with {user}-{tag} \
    (optionally followed by lowercase letters, digits and '-', not ending in '-'), then \
    .{domain}. Only this shape keeps every default host distinct per user and tag and inside its \
    user's host space (names whose first label under the domain starts with \"<host prefix>-\")";

/// Lowercase ASCII letters and digits, non-empty.
fn is_lower_alnum(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Up to `max` lowercased leading letters/digits of `s`, padded to `min`.
fn stem(s: &str, max: usize, min: usize) -> String {
    let mut stem: String = s
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .take(max)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    while stem.len() < min {
        stem.push(PAD);
    }
    stem
}

/// The DNS-safe, injective form of a prefix in host names: the prefix itself when it is
/// lowercase letters and digits, else `<stem>--<hash>`.
pub fn host_prefix(prefix: &Prefix) -> String {
    let p = prefix.as_str();
    if is_lower_alnum(p) {
        return p.to_string();
    }
    format!(
        "{}--{}",
        stem(p, STEM, MIN_PREFIX_STEM),
        sha256_base32(p, PREFIX_HASH)
    )
}

/// Whether a tag can stand in a host as it is: lowercase letters, digits and `-`, a letter or
/// digit at both ends, and no `--` (which marks the encoded form).
fn is_plain_host_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !tag.contains("--")
}

/// The DNS-safe, injective form of a tag in at most `room` characters: the tag itself when it is
/// plain and fits, else `<stem>--<hash>`. `None` when not even the encoded form fits.
///
/// For one `room` (one host prefix under one template) the result is injective over tags.
pub fn host_tag(tag: &str, room: usize) -> Option<String> {
    if is_plain_host_tag(tag) && tag.len() <= room {
        return Some(tag.to_string());
    }
    let stem_room = room.checked_sub(2 + TAG_HASH)?;
    if stem_room == 0 {
        return None;
    }
    // At least one character so the tag part starts with a letter or digit, which is what
    // separates `<plain prefix>-<tag>` from `<encoded prefix>` when ownership is read back.
    Some(format!(
        "{}--{}",
        stem(tag, STEM.min(stem_room), 1),
        sha256_base32(tag, TAG_HASH)
    ))
}

/// Why an `ingressHostTemplate` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("has {placeholder} {count} times instead of once")]
    Count {
        placeholder: &'static str,
        count: usize,
    },
    #[error("does not end with \".{{domain}}\"")]
    DomainNotLast,
    #[error("has the label {0:?} before \".{{domain}}\", which does not start with \"{{user}}-{{tag}}\"")]
    LabelStart(String),
    #[error("has {0:?} after \"{{user}}-{{tag}}\", which is not lowercase letters, digits and '-' ending in a letter or digit")]
    Suffix(String),
}

/// A checked `ingressHostTemplate`: `{user}-{tag}<suffix>.{domain}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTemplate {
    suffix: String,
}

impl HostTemplate {
    /// Checks a template against [`TEMPLATE_RULE`].
    pub fn parse(template: &str) -> Result<HostTemplate, TemplateError> {
        for placeholder in ["{user}", "{tag}", "{domain}"] {
            let count = template.matches(placeholder).count();
            if count != 1 {
                return Err(TemplateError::Count { placeholder, count });
            }
        }
        let label = template
            .strip_suffix(".{domain}")
            .ok_or(TemplateError::DomainNotLast)?;
        let suffix = label
            .strip_prefix("{user}-{tag}")
            .ok_or_else(|| TemplateError::LabelStart(label.to_string()))?;
        let valid = suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !suffix.ends_with('-');
        if !valid {
            return Err(TemplateError::Suffix(suffix.to_string()));
        }
        Ok(HostTemplate {
            suffix: suffix.to_string(),
        })
    }

    /// The literal text after `{user}-{tag}` in the label.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// How many characters the host tag may have after a host prefix of this length.
    pub fn tag_room(&self, host_prefix_len: usize) -> usize {
        MAX_LABEL.saturating_sub(host_prefix_len + 1 + self.suffix.len())
    }
}

/// The longest host prefix a configuration can produce: a plain prefix of `maxPrefixLength`
/// (mapped prefixes are no longer), or an encoded one.
pub fn longest_host_prefix(max_prefix_length: usize) -> usize {
    max_prefix_length.max(MAX_ENCODED_HOST_PREFIX)
}

/// Why no default host can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error(
        "no ingress host: set spec.ingress.host, or provisioner.domain in Portico's configuration"
    )]
    NoDomain,
    #[error("provisioner.ingressHostTemplate {template:?} {reason}; {TEMPLATE_RULE}")]
    Template {
        template: String,
        reason: TemplateError,
    },
    #[error("host prefix {host_prefix:?} leaves {room} characters for the tag in the 63-character first label of the host, and an encoded tag needs {MIN_ENCODED_HOST_TAG}: set spec.ingress.host")]
    NoRoom { host_prefix: String, room: usize },
    #[error("default ingress host {0:?} is not a valid lowercase DNS name (RFC 1123): set spec.ingress.host")]
    Invalid(String),
}

/// A lowercase RFC 1123 DNS name: labels of lowercase letters, digits and `-`, a letter or digit
/// at both ends, at most 63 characters each and 253 in all.
pub fn is_dns_host(host: &str) -> bool {
    host.len() <= MAX_NAME && host.split('.').all(super::label::is_dns_label)
}

/// The default host of `tag` for `prefix`: injective over (prefix, tag), always a valid
/// lowercase DNS name, always in the prefix's host space.
pub fn default_host(
    config: &ProvisionerConfig,
    prefix: &Prefix,
    tag: &str,
) -> Result<String, HostError> {
    if config.domain.is_empty() {
        return Err(HostError::NoDomain);
    }
    let template = HostTemplate::parse(&config.ingress_host_template).map_err(|reason| {
        HostError::Template {
            template: config.ingress_host_template.clone(),
            reason,
        }
    })?;
    let hp = host_prefix(prefix);
    let room = template.tag_room(hp.len());
    let ht = host_tag(tag, room).ok_or_else(|| HostError::NoRoom {
        host_prefix: hp.clone(),
        room,
    })?;
    let host = format!("{hp}-{ht}{}.{}", template.suffix, config.domain);
    if !is_dns_host(&host) {
        return Err(HostError::Invalid(host));
    }
    Ok(host)
}

/// Whose space a host is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostSpace {
    /// Not under the configured domain, or no domain is configured.
    Outside,
    /// Under the domain but in no prefix's space: the domain itself, `www.<domain>`, a first
    /// label that no host prefix can begin.
    Unowned,
    /// In the space of this host prefix (see [`host_prefix`]).
    Owned(String),
    /// Answers for names in prefix spaces it does not own: `*.<domain>`, a wildcard over an
    /// ancestor of the domain (`*.<parent>`: nginx and others match it at any depth), any `*` in
    /// the first label under the domain, and the empty host (an Ingress rule without `host`
    /// answers for every host).
    Wildcard,
}

/// Which space `host` falls in under `policy`'s domain. Case-insensitive (DNS), a trailing `.`
/// ignored. Only the domain matters: the template shape is fixed by [`TEMPLATE_RULE`].
///
/// An Exposure's empty `spec.ingress.host` means its default host, not "every host": callers
/// should look at [`default_host`] for it rather than pass `""` here.
pub fn host_space(policy: &Policy, host: &str) -> HostSpace {
    space_under(&policy.config.provisioner.domain, host)
}

fn space_under(domain: &str, host: &str) -> HostSpace {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return HostSpace::Outside;
    }
    let host = host.trim().to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.is_empty() || host == "*" {
        return HostSpace::Wildcard;
    }
    if host == domain {
        return HostSpace::Unowned;
    }
    if let Some(base) = host.strip_prefix("*.") {
        if base == domain || domain.ends_with(&format!(".{base}")) {
            return HostSpace::Wildcard;
        }
    }
    let Some(rest) = host
        .strip_suffix(domain.as_str())
        .and_then(|r| r.strip_suffix('.'))
    else {
        return HostSpace::Outside;
    };
    let adjacent = rest.rsplit('.').next().unwrap_or(rest);
    if adjacent.contains('*') {
        return HostSpace::Wildcard;
    }
    match owner_of_label(adjacent) {
        Some(hp) => HostSpace::Owned(hp),
        None => HostSpace::Unowned,
    }
}

/// The host prefix whose space a (lowercase) first label under the domain is in: `P-x…` with a
/// plain P, or `<stem>--<hash>-x…` with an encoded one, `x` a letter or digit.
fn owner_of_label(label: &str) -> Option<String> {
    let starts_alnum = |s: &str| s.starts_with(|c: char| c.is_ascii_alphanumeric());
    let (stem, rest) = label.split_once('-')?;
    if !is_lower_alnum(stem) {
        return None;
    }
    if starts_alnum(rest) {
        return Some(stem.to_string());
    }
    let after = rest.strip_prefix('-')?;
    if !(MIN_PREFIX_STEM..=STEM).contains(&stem.len()) {
        return None;
    }
    let hash = after.get(..PREFIX_HASH)?;
    if !hash.bytes().all(|b| BASE32_ALPHABET.contains(&b)) {
        return None;
    }
    let tail = after.get(PREFIX_HASH..)?.strip_prefix('-')?;
    starts_alnum(tail).then(|| format!("{stem}--{hash}"))
}

/// Why a user may not claim a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostClaimError {
    #[error("host {host:?} is in the host space of prefix {owner:?}, another user's: under {domain} every name whose first label starts with \"{owner}-\" is theirs. Your prefix {claimant:?} has the host prefix {yours:?}: use a host such as \"{yours}-web.{domain}\"")]
    Foreign {
        host: String,
        owner: String,
        claimant: String,
        yours: String,
        domain: String,
    },
    #[error("host {host:?} is a wildcard (or empty) and answers for other users' hosts under {domain}; only administrators may use it. Your prefix {claimant:?} has the host prefix {yours:?}: use a host such as \"{yours}-web.{domain}\"")]
    Wildcard {
        host: String,
        claimant: String,
        yours: String,
        domain: String,
    },
}

impl HostClaimError {
    /// A short machine-readable reason for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            HostClaimError::Foreign { .. } => "host-foreign",
            HostClaimError::Wildcard { .. } => "host-wildcard",
        }
    }
}

/// Whether the user with prefix `claimant` may claim `host` (in an Exposure, an Ingress rule or
/// TLS entry, an HTTPRoute): hosts outside the domain and unowned ones, yes; hosts in their own
/// host space, yes; another prefix's space or a wildcard over the spaces, no. Administrators are
/// the caller's to let through.
pub fn may_claim(policy: &Policy, claimant: &Prefix, host: &str) -> Result<(), HostClaimError> {
    let yours = host_prefix(claimant);
    let domain = || policy.config.provisioner.domain.clone();
    match host_space(policy, host) {
        HostSpace::Outside | HostSpace::Unowned => Ok(()),
        HostSpace::Owned(owner) if owner == yours => Ok(()),
        HostSpace::Owned(owner) => Err(HostClaimError::Foreign {
            host: host.to_string(),
            owner,
            claimant: claimant.to_string(),
            yours,
            domain: domain(),
        }),
        HostSpace::Wildcard => Err(HostClaimError::Wildcard {
            host: host.to_string(),
            claimant: claimant.to_string(),
            yours,
            domain: domain(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::prefix::PrefixRules;
    use crate::core::route::route_value;
    use std::collections::BTreeMap;

    fn prefix_with(user: &str, max_len: usize) -> Prefix {
        let map = BTreeMap::new();
        PrefixRules { map: &map, max_len }.prefix_for(user).unwrap()
    }

    fn prefix(user: &str) -> Prefix {
        prefix_with(user, 40)
    }

    fn policy() -> Policy {
        let mut c = Config::default();
        c.provisioner.domain = "apps.test".into();
        Policy::new(c)
    }

    fn host(user: &str, tag: &str) -> String {
        default_host(&policy().config.provisioner, &prefix(user), tag).unwrap()
    }

    fn first_label(host: &str) -> &str {
        host.split('.').next().unwrap_or_default()
    }

    #[test]
    fn plain_lowercase_user_and_tag_read_naturally() {
        assert_eq!(host("user1", "foobar"), "user1-foobar.apps.test");
        assert_eq!(host("user1", "web-1"), "user1-web-1.apps.test");
        assert_eq!(host_prefix(&prefix("user1")), "user1");
    }

    #[test]
    fn alice_and_alice_capitalised_get_different_hosts_and_spaces() {
        let lower = host("alice", "web");
        let upper = host("Alice", "web");
        assert_eq!(lower, "alice-web.apps.test");
        assert_ne!(lower, upper);
        let hp = host_prefix(&prefix("Alice"));
        assert!(hp.starts_with("alice--"), "{hp}");
        assert_eq!(hp.len(), 5 + 2 + PREFIX_HASH);
        assert!(upper.starts_with(&format!("{hp}-web.")), "{upper}");
        let p = policy();
        assert_eq!(host_space(&p, &upper), HostSpace::Owned(hp));
        assert_eq!(
            host_space(&p, &lower),
            HostSpace::Owned("alice".to_string())
        );
        assert!(may_claim(&p, &prefix("Alice"), &lower).is_err());
        assert!(may_claim(&p, &prefix("alice"), &upper).is_err());
    }

    #[test]
    fn hashed_prefixes_never_meet_plain_prefixes_with_dashed_tags() {
        // user "ab-x" is hashed to "ab_…"; its host prefix is "ab0--…", never "ab".
        let hashed = prefix("ab-x");
        assert!(hashed.as_str().starts_with("ab_"));
        let hp = host_prefix(&hashed);
        assert!(hp.starts_with("ab0--"), "{hp}");
        assert_ne!(host("ab-x", "y"), host("ab", "x-y"));
        let p = policy();
        assert_eq!(host_space(&p, &host("ab-x", "y")), HostSpace::Owned(hp));
        assert_eq!(
            host_space(&p, &host("ab", "x-y")),
            HostSpace::Owned("ab".to_string())
        );
        // A plain user whose tag begins like a hash cannot reach into the hashed space either.
        let forged = format!("ab-{}", &host("ab-x", "y")[5..]);
        assert_eq!(host_space(&p, &forged), HostSpace::Owned("ab".to_string()));
    }

    #[test]
    fn dotted_dashed_and_capitalised_tags_stay_apart() {
        let hosts = ["a.b", "a-b", "A-b", "a_b", "a--b", "A.B"].map(|t| host("user1", t));
        assert_eq!(hosts[1], "user1-a-b.apps.test");
        for (i, a) in hosts.iter().enumerate() {
            for b in &hosts[i + 1..] {
                assert_ne!(a, b);
            }
            assert!(is_dns_host(a), "{a}");
        }
        // `--` marks the encoded form, so a plain tag holding it is encoded too.
        assert!(first_label(&hosts[4]).starts_with("user1-a--"));
        assert_ne!(hosts[4], "user1-a--b.apps.test");
    }

    #[test]
    fn the_longest_prefix_and_the_longest_tag_fit_in_63() {
        let provisioner = policy().config.provisioner;
        // maxPrefixLength 46 leaves 16 for the tag in the route value and in the host.
        let long = "a".repeat(46);
        let p = prefix_with(&long, 46);
        for tag in ["b".repeat(16), "B".repeat(16), "b.c".repeat(5) + "d"] {
            assert!(route_value(&long, &p, &tag).is_ok());
            let h = default_host(&provisioner, &p, &tag).unwrap();
            assert!(first_label(&h).len() <= 63, "{h}");
            assert!(is_dns_host(&h), "{h}");
        }
        let full = default_host(&provisioner, &p, &"B".repeat(16)).unwrap();
        assert_eq!(first_label(&full).len(), 63, "{full}");
        // The longest encoded host prefix with the longest tag its route value allows.
        let capital = "A".repeat(46);
        let p = prefix_with(&capital, 46);
        let tag = "t".repeat(16);
        let h = default_host(&provisioner, &p, &tag).unwrap();
        assert_eq!(first_label(&h), format!("{}-{tag}", host_prefix(&p)));
        // A hashed prefix (22 characters, host prefix 23) with the longest tag its route value
        // allows (40): 23 + 1 + 40 > 63, so the tag is encoded; one character less fits plain.
        let p = prefix("alice@example.com");
        let tag = "t".repeat(62 - p.as_str().len());
        assert!(route_value("alice@example.com", &p, &tag).is_ok());
        let h = default_host(&provisioner, &p, &tag).unwrap();
        assert!(first_label(&h).len() <= 63 && first_label(&h).contains("-tttttttt--"));
        assert_ne!(h, default_host(&provisioner, &p, &tag[1..]).unwrap());
    }

    #[test]
    fn no_label_has_double_dash_at_the_idna_positions() {
        for user in ["A", "a", "Ab", "ab", "Abc", "a@b", "_x", "Ünïcode", "abc"] {
            for tag in ["x", "X", "a.b", "ab"] {
                let h = host(user, tag);
                assert_ne!(h.get(2..4), Some("--"), "{user}/{tag}: {h}");
                assert!(is_dns_host(&h), "{h}");
            }
        }
        assert_eq!(&host_prefix(&prefix("A"))[..5], "a00--");
    }

    #[test]
    fn hosts_fall_in_the_right_space() {
        let p = policy();
        let alice = host_prefix(&prefix("Alice"));
        for (h, want) in [
            ("user1-web.apps.test", HostSpace::Owned("user1".into())),
            ("USER1-Web.Apps.Test", HostSpace::Owned("user1".into())),
            ("user1-web.apps.test.", HostSpace::Owned("user1".into())),
            ("a.b.user1-web.apps.test", HostSpace::Owned("user1".into())),
            ("*.user1-web.apps.test", HostSpace::Owned("user1".into())),
            (&host("Alice", "x"), HostSpace::Owned(alice.clone())),
            (
                &format!("{alice}-anything.apps.test"),
                HostSpace::Owned(alice),
            ),
            ("apps.test", HostSpace::Unowned),
            ("www.apps.test", HostSpace::Unowned),
            ("user1.apps.test", HostSpace::Unowned),
            ("user1-.apps.test", HostSpace::Unowned),
            ("user1--web.apps.test", HostSpace::Unowned),
            ("ab--abcdefghijklmnop-x.apps.test", HostSpace::Unowned),
            ("abc--abcdefghijklmnop.apps.test", HostSpace::Unowned),
            ("abc--abcdefghijklmno1-x.apps.test", HostSpace::Unowned),
            ("xn--80ak6aa92e.apps.test", HostSpace::Unowned),
            ("user1-web.apps.test.evil", HostSpace::Outside),
            ("user1-web.evilapps.test", HostSpace::Outside),
            ("user1-web.other.test", HostSpace::Outside),
            ("*.apps.test", HostSpace::Wildcard),
            ("*.test", HostSpace::Wildcard),
            ("*.Apps.Test", HostSpace::Wildcard),
            ("us*.apps.test", HostSpace::Wildcard),
            ("", HostSpace::Wildcard),
            ("*", HostSpace::Wildcard),
            ("*.other.test", HostSpace::Outside),
        ] {
            assert_eq!(host_space(&p, h), want, "{h:?}");
        }
        assert_eq!(
            host_space(&Policy::default(), "user1-web.apps.test"),
            HostSpace::Outside
        );
    }

    #[test]
    fn claims_are_refused_with_what_to_use_instead() {
        let p = policy();
        let (alice, bob) = (prefix("alice"), prefix("bob"));
        assert_eq!(may_claim(&p, &alice, "alice-web.apps.test"), Ok(()));
        assert_eq!(may_claim(&p, &alice, "www.apps.test"), Ok(()));
        assert_eq!(may_claim(&p, &alice, "bob-web.example.org"), Ok(()));
        let err = may_claim(&p, &alice, "Bob-Web.apps.test").unwrap_err();
        assert_eq!(err.code(), "host-foreign");
        let msg = err.to_string();
        for needle in [
            "\"Bob-Web.apps.test\"",
            "\"bob\"",
            "\"bob-\"",
            "\"alice-web.apps.test\"",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        let err = may_claim(&p, &bob, "*.apps.test").unwrap_err();
        assert_eq!(err.code(), "host-wildcard");
        assert!(err.to_string().contains("administrators"), "{err}");
        let hashed = prefix("carol@example.com");
        let msg = may_claim(&p, &hashed, "bob-x.apps.test")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("\"{}-web.apps.test\"", host_prefix(&hashed))),
            "{msg}"
        );
    }

    #[test]
    fn templates_are_checked_against_the_rule() {
        assert_eq!(
            HostTemplate::parse("{user}-{tag}.{domain}").map(|t| t.suffix().to_string()),
            Ok(String::new())
        );
        assert_eq!(
            HostTemplate::parse("{user}-{tag}-web.{domain}").map(|t| t.suffix().to_string()),
            Ok("-web".to_string())
        );
        for (bad, want) in [
            ("{user}.{domain}", "{tag} 0 times"),
            ("{user}-{tag}-{tag}.{domain}", "{tag} 2 times"),
            ("{user}-{tag}.{domain}.{user}", "{user} 2 times"),
            ("{user}-{tag}.apps", "{domain} 0 times"),
            ("{user}-{tag}.{domain}.com", "does not end"),
            ("{tag}-{user}.{domain}", "does not start"),
            ("{tag}.{user}.{domain}", "does not start"),
            ("x{user}-{tag}.{domain}", "does not start"),
            ("www.{user}-{tag}.{domain}", "does not start"),
            ("{user}{tag}.{domain}", "does not start"),
            ("{user}-{tag}.x.{domain}", "after"),
            ("{user}-{tag}_x.{domain}", "after"),
            ("{user}-{tag}X.{domain}", "after"),
            ("{user}-{tag}-.{domain}", "after"),
        ] {
            let err = HostTemplate::parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn a_suffix_that_leaves_no_room_is_reported_not_truncated() {
        let mut c = policy().config.provisioner;
        c.ingress_host_template = format!("{{user}}-{{tag}}-{}.{{domain}}", "x".repeat(50));
        let err = default_host(&c, &prefix("user1"), "Web").unwrap_err();
        assert!(matches!(err, HostError::NoRoom { .. }), "{err}");
        // The plain tag still fits where it does.
        assert!(default_host(&c, &prefix("user1"), "web").is_ok());
        c.domain.clear();
        assert_eq!(
            default_host(&c, &prefix("user1"), "web"),
            Err(HostError::NoDomain)
        );
    }
}
