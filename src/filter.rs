//! Filters on the global log: by category, by aggregate, by event type —
//! and the bounds of a filtered page of `read_all` (the read itself is the
//! store's: `store/reads.rs`).
//!
//! # Matching
//!
//! A [`Filter`] matches an event when every criterion given matches:
//! - `category`: the event's aggregate id is the category itself or starts
//!   with `<category>-` (`user` matches `user` and `user-123`, not
//!   `users-1`);
//! - `aggregate_id`: the event's aggregate id is exactly that;
//! - `event_types`: the event's type is one of them.
//!
//! # Pages
//!
//! A filtered read looks at the log's events in order from `from` and
//! stops once it has `max_count` matches, at the head, or after
//! [`LOOK_LIMIT`] events; `next_sequence` is where the next page starts
//! (`from` plus the number of events looked at). An aggregate filter reads
//! the aggregate's own positions (a binary search, then only its events),
//! a category filter the category index's (`store/categories.rs`), so their
//! cost follows what they return, not the size of the log; an event-type
//! filter alone scans within the look limit. All give the scan's page.

use crate::event::RecordedEvent;
use crate::types::SequenceNumber;

/// Most events one filtered read looks at.
pub const LOOK_LIMIT: u64 = 100_000;

/// Which events a filtered read or a subscription wants (see the module
/// docs). The empty filter matches every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Aggregates named `category` or `category-…`.
    pub category: Option<String>,
    /// One aggregate.
    pub aggregate_id: Option<String>,
    /// Event types; `None` means any.
    pub event_types: Option<Vec<String>>,
}

impl Filter {
    /// Whether no criterion is given.
    pub fn is_empty(&self) -> bool {
        self.category.is_none() && self.aggregate_id.is_none() && self.event_types.is_none()
    }

    /// Whether an event of `aggregate_id` with `event_type` matches.
    pub fn matches(&self, aggregate_id: &str, event_type: &str) -> bool {
        self.category
            .as_deref()
            .is_none_or(|c| in_category(aggregate_id, c))
            && self
                .aggregate_id
                .as_deref()
                .is_none_or(|a| a == aggregate_id)
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.iter().any(|t| t == event_type))
    }

    /// Whether `event` matches.
    pub fn matches_event(&self, event: &RecordedEvent<'_>) -> bool {
        self.matches(event.aggregate_id(), event.event_type())
    }
}

/// `user` holds `user` and `user-…`, not `users-…`.
fn in_category(aggregate_id: &str, category: &str) -> bool {
    aggregate_id
        .strip_prefix(category)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// A filtered page of the global log, as planned: which events it looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageBounds {
    /// First sequence number looked at (at least 1).
    pub from: u64,
    /// Last sequence number that may be looked at (`from - 1` when none).
    pub last: u64,
}

impl PageBounds {
    /// The bounds of a page from `from` with the log at `head`.
    pub fn new(from: SequenceNumber, head: SequenceNumber) -> PageBounds {
        let from = from.0.max(1);
        let last = head.0.min(from.saturating_add(LOOK_LIMIT - 1));
        PageBounds {
            from,
            last: last.max(from - 1),
        }
    }

    /// Where the next page starts when the read returned `found` matches of
    /// `max_count` wanted, the last of them at `last_match`.
    pub fn next_sequence(&self, max_count: u64, found: u64, last_match: Option<u64>) -> u64 {
        match last_match {
            // Stopped at its `max_count`-th match.
            Some(seq) if found == max_count => seq + 1,
            // `max_count` 0: stopped before looking at anything.
            _ if max_count == 0 => self.from,
            // Looked at everything up to the head or the look limit.
            _ => self.last + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_stop_at_a_dash() {
        assert!(in_category("user", "user"));
        assert!(in_category("user-1", "user"));
        assert!(in_category("user-eu-1", "user-eu"));
        assert!(!in_category("users-1", "user"));
        assert!(!in_category("use", "user"));
        assert!(!in_category("user_1", "user"));
    }

    #[test]
    fn every_given_criterion_must_match() {
        let f = Filter {
            category: Some("user".into()),
            aggregate_id: None,
            event_types: Some(vec!["A".into(), "B".into()]),
        };
        assert!(f.matches("user-1", "B"));
        assert!(!f.matches("user-1", "C"));
        assert!(!f.matches("order-1", "A"));
        assert!(Filter::default().matches("x", "y"));
    }

    #[test]
    fn next_sequence_counts_what_was_looked_at() {
        let b = PageBounds::new(SequenceNumber(0), SequenceNumber(10));
        assert_eq!((b.from, b.last), (1, 10));
        assert_eq!(b.next_sequence(3, 3, Some(7)), 8);
        assert_eq!(b.next_sequence(3, 2, Some(9)), 11);
        assert_eq!(b.next_sequence(0, 0, None), 1);
        let past = PageBounds::new(SequenceNumber(20), SequenceNumber(10));
        assert_eq!(past.next_sequence(5, 0, None), 20);
        let long = PageBounds::new(SequenceNumber(5), SequenceNumber(1_000_000));
        assert_eq!(long.last, 5 + LOOK_LIMIT - 1);
        assert_eq!(long.next_sequence(5, 1, Some(6)), 5 + LOOK_LIMIT);
    }
}
