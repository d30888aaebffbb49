//! What the SQL backends share.

pub(crate) mod statement;
