//! Portico's fuzz targets' shared code: the invariants ([`checks`]) and the structured review
//! generator ([`fields`]). The targets themselves are in `fuzz_targets/`.
#![forbid(unsafe_code)]

pub mod checks;
pub mod fields;
