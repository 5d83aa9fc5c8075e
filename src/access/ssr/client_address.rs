//! The address a request came from, for the sign-in rate limit and the audit
//! log.
//!
//! `X-Forwarded-For` is written by whoever sends the request, so it is read
//! only when the connection comes from a proxy named in `TRUSTED_PROXY`. Then
//! the address is the right-most entry that is not itself a trusted proxy:
//! entries to the left of it were supplied by the client and may be forged.

use axum::http::{request::Parts, HeaderMap};
use std::net::{IpAddr, SocketAddr};

/// The client address of a request, or `None` when the server was not given
/// the connection's peer (a router served without connect info).
pub fn client_address(parts: &Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_canonical())?;
    Some(resolve_client_address(
        peer,
        &parts.headers,
        trusted_proxies,
    ))
}

/// The rule, given the peer address: see the module docs.
pub fn resolve_client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> IpAddr {
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(address) if trusted_proxies.contains(&address.to_canonical()) => continue,
            Ok(address) => return address.to_canonical(),
            // A malformed hop means the chain cannot be trusted past it: use
            // the proxy's own address rather than a guess.
            Err(_) => return peer,
        }
    }
    peer
}

/// The address as the rate limit and the audit log write it.
pub fn describe(address: Option<IpAddr>) -> String {
    address.map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let forged = headers(&["203.0.113.7"]);
        assert_eq!(
            resolve_client_address(ip("127.0.0.1"), &forged, &[]),
            ip("127.0.0.1")
        );
        assert_eq!(
            resolve_client_address(ip("127.0.0.1"), &forged, &[ip("10.0.0.1")]),
            ip("127.0.0.1")
        );
        assert_eq!(
            resolve_client_address(ip("127.0.0.1"), &forged, &[ip("127.0.0.1")]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_wins_over_client_supplied_entries() {
        let proxies = [ip("127.0.0.1"), ip("10.0.0.2")];
        let chain = headers(&["198.51.100.1, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(
            resolve_client_address(ip("127.0.0.1"), &chain, &proxies),
            ip("203.0.113.7")
        );
        let broken = headers(&["203.0.113.7, not-an-ip"]);
        assert_eq!(
            resolve_client_address(ip("127.0.0.1"), &broken, &proxies),
            ip("127.0.0.1")
        );
        assert_eq!(
            resolve_client_address(
                ip("::ffff:127.0.0.1").to_canonical(),
                &headers(&[]),
                &proxies
            ),
            ip("127.0.0.1")
        );
    }
}
