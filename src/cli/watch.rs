//! `hookd watch`: one line per new delivery or change of state or
//! attempts, by polling the newest page of the list.
//!
//! The API has no change feed, so this module keeps what it saw of each
//! delivery on the page ([`Tracker`]) and compares every poll with it.
//! Deliveries already there when the watch starts are taken as they are,
//! without a line; one created since is new even if the first poll is the
//! one that finds it. A delivery that leaves the page (it no longer
//! matches `--state`, or newer ones pushed it off) is looked up once by id
//! so its last change is still shown. Several changes between two polls
//! show as one line, from the state seen before to the state seen now.
//!
//! FIXME: a delivery that left the page is looked up once and then no
//! longer followed, so a watch without `--state` on a busy daemon misses
//! the later changes of older deliveries; a list filter on `updated_at`
//! ("changed since T") in the API would let each poll ask for exactly the
//! changes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::json;

use crate::cli::output::{self, Palette};
use crate::cli::query::{self, Filter};
use crate::cli::reply::{Attempt, Page, View};
use crate::cli::{Failure, encode};
use crate::client::{Client, ClientError};

/// How many deliveries that left the page are looked up by id per poll;
/// the rest are forgotten, which bounds the requests a poll makes.
const LOOKUPS_PER_POLL: usize = 50;

/// How many deliveries that left the page are remembered, so one that
/// comes back (a dead one retried and dead again) shows its real change.
const DEPARTED_CAP: usize = 10_000;

/// The flags of `hookd watch`.
#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Milliseconds between polls.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub interval_ms: u64,
    /// How many of the newest deliveries each poll looks at.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Exit 0 after printing this many change lines.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit 0 after this many seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub for_secs: Option<u64>,
}

/// What the watch last saw of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    state: String,
    attempts: usize,
}

impl Seen {
    fn of(view: &View) -> Seen {
        Seen { state: view.state.clone(), attempts: view.attempts.len() }
    }
}

/// One line of output: a delivery seen for the first time, or changed.
#[derive(Debug)]
pub struct Change {
    /// When it changed (the delivery's `updated_at`), unix ms.
    at: u64,
    id: String,
    /// The state seen before; none for a new delivery.
    from: Option<String>,
    /// The state now, or `purged` for one that no longer exists.
    to: String,
    attempts: usize,
    last: Option<Attempt>,
    next_attempt_at: Option<u64>,
    url: String,
    key: Option<String>,
}

impl Change {
    fn of(view: &View, from: Option<String>) -> Change {
        Change {
            at: view.updated_at,
            id: view.id.clone(),
            from,
            to: view.state.clone(),
            attempts: view.attempts.len(),
            last: view.last_attempt().cloned(),
            next_attempt_at: view.next_attempt_at,
            url: view.url.clone(),
            key: view.key.clone(),
        }
    }

    /// `14:03:09  01J…  pending → delivered  (attempt 1, 200)`.
    pub fn line(&self, now: u64, palette: Palette) -> String {
        let from = match &self.from {
            Some(state) => palette.state(state),
            None => "new".to_owned(),
        };
        let mut notes = Vec::new();
        if let Some(attempt) = &self.last {
            notes.push(format!("attempt {}, {}", attempt.number, attempt.outcome()));
        }
        if let Some(at) = self.next_attempt_at.filter(|_| self.to == "pending") {
            notes.push(format!("next {}", output::relative(at, now)));
        }
        if self.from.is_none() {
            notes.push(self.url.clone());
        }
        let notes = match notes.is_empty() {
            true => String::new(),
            false => format!("  ({})", notes.join(", ")),
        };
        format!(
            "{}  {}  {from} → {}{notes}",
            output::local_clock(self.at),
            self.id,
            palette.state(&self.to)
        )
    }

