//! Event counts over the last minute, for `hookd stats`.
//!
//! Sixty one-second buckets in a ring; a bucket is reset when its second
//! comes round again. Reading sums the buckets of the last 60 seconds, so
//! the figure is "per minute, sliding". Cheap enough to bump on every
//! submission and attempt.

use std::sync::Mutex;

use crate::clock;

const SECONDS: usize = 60;

/// What is counted.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Submitted = 0,
    Delivered = 1,
    AttemptFailed = 2,
}

const EVENTS: usize = 3;

/// Counts per second for the last minute.
pub struct Recent {
    /// For each slot: the unix second it holds and its counts.
    slots: Mutex<[(u64, [u64; EVENTS]); SECONDS]>,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent { slots: Mutex::new([(0, [0; EVENTS]); SECONDS]) }
    }
}

impl Recent {
    pub fn record(&self, event: Event, count: u64) {
        self.record_at(event, count, clock::now_ms() / 1000);
    }

    /// Totals of the last 60 seconds: submitted, delivered, failed attempts.
    pub fn last_minute(&self) -> [u64; EVENTS] {
        self.last_minute_at(clock::now_ms() / 1000)
    }

    fn record_at(&self, event: Event, count: u64, second: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = &mut slots[(second % SECONDS as u64) as usize];
        if slot.0 != second {
            *slot = (second, [0; EVENTS]);
        }
        slot.1[event as usize] += count;
    }

    fn last_minute_at(&self, now: u64) -> [u64; EVENTS] {
        let slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut totals = [0; EVENTS];
        for (second, counts) in slots.iter() {
            if now.saturating_sub(*second) < SECONDS as u64 && *second <= now {
                for (total, count) in totals.iter_mut().zip(counts) {
                    *total += count;
                }
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_after_a_minute() {
        let recent = Recent::default();
        recent.record_at(Event::Submitted, 3, 1000);
        recent.record_at(Event::Delivered, 2, 1030);
        recent.record_at(Event::Submitted, 1, 1059);

        assert_eq!(recent.last_minute_at(1059), [4, 2, 0]);
        assert_eq!(recent.last_minute_at(1060), [1, 2, 0]);
        assert_eq!(recent.last_minute_at(1200), [0, 0, 0]);

        // The slot of second 1000 is reused by 1060 and starts from zero.
        recent.record_at(Event::AttemptFailed, 5, 1060);
        assert_eq!(recent.last_minute_at(1060), [1, 2, 5]);
    }
}
