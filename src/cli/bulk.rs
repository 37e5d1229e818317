//! `hookd retry --state dead ...` and `hookd cancel --state pending ...`:
//! one action over every delivery a filter matches.
//!
//! The matching ids are read first (newest first, at most
//! [`MAX_ROWS`](super::query::MAX_ROWS)), so the total is known and the
//! action cannot chase deliveries it has itself changed; then the action
//! is asked of the daemon one delivery at a time. Refusals (in flight,
//! already finished, purged meanwhile) are counted by their API code and
//! do not stop the run; losing the daemon does. Progress goes to stderr
//! only when stderr is a terminal; the summary goes to stdout.
//!
//! FIXME: each delivery costs one request and one durable commit, so a
//! run over 100k deliveries takes minutes; a bulk endpoint in the API that
//! changes a filter's matches in batched commits would make it seconds.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use hyper::Method;
use serde::Serialize;

use crate::cli::output::{self, Palette};
use crate::cli::query::{self, Filter, MAX_ROWS, StateName};
use crate::cli::{Failure, encode};
use crate::client::{Client, ClientError};

/// How often the progress line is redrawn at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What a bulk operation does to each delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Retry,
    Cancel,
}

impl Action {
    /// The verb as typed.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
        }
    }

    /// The verb as a result, for progress and summaries.
    pub fn done(self) -> &'static str {
        match self {
            Action::Retry => "requeued",
            Action::Cancel => "cancelled",
        }
    }

    /// The API call for one delivery.
    pub fn request(self, id: &str) -> (Method, String) {
        match self {
            Action::Retry => (Method::POST, format!("/v1/deliveries/{}/retry", encode(id))),
            Action::Cancel => (Method::DELETE, format!("/v1/deliveries/{}", encode(id))),
        }
    }

    /// The states the daemon accepts the action for; a bulk filter on
    /// any other state could only be refused, delivery by delivery.
    fn accepts(self, state: StateName) -> bool {
        match self {
            Action::Retry => matches!(state, StateName::Dead | StateName::Delivered),
            Action::Cancel => state == StateName::Pending,
        }
    }

    fn accepted_states(self) -> &'static str {
        match self {
            Action::Retry => "dead or delivered",
            Action::Cancel => "pending",
        }
    }
}

/// Checks a bulk filter before anything is asked: `--state` is required,
/// so a missing ID never means "everything", and must be a state the
/// action applies to.
pub fn check(action: Action, filter: &Filter) -> Result<StateName, Failure> {
    let Some(state) = filter.state else {
        let example = if action == Action::Retry { "dead" } else { "pending" };
        return Err(Failure::usage(format!(
            "give an ID, or --state (for example `hookd {} --state {example}`) to {} many deliveries at once",
            action.verb(),
            action.verb(),
        )));
    };
    if !action.accepts(state) {
        return Err(Failure::usage(format!(
            "only {} deliveries can be {}; --state {} would match none the daemon accepts",
            action.accepted_states(),
            action.done(),
            state.as_str(),
        )));
    }
    Ok(state)
}

/// What a bulk run did; also its `--json` summary.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    pub action: &'static str,
    /// How many deliveries the filter matched (up to the bound).
    pub matched: usize,
    /// How many the daemon changed.
    pub done: usize,
    /// How many it refused, and why, by API error code.
    pub refused: usize,
    pub reasons: BTreeMap<String, usize>,
    /// The refused deliveries, with their codes.
    pub refusals: Vec<Refusal>,
    /// Whether more deliveries matched than one run goes through.
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct Refusal {
    pub id: String,
    pub code: String,
}

impl Tally {
    /// `requeued 3 of 4 dead deliveries to h; refused 1 (in_flight 1)`.
    fn summary(&self, filter: &Filter) -> String {
        let mut line = format!("{} {} of {} {filter}", self.action, self.done, self.matched);
        if self.refused > 0 {
            let reasons: Vec<String> =
                self.reasons.iter().map(|(code, count)| format!("{code} {count}")).collect();
            line.push_str(&format!("; refused {} ({})", self.refused, reasons.join(", ")));
        }
        if self.truncated {
            line.push_str(&format!("; more matched than {MAX_ROWS}, run it again for the rest"));
        }
        line
    }
}

