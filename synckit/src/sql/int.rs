//! The one policy for integers between Rust and SQL (`bigint` is signed;
//! versions, counts and sizes are not).
//!
//! - An event's own positions are checked: a row whose version or stream
//!   version is not positive is unreadable ([`super::rows`]).
//! - Every other stored integer that cannot be negative (a count, a
//!   checkpoint's position, a fence, a stream head) reads as `0` when it is:
//!   for a position that means "from the start", which re-reads rather than
//!   skips.
//! - Values going in saturate at `i64::MAX` (no event has such a version,
//!   no page holds so many rows).
//!
//! The crate denies clippy's cast lints, so a conversion goes through here
//! or through `TryFrom`.

/// A stored integer that cannot be negative: a negative one as `0`.
pub(crate) fn nonnegative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count or position as a SQL `bigint`, saturating.
pub(crate) fn to_sql(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// A length as a count.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn len(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_stored_integers_read_as_zero_and_large_ones_saturate() {
        assert_eq!(nonnegative(-1), 0);
        assert_eq!(nonnegative(i64::MIN), 0);
        assert_eq!(nonnegative(7), 7);
        assert_eq!(to_sql(u64::MAX), i64::MAX);
        assert_eq!(to_sql(usize::MAX), i64::MAX);
        assert_eq!(to_sql(3usize), 3);
    }
}