    /// The `--json` form: one object per line.
    pub fn json(&self) -> String {
        let last = self.last.as_ref().map(|attempt| {
            json!({
                "number": attempt.number,
                "started_at": attempt.started_at,
                "duration_ms": attempt.duration_ms,
                "status": attempt.status,
                "error": attempt.error,
            })
        });
        json!({
            "at": self.at,
            "id": self.id,
            "from": self.from,
            "to": self.to,
            "attempts": self.attempts,
            "last_attempt": last,
            "next_attempt_at": self.next_attempt_at,
            "url": self.url,
            "key": self.key,
        })
        .to_string()
    }
}

/// What the watch knows, and the comparison of each poll with it.
#[derive(Debug)]
pub struct Tracker {
    /// When the watch started, unix ms: deliveries created before it and
    /// found on the first poll are taken as they are.
    started_at: u64,
    first_poll: bool,
    /// The deliveries on the last page.
    on_page: HashMap<String, Seen>,
    /// Deliveries that left the page, oldest departure first, bounded by
    /// [`DEPARTED_CAP`].
    departed: HashMap<String, Seen>,
    departure_order: VecDeque<String>,
}

impl Tracker {
    pub fn new(started_at: u64) -> Tracker {
        Tracker {
            started_at,
            first_poll: true,
            on_page: HashMap::new(),
            departed: HashMap::new(),
            departure_order: VecDeque::new(),
        }
    }

    /// Compares a page with what was seen; returns the changes, oldest
    /// first, and the ids that left the page, to be looked up with
    /// [`Tracker::settle`].
    pub fn observe(&mut self, page: &Page) -> (Vec<Change>, Vec<String>) {
        let mut changes = Vec::new();
        let mut now_on_page = HashMap::with_capacity(page.deliveries.len());

        // Pages are newest first; lines read better in the order things
        // happened.
        for view in page.deliveries.iter().rev() {
            let before = self.on_page.remove(&view.id).or_else(|| self.departed.remove(&view.id));
            let seen = Seen::of(view);
            match before {
                Some(before) if before != seen => {
                    changes.push(Change::of(view, Some(before.state)))
                }
                Some(_) => {}
                None if self.first_poll && view.created_at < self.started_at => {}
                None => changes.push(Change::of(view, None)),
            }
            now_on_page.insert(view.id.clone(), seen);
        }

        let left: Vec<String> = self.on_page.keys().cloned().collect();
        for id in &left {
            if let Some(seen) = self.on_page.remove(id) {
                self.depart(id.clone(), seen);
            }
        }
        self.on_page = now_on_page;
        self.first_poll = false;
        changes.sort_by_key(|change| change.at);
        (changes, left)
    }

    /// The change of a delivery that left the page, from its own view, or
    /// none when it is not found (`purged` is then reported) or unchanged.
    pub fn settle(&mut self, id: &str, found: Option<&View>, now: u64) -> Option<Change> {
        let before = self.departed.get(id)?.clone();
        let Some(view) = found else {
            self.departed.remove(id);
            return Some(Change {
                at: now,
                id: id.to_owned(),
                from: Some(before.state),
                to: "purged".to_owned(),
                attempts: before.attempts,
                last: None,
                next_attempt_at: None,
                url: String::new(),
                key: None,
            });
        };

        let seen = Seen::of(view);
        if seen == before {
            return None;
        }
        self.departed.insert(id.to_owned(), seen);
        Some(Change::of(view, Some(before.state)))
    }

    fn depart(&mut self, id: String, seen: Seen) {
        if self.departed.insert(id.clone(), seen).is_none() {
            self.departure_order.push_back(id);
        }
        while self.departed.len() > DEPARTED_CAP {
            let Some(oldest) = self.departure_order.pop_front() else { break };
            self.departed.remove(&oldest);
        }
        if self.departure_order.len() > 2 * DEPARTED_CAP {
            let live: HashSet<&String> = self.departed.keys().collect();
            self.departure_order.retain(|id| live.contains(id));
        }
    }
}

