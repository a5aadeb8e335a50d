//! Shell blocks of the docs that tests in other files run (see `documented.rs`): file, first
//! command line, the test that runs it.

pub(crate) const CLAIMS: &[(&str, &str, &str)] = &[];
