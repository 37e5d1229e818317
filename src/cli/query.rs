//! Which deliveries a verb looks at, and paging through them.
//!
//! `list`, the bulk forms of `retry` and `cancel`, and `watch` share one
//! [`Filter`] (`--state`, `--key`, `--host`) and read
//! `GET /v1/deliveries` through the functions here. The daemon does the
//! filtering; this module only builds the query and follows
//! `next_cursor`, always within a bound.

use std::fmt;

use crate::cli::reply::{Page, RawPage};
use crate::client::{Client, ClientError};

/// The most deliveries one `list --all` or bulk operation goes through.
pub const MAX_ROWS: usize = 100_000;

/// The largest page the API serves.
pub const MAX_PAGE: usize = 1000;

/// A delivery state as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StateName {
    Pending,
    /// Pending with an attempt running right now.
    Delivering,
    Delivered,
    Dead,
    Cancelled,
    Superseded,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Pending => "pending",
            StateName::Delivering => "delivering",
            StateName::Delivered => "delivered",
            StateName::Dead => "dead",
            StateName::Cancelled => "cancelled",
            StateName::Superseded => "superseded",
        }
    }
}

/// The filter flags shared by `list`, `retry`, `cancel` and `watch`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Filter {
    /// Only deliveries in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateName>,
    /// Only deliveries with this ordering key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only deliveries to this host name (any scheme and port).
    #[arg(long)]
    pub host: Option<String>,
}

impl Filter {
    /// Whether any flag narrows the set.
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.key.is_none() && self.host.is_none()
    }

    /// The request target of one page.
    pub fn target(&self, limit: usize, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &limit.to_string());
        if let Some(state) = self.state {
            query.append_pair("state", state.as_str());
        }
        if let Some(key) = &self.key {
            query.append_pair("key", key);
        }
        if let Some(host) = &self.host {
            query.append_pair("host", host);
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        format!("/v1/deliveries?{}", query.finish())
    }
}

/// Reads as the words after "requeued 3", e.g. `dead deliveries to
/// example.com with key task-1`.
impl fmt::Display for Filter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(state) = self.state {
            write!(formatter, "{} ", state.as_str())?;
        }
        formatter.write_str("deliveries")?;
        if let Some(host) = &self.host {
            write!(formatter, " to {host}")?;
        }
        if let Some(key) = &self.key {
            write!(formatter, " with key {key}")?;
        }
        Ok(())
    }
}

/// One page, read for people.
pub async fn page(
    client: &Client,
    filter: &Filter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page, ClientError> {
    let target = filter.target(limit, cursor);
    client.get(&target).await?.parse(&target)
}

/// Pages of `page_size` joined from `cursor` on, newest first, until the
/// last page or `max` deliveries. The deliveries stay as the daemon wrote
/// them, for `--json`; the `next_cursor` of the result is where a capped
/// walk would go on.
pub async fn all_raw(
    client: &Client,
    filter: &Filter,
    cursor: Option<&str>,
    page_size: usize,
    max: usize,
) -> Result<RawPage, ClientError> {
    let mut joined = RawPage { deliveries: Vec::new(), next_cursor: cursor.map(str::to_owned) };
    let mut first = true;

    while first || joined.next_cursor.is_some() {
        let room = max - joined.deliveries.len();
        if room == 0 {
            break;
        }
        let target = filter.target(room.min(page_size), joined.next_cursor.as_deref());
        let reply = client.get(&target).await?;
        let page: RawPage = reply.parse(&target)?;

        joined.deliveries.extend(page.deliveries);
        joined.next_cursor = page.next_cursor;
        first = false;
    }
    Ok(joined)
}

/// The ids of every matching delivery, newest first, up to `max`; the
/// flag says whether more matched.
pub async fn all_ids(
    client: &Client,
    filter: &Filter,
    max: usize,
) -> Result<(Vec<String>, bool), ClientError> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;

    loop {
        let room = max - ids.len();
        if room == 0 {
            return Ok((ids, cursor.is_some()));
        }
        let found = page(client, filter, room.min(MAX_PAGE), cursor.as_deref()).await?;
        ids.extend(found.deliveries.into_iter().map(|view| view.id));
        cursor = found.next_cursor;
        if cursor.is_none() {
            return Ok((ids, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_queries_and_read_as_words() {
        let filter = Filter {
            state: Some(StateName::Dead),
            key: Some("task 1".into()),
            host: Some("example.com".into()),
        };

        assert_eq!(
            filter.target(10, Some("C")),
            "/v1/deliveries?limit=10&state=dead&key=task+1&host=example.com&cursor=C"
        );
        assert_eq!(filter.to_string(), "dead deliveries to example.com with key task 1");
        assert!(Filter::default().is_empty());
    }
}
