//! Retention: finished deliveries are purged once they are old enough.
//!
//! `delivered`, `cancelled` and `superseded` deliveries go
//! `retention.delivered_s` after they finished, `dead` ones after
//! `retention.dead_s`; pending ones are never touched. A background task
//! walks the records oldest first in small steps ([`STEP`] records, then a
//! pause), deleting what has expired in the same durable way as every other
//! change; deleting a record also frees its idempotency key. It skips any
//! delivery whose claim is held, so it never races an attempt or an API
//! call. Each walk over all records ends with one summary line.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::claims::Claims;
use crate::clock;
use crate::config::Retention;
use crate::id::DeliveryId;
use crate::record::{Delivery, State};
use crate::store::{Change, Store};

/// Records read per step.
const STEP: usize = 1000;

/// The pause between steps; also the pause after a full walk.
const PAUSE: Duration = Duration::from_millis(250);

/// Runs until `shutdown`.
pub async fn run(
    store: Store,
    claims: Arc<Claims>,
    retention: Retention,
    shutdown: CancellationToken,
) {
    let mut cursor: Option<DeliveryId> = None;
    let mut purged_this_walk = 0u64;

    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PAUSE) => {}
        }

        let records = match store.records_after(cursor, STEP) {
            Ok(records) => records,
            Err(error) => {
                warn!(%error, "retention cannot read records; will try again");
                continue;
            }
        };

        // Claims are held until the deletes are on disk.
        let now = clock::now_ms();
        let held: Vec<_> = records
            .iter()
            .filter(|delivery| expired(delivery, &retention, now))
            .filter_map(|delivery| claims.try_claim(delivery.id).map(|claim| (delivery.id, claim)))
            .collect();
        if !held.is_empty() {
            let changes = held.iter().map(|(id, _)| Change::Delete(*id)).collect();
            crate::crash::point("retention.before_delete");
            match store.commit(changes).await {
                Ok(_) => purged_this_walk += held.len() as u64,
                Err(error) => warn!(%error, "retention cannot delete expired deliveries"),
            }
        }
        drop(held);

        cursor = records.last().map(|delivery| delivery.id);
        if records.len() < STEP {
            if purged_this_walk > 0 {
                info!(purged = purged_this_walk, "retention purged expired deliveries");
            }
            purged_this_walk = 0;
            cursor = None;
        }
    }
}

/// Whether a delivery is final and older than its retention.
fn expired(delivery: &Delivery, retention: &Retention, now: clock::UnixMs) -> bool {
    let keep = match delivery.state {
        State::Pending => return false,
        State::Dead => retention.dead,
        State::Delivered | State::Cancelled | State::Superseded => retention.delivered,
    };
    clock::after(delivery.updated_at, keep) <= now
}
