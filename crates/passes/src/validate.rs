//! Validation after every pass, as tract checks consistency after each of
//! its optimiser passes: every node's inputs exist and its output types are
//! what inference gives. It is cheap next to any pass (one walk with shape
//! inference), so it runs in every build, not only in tests and debug
//! builds: an invalid graph is an error naming the pass and the node, never
//! a bad model written to disk.

use fuse_ir::Graph;

use crate::PassError;

/// Validates `g` after the pass named `pass`.
pub fn validated(pass: &'static str, g: &Graph) -> Result<(), PassError> {
    g.validate().map_err(|error| PassError::Invalid { pass, error })
}
