//! Paging arithmetic shared by the backends.
//!
//! Timestamps never decrease with the sequence, so the entries in a time range are one
//! contiguous run of sequence numbers. A backend finds that run with two index lookups (or takes
//! `1..=head` without a time range); which part of the run one page shows is the same arithmetic
//! for every backend, and lives here, so that no backend ever counts or skips entries one by one.

use super::{Order, PageQuery, StoreError};

/// An inclusive, non-empty run of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SequenceRange {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

impl SequenceRange {
    /// `None` when the run is empty (`first > last`).
    pub(crate) fn new(first: u64, last: u64) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    /// How many entries the run holds; sequences start at 1, so this cannot overflow.
    pub(crate) fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The part of the run that `page` (1-based) of `size` entries shows in `order`, or `None`
    /// past the end. Both ends of the result are inclusive; a descending page starts at `last`.
    pub(crate) fn page(&self, page: u64, size: u64, order: Order) -> Option<Self> {
        let skipped = page.checked_sub(1)?.checked_mul(size)?;
        let remaining = self.len().checked_sub(skipped).filter(|&left| left > 0)?;
        let shown = size.min(remaining);
        Some(match order {
            Order::Asc => {
                let first = self.first + skipped;
                Self {
                    first,
                    last: first + (shown - 1),
                }
            }
            Order::Desc => {
                let last = self.last - skipped;
                Self {
                    first: last - (shown - 1),
                    last,
                }
            }
        })
    }
}

/// Rejects what no backend can answer: page or size 0.
pub(crate) fn validate(query: &PageQuery) -> Result<(), StoreError> {
    if query.page == 0 {
        return Err(StoreError::InvalidQuery(
            "page numbers start at 1".to_owned(),
        ));
    }
    if query.size == 0 {
        return Err(StoreError::InvalidQuery(
            "page size must be at least 1".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, last: u64) -> SequenceRange {
        SequenceRange::new(first, last).unwrap()
    }

    #[test]
    fn an_inverted_run_is_empty() {
        assert_eq!(SequenceRange::new(5, 4), None);
        assert_eq!(run(4, 4).len(), 1);
    }

    #[test]
    fn ascending_pages_walk_up_from_the_first_sequence() {
        let matched = run(3, 9);
        assert_eq!(matched.page(1, 3, Order::Asc), Some(run(3, 5)));
        assert_eq!(matched.page(2, 3, Order::Asc), Some(run(6, 8)));
        assert_eq!(matched.page(3, 3, Order::Asc), Some(run(9, 9)));
        assert_eq!(matched.page(4, 3, Order::Asc), None);
    }

    #[test]
    fn descending_pages_walk_down_from_the_last_sequence() {
        let matched = run(3, 9);
        assert_eq!(matched.page(1, 3, Order::Desc), Some(run(7, 9)));
        assert_eq!(matched.page(2, 3, Order::Desc), Some(run(4, 6)));
        assert_eq!(matched.page(3, 3, Order::Desc), Some(run(3, 3)));
        assert_eq!(matched.page(4, 3, Order::Desc), None);
    }

    #[test]
    fn a_page_larger_than_the_run_shows_all_of_it() {
        assert_eq!(run(1, 2).page(1, 1000, Order::Desc), Some(run(1, 2)));
    }

    #[test]
    fn absurd_page_numbers_are_past_the_end_not_an_overflow() {
        assert_eq!(run(1, 10).page(u64::MAX, u64::MAX, Order::Asc), None);
        assert_eq!(run(1, 10).page(0, 5, Order::Asc), None);
    }

    #[test]
    fn page_and_size_zero_are_invalid() {
        let mut query = PageQuery {
            pid: "p".to_owned(),
            page: 1,
            size: 1,
            order: Order::Asc,
            from_ms: None,
            to_ms: None,
            max_bytes: usize::MAX,
        };
        assert!(validate(&query).is_ok());
        query.page = 0;
        assert!(matches!(validate(&query), Err(StoreError::InvalidQuery(_))));
        query.page = 1;
        query.size = 0;
        assert!(matches!(validate(&query), Err(StoreError::InvalidQuery(_))));
    }
}
