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

    /// Property test over 20,000 generated header lists (addresses,
    /// ports, brackets, junk, non-ASCII): never a panic; an untrusted peer
    /// is always its own client; a trusted peer's client is the peer or an
    /// address written in the header, and is a trusted proxy only when
    /// every entry was one.
    #[test]
    fn any_forwarded_header_gives_a_sound_client_or_a_clear_error() {
        let alphabet: Vec<&str> = vec![
            "203.0.113.7",
            "10.0.0.5",
            "127.0.0.1",
            "::1",
            "[2001:db8::1]:80",
            "1.2.3.4:5",
            "unknown",
            "",
            " ",
            ",",
            "é",
            "[",
            "]",
            ":",
            "999.1.1.1",
            "10.0.0.*",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let lines = (next() % 3) as usize;
            let mut values = Vec::new();
            for _ in 0..lines {
                let parts = 1 + (next() % 4) as usize;
                let value: Vec<&str> = (0..parts)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                values.push(value.join(", "));
            }
            let mut map = HeaderMap::new();
            for v in &values {
                if let Ok(value) = HeaderValue::from_str(v) {
                    map.append(HeaderName::from_static("x-forwarded-for"), value);
                }
            }
            let peer = if next() % 2 == 0 {
                ip("127.0.0.1")
            } else {
                ip("198.51.100.9")
            };
            match resolve(peer, &map, Some(&proxies())) {
                Ok(found) if !proxies().allows(peer) => {
                    assert_eq!(
                        found,
                        ClientAddress {
                            client: peer,
                            via: None
                        }
                    );
                }
                Ok(found) => {
                    assert_eq!(found.via, Some(peer));
                    let written = values
                        .iter()
                        .any(|v| v.split(',').any(|e| parse_entry(e) == Some(found.client)));
                    assert!(found.client == peer || written, "{values:?} -> {found:?}");
                    if proxies().allows(found.client) && found.client != peer {
                        let all_trusted = values
                            .iter()
                            .flat_map(|v| v.split(','))
                            .all(|e| parse_entry(e).is_some_and(|a| proxies().allows(a)));
                        assert!(all_trusted, "{values:?} -> {found:?}");
                    }
                }
                Err(reason) => assert!(reason.contains("X-Forwarded-For"), "{reason}"),
            }
        }
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
