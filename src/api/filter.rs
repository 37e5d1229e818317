//! The query of `GET /v1/deliveries`: which deliveries a page shows.

use crate::claims::Claims;
use crate::dispatch::host_key;
use crate::id::DeliveryId;
use crate::record::{Delivery, State};
use crate::view::ApiError;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// A parsed list query.
#[derive(Debug)]
pub struct ListQuery {
    pub state: Option<StateFilter>,
    /// Only deliveries with this ordering key.
    pub key: Option<String>,
    /// Only deliveries to this host name (any scheme and port).
    pub host: Option<String>,
    pub limit: usize,
    /// Continue after this id (the `next_cursor` of an earlier page).
    pub cursor: Option<DeliveryId>,
}

#[derive(Debug, Clone, Copy)]
pub enum StateFilter {
    Stored(State),
    /// Pending with an attempt running.
    Delivering,
}

impl ListQuery {
    /// Parses `state=&key=&host=&limit=&cursor=`; anything else is refused.
    pub fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let mut parsed =
            ListQuery { state: None, key: None, host: None, limit: DEFAULT_PAGE, cursor: None };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "state" => parsed.state = Some(parse_state(&value)?),
                "key" => parsed.key = Some(value.into_owned()),
                "host" => parsed.host = Some(value.to_ascii_lowercase()),
                "limit" => parsed.limit = parse_limit(&value)?,
                "cursor" => parsed.cursor = Some(parse_cursor(&value)?),
                other => {
                    return Err(ApiError::new(
                        400,
                        "invalid_query",
                        format!(
                            "unknown query parameter {other:?}; use state, key, host, limit or cursor"
                        ),
                    ));
                }
            }
        }
        Ok(parsed)
    }

    /// Whether `delivery` belongs on the page.
    pub fn matches(&self, delivery: &Delivery, claims: &Claims) -> bool {
        let state_ok = match self.state {
            None => true,
            Some(StateFilter::Delivering) => {
                delivery.state == State::Pending && claims.is_claimed(delivery.id)
            }
            Some(StateFilter::Stored(wanted)) => delivery.state == wanted,
        };
        let key_ok = self.key.as_deref().is_none_or(|key| delivery.key.as_deref() == Some(key));
        let host_ok = self.host.as_deref().is_none_or(|host| host_of(&delivery.url) == host);
        state_ok && key_ok && host_ok
    }
}

/// The host name of a stored URL, lower case.
fn host_of(url: &str) -> String {
    let key = host_key(url);
    let without_scheme = key.split_once("://").map_or(key.as_str(), |(_, rest)| rest);
    let host = without_scheme.rsplit_once(':').map_or(without_scheme, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

fn parse_state(text: &str) -> Result<StateFilter, ApiError> {
    if text == "delivering" {
        return Ok(StateFilter::Delivering);
    }
    State::parse(text).map(StateFilter::Stored).ok_or_else(|| {
        ApiError::new(
            400,
            "invalid_state_filter",
            format!(
                "state {text:?} is unknown; use pending, delivering, delivered, dead, cancelled or superseded"
            ),
        )
    })
}

fn parse_limit(text: &str) -> Result<usize, ApiError> {
    match text.parse::<usize>() {
        Ok(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        _ => Err(ApiError::new(
            400,
            "invalid_limit",
            format!("limit must be a whole number from 1 to {MAX_PAGE}, got {text:?}"),
        )),
    }
}

fn parse_cursor(text: &str) -> Result<DeliveryId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(400, "invalid_cursor", "cursor must be a next_cursor from an earlier page")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_refuse_unknown_parameters() {
        let query = ListQuery::parse("state=dead&host=Example.COM&key=t1&limit=5").unwrap();
        assert!(matches!(query.state, Some(StateFilter::Stored(State::Dead))));
        assert_eq!(query.host.as_deref(), Some("example.com"));
        assert_eq!(query.key.as_deref(), Some("t1"));
        assert_eq!(query.limit, 5);

        assert_eq!(ListQuery::parse("colour=red").unwrap_err().code, "invalid_query");
        assert_eq!(ListQuery::parse("limit=0").unwrap_err().code, "invalid_limit");
        assert_eq!(ListQuery::parse("state=lost").unwrap_err().code, "invalid_state_filter");
        assert_eq!(ListQuery::parse("cursor=x").unwrap_err().code, "invalid_cursor");
    }

    #[test]
    fn hosts_ignore_scheme_port_and_case() {
        assert_eq!(host_of("https://Example.com:8443/x"), "example.com");
        assert_eq!(host_of("http://127.0.0.1:9/"), "127.0.0.1");
        assert_eq!(host_of("http://[::1]:9/"), "::1");
    }
}
