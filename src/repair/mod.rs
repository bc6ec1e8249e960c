//! `DataRepairer`: repair corrupt pages from verified replica copies.

pub mod merkle;

pub use merkle::{range_digest, RangeDigest};
