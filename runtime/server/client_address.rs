//! The address a request came from. Directly connected clients are their
//! peer address. Behind a load balancer every request comes from the
//! balancer, so when the peer is one of `shared_web_server.trusted_proxies`
//! the client is read from `X-Forwarded-For`: walking from the right (the
//! entry the nearest proxy added), the first address that is not itself a
//! trusted proxy. Entries further left were written by the client and are
//! never believed. A peer that is not a trusted proxy is the client,
//! whatever headers it sends.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;

use crate::listeners::ip_filter::IpFilter;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client, as far as we can trust what we were told.
    pub client: IpAddr,
    /// The trusted proxy it came through, when it did.
    pub via: Option<IpAddr>,
}

/// The client of a request from `peer` with `headers`. An `X-Forwarded-For`
/// from a trusted proxy that cannot be parsed where it matters is an error
/// (the proxy is misconfigured; guessing could let a stranger past an IP
/// filter).
pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: Option<&IpFilter>,
) -> Result<ClientAddress, String> {
    let Some(trusted) = trusted.filter(|t| t.allows(peer)) else {
        return Ok(ClientAddress {
            client: peer,
            via: None,
        });
    };
    // Several header lines are one list, in order (RFC 9110 section 5.3).
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let value = value
            .to_str()
            .map_err(|_| "X-Forwarded-For from a trusted proxy is not ASCII".to_string())?;
        entries.extend(value.split(','));
    }
    let mut client = peer;
    for entry in entries.iter().rev() {
        let address = parse_entry(entry).ok_or_else(|| {
            format!(
                "X-Forwarded-For from trusted proxy {peer} has {:?} where an address was expected",
                entry.trim()
            )
        })?;
        client = address;
        if !trusted.allows(address) {
            break;
        }
    }
    Ok(ClientAddress {
        client,
        via: Some(peer),
    })
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally with a
/// port (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    fn proxies() -> IpFilter {
        IpFilter::parse(&["127.0.0.1".into(), "10.0.0.*".into()]).expect("filter")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got = resolve(
            ip("198.51.100.9"),
            &headers(&["10.1.2.3"]),
            Some(&proxies()),
        );
        assert_eq!(
            got,
            Ok(ClientAddress {
                client: ip("198.51.100.9"),
                via: None
            })
        );
        let none = resolve(ip("127.0.0.1"), &headers(&["10.1.2.3"]), None);
        assert_eq!(none.map(|c| c.client), Ok(ip("127.0.0.1")));
    }

    #[test]
    fn a_trusted_proxy_gives_the_rightmost_untrusted_entry() {
        // The client forged "1.1.1.1"; HAProxy appended the real address,
        // and an inner proxy (10.0.0.5) the one it saw.
        let got = resolve(
            ip("127.0.0.1"),
            &headers(&["1.1.1.1, 203.0.113.7", "10.0.0.5"]),
            Some(&proxies()),
        );
        assert_eq!(
            got,
            Ok(ClientAddress {
                client: ip("203.0.113.7"),
                via: Some(ip("127.0.0.1"))
            })
        );
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        for (entry, expected) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::2 ", "2001:db8::2"),
        ] {
            let got = resolve(ip("127.0.0.1"), &headers(&[entry]), Some(&proxies()));
            assert_eq!(got.map(|c| c.client), Ok(ip(expected)), "{entry}");
        }
    }

    #[test]
    fn no_header_from_a_trusted_proxy_means_the_proxy_itself() {
        let got = resolve(ip("127.0.0.1"), &HeaderMap::new(), Some(&proxies()));
        assert_eq!(got.map(|c| c.client), Ok(ip("127.0.0.1")));
    }

    #[test]
    fn garbage_where_the_client_should_be_is_an_error_not_a_guess() {
        let got = resolve(ip("127.0.0.1"), &headers(&["unknown"]), Some(&proxies()));
        assert!(got.is_err_and(|e| e.contains("\"unknown\"")));
        // Garbage left of the real client is never looked at.
        let got = resolve(
            ip("127.0.0.1"),
            &headers(&["junk, 203.0.113.7"]),
            Some(&proxies()),
        );
        assert_eq!(got.map(|c| c.client), Ok(ip("203.0.113.7")));
    }
}
