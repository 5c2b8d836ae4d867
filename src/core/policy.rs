//! The configuration as decisions use it: keys computed once, prefix rules at hand.

use crate::config::Config;

use super::prefix::{Prefix, PrefixError, PrefixRules};

/// What every decision consults. Built once from a checked [`Config`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub config: Config,
    /// `<domain>/user`
    pub user_annotation: String,
    /// `<domain>/ipaddr`
    pub tag_annotation: String,
    /// `<domain>/owner`
    pub owner_label: String,
}

impl Policy {
    pub fn new(config: Config) -> Self {
        Self {
            user_annotation: config.user_annotation(),
            tag_annotation: config.tag_annotation(),
            owner_label: config.owner_label(),
            config,
        }
    }

    pub fn job_label(&self) -> &str {
        &self.config.labels.job
    }

    pub fn pod0_label(&self) -> &str {
        &self.config.labels.pod0
    }

    /// The prefix of a user under this configuration.
    pub fn prefix_for(&self, user: &str) -> Result<Prefix, PrefixError> {
        PrefixRules {
            map: &self.config.identity.prefixes,
            max_len: self.config.identity.max_prefix_length,
        }
        .prefix_for(user)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(Config::default())
    }
}