/// Runs `action` over every delivery `filter` matches and prints the
/// summary. Exit code 1 when the daemon refused any of them, so a script
/// knows the job is not complete.
pub async fn run(
    client: &Client,
    action: Action,
    filter: &Filter,
    json: bool,
    palette: Palette,
) -> Result<(), Failure> {
    check(action, filter)?;
    let (ids, truncated) = query::all_ids(client, filter, MAX_ROWS).await?;
    let mut tally =
        Tally { action: action.done(), matched: ids.len(), truncated, ..Tally::default() };

    let mut progress = Progress::on_stderr(action.done());
    for id in &ids {
        let (method, target) = action.request(id);
        match client.send(method, &target, None).await {
            Ok(_) => tally.done += 1,
            Err(ClientError::Refused { code, .. }) => refuse(&mut tally, id, code),
            Err(error) => {
                progress.clear();
                return Err(stopped(error, &tally));
            }
        }
        progress.show(tally.done + tally.refused, ids.len());
    }
    progress.clear();

    let text = match json {
        true => serde_json::to_string(&tally).unwrap_or_default(),
        false => palette.paint(&tally.summary(filter), output::heading_style()),
    };
    output::print(&text);
    match tally.refused {
        0 => Ok(()),
        refused => Err(Failure::refused(format!(
            "the daemon refused {refused} of {} {filter}; see the summary",
            tally.matched
        ))),
    }
}

fn refuse(tally: &mut Tally, id: &str, code: String) {
    tally.refused += 1;
    *tally.reasons.entry(code.clone()).or_default() += 1;
    tally.refusals.push(Refusal { id: id.to_owned(), code });
}

/// The failure of a run cut short, saying how far it got.
fn stopped(error: ClientError, tally: &Tally) -> Failure {
    let mut failure = Failure::from(error);
    failure.message = format!(
        "{} (stopped after {} {} and {} refused of {})",
        failure.message, tally.action, tally.done, tally.refused, tally.matched
    );
    failure
}

/// `\rrequeued 120/450` on stderr while a run goes on, when stderr is a
/// terminal; nothing otherwise.
struct Progress {
    label: &'static str,
    enabled: bool,
    /// When the line was last drawn, to redraw at most every
    /// [`PROGRESS_EVERY`].
    drawn_at: Option<Instant>,
    /// The length of the last line drawn, to blank it when done.
    drawn_len: usize,
}

impl Progress {
    fn on_stderr(label: &'static str) -> Progress {
        let enabled = std::io::stderr().is_terminal();
        Progress { label, enabled, drawn_at: None, drawn_len: 0 }
    }

    fn show(&mut self, done: usize, total: usize) {
        let due = self.drawn_at.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if !self.enabled || !(due || done == total) {
            return;
        }
        let line = format!("{} {done}/{total}", self.label);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{line}");
        let _ = stderr.flush();
        self.drawn_at = Some(Instant::now());
        self.drawn_len = line.len();
    }

    /// Blanks the progress line so the summary starts on a clean line.
    fn clear(&mut self) {
        if self.drawn_len == 0 {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{}\r", " ".repeat(self.drawn_len));
        let _ = stderr.flush();
        self.drawn_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_needs_a_state_the_action_applies_to() {
        let mut filter = Filter { host: Some("example.com".into()), ..Filter::default() };
        assert_eq!(check(Action::Retry, &filter).unwrap_err().code, 2);

        filter.state = Some(StateName::Pending);
        assert_eq!(check(Action::Retry, &filter).unwrap_err().code, 2);
        assert!(check(Action::Cancel, &filter).is_ok());

        filter.state = Some(StateName::Dead);
        assert!(check(Action::Retry, &filter).is_ok());
    }

    #[test]
    fn the_summary_counts_refusals_by_reason() {
        let filter = Filter { state: Some(StateName::Dead), ..Filter::default() };
        let mut tally = Tally { action: "requeued", matched: 3, done: 2, ..Tally::default() };
        refuse(&mut tally, "01", "in_flight".into());

        assert_eq!(
            tally.summary(&filter),
            "requeued 2 of 3 dead deliveries; refused 1 (in_flight 1)"
        );
    }
}
