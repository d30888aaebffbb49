//! Shared helpers of synckit's integration tests and examples.
