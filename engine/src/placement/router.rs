//! PLACEHOLDER
#![allow(missing_docs)]
pub struct Router;
pub struct Snapshot;
