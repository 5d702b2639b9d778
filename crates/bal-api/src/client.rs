//! The client's address: the peer's, or behind a load balancer the one a trusted proxy
//! reports in `X-Forwarded-For`. Login limits count it, so believing any client's header would
//! let a guesser pick a fresh address per attempt, and believing none would lock every client
//! out together once the balancer's own address hit the limit.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

/// An address or a network (`10.0.0.0/8`, `fd00::/8`) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IP address or network (10.0.0.0/8)");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        // Each address as a number of its family's width; the network's bits are the top
        // `prefix` of them.
        let bits = |a: IpAddr| match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let (net, width) = bits(self.network);
        let (ip, ip_width) = bits(addr.to_canonical());
        if width != ip_width {
            return false;
        }
        let host = width - u32::from(self.prefix);
        host >= 128 || net >> host == ip >> host
    }
}

/// The client's address as the login limits count it: the peer's unless the peer is a trusted
/// proxy; then, walking `X-Forwarded-For` from the right, the first address that is not a
/// trusted proxy (a proxy appends the address it saw, so entries left of the first untrusted
/// one are the client's own claims). An entry that is no address ends the walk at the last
/// trusted hop.
pub fn client_address(trusted: &[TrustedProxy], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |a: IpAddr| trusted.iter().any(|t| t.contains(a));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(a) => {
                client = a.to_canonical();
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The client's address, for handlers that count or log it (see [`client_address`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("no peer address on the connection"))
            })?;
        Ok(Self(client_address(
            &state.config.trusted_proxies,
            peer.ip(),
            &parts.headers,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let lan = TrustedProxy::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains(ip("10.1.2.3")) && !lan.contains(ip("11.0.0.1")));
        assert!(lan.contains(ip("::ffff:10.0.0.9")), "IPv4 mapped in IPv6");
        let one = TrustedProxy::parse("192.168.1.5").unwrap();
        assert!(one.contains(ip("192.168.1.5")) && !one.contains(ip("192.168.1.6")));
        let v6 = TrustedProxy::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(
            TrustedProxy::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "proxy", "10.0.0.0/x", ""] {
            assert!(TrustedProxy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_counts_only_behind_a_trusted_proxy() {
        let trusted = [TrustedProxy::parse("10.0.0.0/8").unwrap()];
        let forged = headers(&["1.2.3.4"]);
        // A client talking directly cannot choose its address.
        assert_eq!(
            client_address(&trusted, ip("8.8.8.8"), &forged),
            ip("8.8.8.8")
        );
        assert_eq!(client_address(&[], ip("10.0.0.2"), &forged), ip("10.0.0.2"));
        // Behind the balancer: the address it appended.
        assert_eq!(
            client_address(&trusted, ip("10.0.0.2"), &forged),
            ip("1.2.3.4")
        );
        // A client's own claim left of what the proxy saw is ignored.
        let claimed = headers(&["6.6.6.6, 1.2.3.4"]);
        assert_eq!(
            client_address(&trusted, ip("10.0.0.2"), &claimed),
            ip("1.2.3.4")
        );
        // Two proxies, two headers.
        let chain = headers(&["1.2.3.4", "10.0.0.7"]);
        assert_eq!(
            client_address(&trusted, ip("10.0.0.2"), &chain),
            ip("1.2.3.4")
        );
        // Garbage stops at the last trusted hop; no header: the proxy itself.
        let garbage = headers(&["not-an-ip, 10.0.0.7"]);
        assert_eq!(
            client_address(&trusted, ip("10.0.0.2"), &garbage),
            ip("10.0.0.7")
        );
        assert_eq!(
            client_address(&trusted, ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }
}