/// Polls and prints until `--count` lines, `--for-secs`, Ctrl-C, or a
/// closed stdout.
pub async fn run(
    client: &Client,
    args: &WatchArgs,
    json: bool,
    palette: Palette,
) -> Result<(), Failure> {
    let interval = Duration::from_millis(args.interval_ms);
    let deadline =
        args.for_secs.map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let mut tracker = Tracker::new(output::now_ms());
    let mut printed = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        for change in poll(client, args, &mut tracker).await? {
            let text = if json { change.json() } else { change.line(output::now_ms(), palette) };
            if !output::print(&text) {
                return Ok(());
            }
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                return Ok(());
            }
        }

        let wake = tokio::time::Instant::now() + interval;
        let wake = deadline.map_or(wake, |deadline| wake.min(deadline));
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep_until(wake) => {}
        }
        if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            return Ok(());
        }
    }
}

/// One poll: the page, then a look-up of what left it.
async fn poll(
    client: &Client,
    args: &WatchArgs,
    tracker: &mut Tracker,
) -> Result<Vec<Change>, Failure> {
    let page = query::page(client, &args.filter, usize::from(args.limit), None).await?;
    let (mut changes, left) = tracker.observe(&page);

    for id in left.iter().take(LOOKUPS_PER_POLL) {
        let target = format!("/v1/deliveries/{}", encode(id));
        let found = match client.get(&target).await {
            Ok(reply) => Some(reply.parse::<View>(&target)?),
            Err(ClientError::Refused { status: 404, .. }) => None,
            Err(error) => return Err(error.into()),
        };
        changes.extend(tracker.settle(id, found.as_ref(), output::now_ms()));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, state: &str, attempts: usize, created_at: u64) -> View {
        View {
            id: id.into(),
            state: state.into(),
            created_at,
            updated_at: created_at + attempts as u64,
            attempts: (1..=attempts)
                .map(|number| Attempt {
                    number: number as u32,
                    status: Some(500),
                    ..Attempt::default()
                })
                .collect(),
            ..View::default()
        }
    }

    fn page(views: Vec<View>) -> Page {
        Page { deliveries: views, next_cursor: None }
    }

    #[test]
    fn the_first_poll_is_quiet_except_for_deliveries_made_since_the_start() {
        let mut tracker = Tracker::new(1_000);

        let (changes, left) =
            tracker.observe(&page(vec![view("b", "pending", 0, 1_500), view("a", "dead", 4, 10)]));

        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].id.as_str(), changes[0].from.as_ref()), ("b", None));
        assert!(left.is_empty());
    }

    #[test]
    fn a_change_of_state_or_attempts_is_one_line() {
        let mut tracker = Tracker::new(1_000);
        tracker.observe(&page(vec![view("a", "pending", 0, 10)]));

        let (retried, _) = tracker.observe(&page(vec![view("a", "pending", 1, 10)]));
        let (same, _) = tracker.observe(&page(vec![view("a", "pending", 1, 10)]));
        let (done, _) = tracker.observe(&page(vec![view("a", "delivered", 2, 10)]));

        assert_eq!(retried.len(), 1);
        assert!(same.is_empty());
        assert_eq!(done[0].from.as_deref(), Some("pending"));
        assert_eq!(done[0].to, "delivered");
        let line = done[0].line(0, Palette::for_stdout(output::ColorChoice::Never));
        assert!(line.contains("a  pending → delivered  (attempt 2, 500)"), "{line}");
    }

    #[test]
    fn a_delivery_that_leaves_the_page_is_settled_by_its_own_view() {
        let mut tracker = Tracker::new(1_000);
        tracker.observe(&page(vec![view("a", "pending", 0, 10)]));

        let (changes, left) = tracker.observe(&page(vec![]));
        let delivered = view("a", "delivered", 1, 10);

        assert!(changes.is_empty());
        assert_eq!(left, ["a"]);
        assert_eq!(tracker.settle("a", Some(&delivered), 5).unwrap().to, "delivered");
        assert!(tracker.settle("a", Some(&delivered), 5).is_none());
        assert_eq!(tracker.settle("a", None, 5).unwrap().to, "purged");
    }
}
