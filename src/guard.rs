//! The destination guard: which addresses hookd may send callbacks to.
//!
//! hookd POSTs to URLs other programs hand it, on machines that may sit next
//! to a cloud metadata service and internal systems. By default it refuses
//! every address that is not plainly public: loopback, private, shared
//! (100.64/10), link-local (with 169.254.169.254), unique-local, unspecified,
//! multicast, broadcast and reserved ranges, also when written as an
//! IPv4-mapped, IPv4-compatible or NAT64 IPv6 address.
//! `allow_private_networks` lifts the guard; `allowed_networks` opens
//! chosen ranges.
//!
//! The guard is applied twice: to IP literals at submission (see
//! [`crate::submission`]) and to every address a host name resolves to at
//! attempt time, inside the resolver whose answers the connector dials, so
//! no second lookup can hand the connector another address.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// Which destinations are allowed.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow_all: bool,
    allowed: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow_private_networks: bool, allowed_networks: Vec<IpNet>) -> Guard {
        Guard { allow_all: allow_private_networks, allowed: allowed_networks }
    }

    /// Whether a callback may be sent to `address`.
    pub fn permits(&self, address: IpAddr) -> bool {
        self.allow_all
            || self.allowed.iter().any(|network| network.contains(&address))
            || !is_internal(address)
    }
}

/// Addresses that are not on the public internet.
fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_broadcast()
        || address.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
        || (a == 192 && b == 0 && address.octets()[2] == 0)
}

fn is_internal_v6(address: Ipv6Addr) -> bool {
    let first = address.segments()[0];
    address.is_loopback()
        || address.is_unspecified()
        || address.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
}

/// The IPv4 address inside a mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = address.segments();
    let tail = Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    );
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] if !address.is_loopback() && !address.is_unspecified() => {
            Some(tail)
        }
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// A host name resolved only to addresses the guard refuses.
#[derive(Debug, thiserror::Error)]
#[error("destination denied: {host} resolves only to internal addresses ({first})")]
pub struct Denied {
    pub host: String,
    pub first: IpAddr,
}

/// The host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("dns error: {0}")]
pub struct DnsFailed(pub io::Error);

/// A resolver for hyper's connector that drops refused addresses; the
/// connector dials exactly what this returns.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await.map_err(DnsFailed)?.collect();

            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|address| guard.permits(address.ip())).collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(allowed.into_iter()),
                (true, Some(first)) => Err(Box::new(Denied { host, first: first.ip() }) as _),
                (true, None) => Err(Box::new(DnsFailed(io::Error::other("no addresses"))) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied_by_default(text: &str) -> bool {
        !Guard::default().permits(text.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        for address in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            assert!(denied_by_default(address), "{address} was let through");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!denied_by_default(address), "{address} was refused");
        }
    }

    #[test]
    fn allow_settings_open_the_door() {
        let loopback = "127.0.0.1".parse().unwrap();

        assert!(Guard::new(true, Vec::new()).permits(loopback));
        assert!(Guard::new(false, vec!["127.0.0.0/8".parse().unwrap()]).permits(loopback));
        assert!(!Guard::new(false, vec!["10.0.0.0/8".parse().unwrap()]).permits(loopback));
    }
}
