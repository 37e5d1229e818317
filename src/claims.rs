//! Claims: who may change a delivery right now.
//!
//! A stored delivery is changed by read-modify-write: read the record,
//! change it, commit it. Two writers at once (an attempt recording its
//! outcome while the API cancels) would lose one change. So whoever changes
//! an existing delivery first takes its [`Claim`]; there is at most one
//! claim per id, and it is released when the guard is dropped.
//!
//! The dispatcher waits for a claim ([`Claims::claim`]); the API only tries
//! ([`Claims::try_claim`]) and answers `409` when an attempt holds it, which
//! is how "not while in flight" is enforced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::id::DeliveryId;

/// The set of claimed ids; shared by the API and the dispatcher.
#[derive(Default)]
pub struct Claims {
    /// Claimed ids, each with the notifier its release wakes.
    held: Mutex<HashMap<DeliveryId, Arc<Notify>>>,
}

/// The right to change one delivery; released on drop.
pub struct Claim {
    claims: Arc<Claims>,
    id: DeliveryId,
}

impl Claims {
    pub fn new() -> Arc<Claims> {
        Arc::new(Claims::default())
    }

    /// Takes the claim on `id` if nobody holds it.
    pub fn try_claim(self: &Arc<Self>, id: DeliveryId) -> Option<Claim> {
        let mut held = self.lock();
        if held.contains_key(&id) {
            return None;
        }
        held.insert(id, Arc::new(Notify::new()));
        Some(Claim { claims: self.clone(), id })
    }

    /// Waits until the claim on `id` is free, then takes it.
    pub async fn claim(self: &Arc<Self>, id: DeliveryId) -> Claim {
        loop {
            // Register as a waiter before unlocking, so a release between the
            // unlock and the await still wakes this task.
            let notified = {
                let mut held = self.lock();
                let Some(notify) = held.get(&id) else {
                    held.insert(id, Arc::new(Notify::new()));
                    return Claim { claims: self.clone(), id };
                };
                let mut notified = Box::pin(notify.clone().notified_owned());
                notified.as_mut().enable();
                notified
            };
            notified.await;
        }
    }

    /// Whether an attempt or an API call holds `id` right now.
    pub fn is_claimed(&self, id: DeliveryId) -> bool {
        self.lock().contains_key(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, Arc<Notify>>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(notify) = self.claims.lock().remove(&self.id) {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_claim_per_id() {
        let claims = Claims::new();
        let id = DeliveryId::generate();

        let first = claims.try_claim(id).unwrap();
        assert!(claims.try_claim(id).is_none());
        assert!(claims.try_claim(DeliveryId::generate()).is_some());

        drop(first);
        assert!(claims.try_claim(id).is_some());
    }

    #[tokio::test]
    async fn every_waiter_gets_the_claim_in_turn() {
        let claims = Claims::new();
        let id = DeliveryId::generate();
        let held = claims.try_claim(id).unwrap();

        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let claims = claims.clone();
                tokio::spawn(async move {
                    let _claim = claims.claim(id).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;

        drop(held);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_waiter_gets_the_claim_when_it_is_released() {
        let claims = Claims::new();
        let id = DeliveryId::generate();
        let held = claims.try_claim(id).unwrap();

        let waiter = tokio::spawn({
            let claims = claims.clone();
            async move {
                let _claim = claims.claim(id).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());

        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(!claims.is_claimed(id));
    }
}
