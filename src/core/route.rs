//! Tags and route values: `<prefix>-<tag>`, a valid label value or a clear reason why not.

use std::fmt;

use super::label::{validate_name_part, LabelError, MAX_LABEL_VALUE};
use super::prefix::Prefix;

/// A route value: the value of the routing labels, `<prefix>-<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteValue(String);

impl RouteValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix part of a label value: everything before the first `-`. `None` when the value
    /// has no `-` and so cannot be a route value.
    pub fn prefix_of(value: &str) -> Option<&str> {
        value
            .split_once('-')
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty())
    }
}

impl fmt::Display for RouteValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a tag cannot form a route value for a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("the ipaddr tag is empty; ask for a tag such as \"foobar\"")]
    Empty,
    #[error("ipaddr tag {tag:?} is {len} characters, but user {user:?} (prefix {prefix:?}) has room for at most {budget}: the label value \"<prefix>-<tag>\" may have 63 characters")]
    TooLong {
        tag: String,
        user: String,
        prefix: String,
        len: usize,
        budget: usize,
    },
    #[error("ipaddr tag {tag:?} is not a valid label value: it {reason}; a tag may have up to {budget} of the characters A-Z a-z 0-9 '-' '_' '.', starting and ending with a letter or digit")]
    Invalid {
        tag: String,
        reason: LabelError,
        budget: usize,
    },
}

impl TagError {
    /// A short machine-readable reason for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            TagError::Empty => "tag-empty",
            TagError::TooLong { .. } => "tag-too-long",
            TagError::Invalid { .. } => "tag-invalid",
        }
    }
}

/// How many characters a tag may have after this prefix and the `-` separator.
pub fn tag_budget(prefix: &Prefix) -> usize {
    MAX_LABEL_VALUE.saturating_sub(prefix.as_str().len() + 1)
}

/// `<prefix>-<tag>`, when the tag is itself a valid, non-empty label value that fits.
pub fn route_value(user: &str, prefix: &Prefix, tag: &str) -> Result<RouteValue, TagError> {
    let budget = tag_budget(prefix);
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    match validate_name_part(tag) {
        Ok(()) | Err(LabelError::TooLong(_)) => {}
        Err(reason) => {
            return Err(TagError::Invalid {
                tag: tag.to_string(),
                reason,
                budget,
            })
        }
    }
    if tag.len() > budget {
        return Err(TagError::TooLong {
            tag: tag.to_string(),
            user: user.to_string(),
            prefix: prefix.to_string(),
            len: tag.len(),
            budget,
        });
    }
    Ok(RouteValue(format!("{prefix}-{tag}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::label::validate_label_value;
    use crate::core::prefix::PrefixRules;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn prefix(user: &str) -> Prefix {
        let map = BTreeMap::new();
        PrefixRules {
            map: &map,
            max_len: 40,
        }
        .prefix_for(user)
        .unwrap()
    }

    #[test]
    fn plain_user_and_tag_read_naturally() {
        assert_eq!(
            route_value("user1", &prefix("user1"), "foobar")
                .unwrap()
                .as_str(),
            "user1-foobar"
        );
    }

    #[test]
    fn tag_exactly_at_budget_passes_and_one_over_fails() {
        let p = prefix("user1");
        let budget = tag_budget(&p);
        assert_eq!(budget, 63 - 6);
        let at = "a".repeat(budget);
        assert_eq!(route_value("user1", &p, &at).unwrap().as_str().len(), 63);
        let over = "a".repeat(budget + 1);
        let err = route_value("user1", &p, &over).unwrap_err();
        assert!(
            err.to_string().contains(&format!("at most {budget}")),
            "{err}"
        );
    }

    #[test]
    fn bad_tags_are_refused_with_reasons() {
        let p = prefix("user1");
        assert_eq!(route_value("user1", &p, ""), Err(TagError::Empty));
        for tag in ["-x", "x-", "_x", "x_", ".x", "x.", "a b", "a/b", "ü"] {
            let err = route_value("user1", &p, tag).unwrap_err();
            assert_eq!(err.code(), "tag-invalid", "{tag}: {err}");
        }
    }

    #[test]
    fn tags_are_case_sensitive() {
        let p = prefix("user1");
        assert_ne!(
            route_value("user1", &p, "Foo").unwrap(),
            route_value("user1", &p, "foo").unwrap()
        );
    }

    #[test]
    fn the_naive_collision_cannot_happen() {
        // user "a-b" + tag "c" versus user "a" + tag "b-c".
        let one = route_value("a-b", &prefix("a-b"), "c").unwrap();
        let two = route_value("a", &prefix("a"), "b-c").unwrap();
        assert_ne!(one, two);
        assert_eq!(RouteValue::prefix_of(two.as_str()), Some("a"));
        assert_eq!(
            RouteValue::prefix_of(one.as_str()),
            Some(prefix("a-b").as_str())
        );
    }

    proptest! {
        #[test]
        fn route_values_are_valid_labels_and_unambiguous(
            u1 in ".{1,40}", t1 in "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
            u2 in ".{1,40}", t2 in "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
        ) {
            let (p1, p2) = (prefix(&u1), prefix(&u2));
            let r1 = route_value(&u1, &p1, &t1);
            let r2 = route_value(&u2, &p2, &t2);
            if let (Ok(r1), Ok(r2)) = (&r1, &r2) {
                prop_assert!(validate_label_value(r1.as_str()).is_ok());
                prop_assert_eq!(RouteValue::prefix_of(r1.as_str()), Some(p1.as_str()));
                prop_assert_eq!(u1 == u2 && t1 == t2, r1 == r2);
            }
        }
    }
}
