//! Per-partner IP filter: single addresses, ranges `a-b`, and IPv4
//! wildcards `127.0.*.*`. IPv4 and IPv6 alike (an IPv4-mapped IPv6 peer is
//! matched as IPv4). An empty list blocks everything, by design: a
//! misconfigured filter must fail closed.

use std::net::IpAddr;

/// One entry of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Range(IpAddr, IpAddr),
    /// Four IPv4 octets, `None` for `*`.
    Wildcard([Option<u8>; 4]),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilter {
    rules: Vec<Rule>,
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl IpFilter {
    /// Parses the entries; the error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<IpFilter, String> {
        let mut rules = Vec::with_capacity(entries.len());
        for entry in entries {
            let text = entry.trim();
            let rule = if text.contains('*') {
                let octets: Vec<&str> = text.split('.').collect();
                if octets.len() != 4 {
                    return Err(format!("{text:?}: wildcards are IPv4 only, like 10.1.*.*"));
                }
                let mut parsed = [None; 4];
                for (slot, octet) in parsed.iter_mut().zip(octets) {
                    *slot = match octet {
                        "*" => None,
                        n => Some(
                            n.parse::<u8>()
                                .map_err(|_| format!("{text:?}: {n:?} is not an octet or *"))?,
                        ),
                    };
                }
                Rule::Wildcard(parsed)
            } else if let Some((low, high)) = text.split_once('-') {
                let low: IpAddr = low
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?}: {low:?} is not an IP address"))?;
                let high: IpAddr = high
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?}: {high:?} is not an IP address"))?;
                let (low, high) = (normalize(low), normalize(high));
                if low.is_ipv4() != high.is_ipv4() || low > high {
                    return Err(format!(
                        "{text:?}: a range needs two addresses of one family, lowest first"
                    ));
                }
                Rule::Range(low, high)
            } else {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| format!("{text:?} is not an IP address, range or wildcard"))?;
                let ip = normalize(ip);
                Rule::Range(ip, ip)
            };
            rules.push(rule);
        }
        Ok(IpFilter { rules })
    }

    /// True if `peer` may send.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = normalize(peer);
        self.rules.iter().any(|rule| match rule {
            Rule::Range(low, high) => {
                peer.is_ipv4() == low.is_ipv4() && *low <= peer && peer <= *high
            }
            Rule::Wildcard(pattern) => match peer {
                IpAddr::V4(v4) => pattern
                    .iter()
                    .zip(v4.octets())
                    .all(|(p, o)| p.is_none_or(|p| p == o)),
                IpAddr::V6(_) => false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(entries: &[&str]) -> IpFilter {
        IpFilter::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parses")
    }

    #[test]
    fn forms() {
        let f = filter(&[
            "127.0.*.*",
            "10.0.0.5-10.0.0.9",
            "::1",
            "2001:db8::1-2001:db8::ff",
        ]);
        for ok in [
            "127.0.3.4",
            "10.0.0.5",
            "10.0.0.9",
            "::1",
            "2001:db8::10",
            "::ffff:127.0.0.1",
        ] {
            assert!(f.allows(ok.parse().expect("ip")), "{ok}");
        }
        for no in [
            "127.1.0.1",
            "10.0.0.10",
            "10.0.0.4",
            "::2",
            "2001:db8::100",
            "192.168.1.1",
        ] {
            assert!(!f.allows(no.parse().expect("ip")), "{no}");
        }
    }

    #[test]
    fn empty_blocks_all_and_errors_name_the_entry() {
        assert!(!filter(&[]).allows("127.0.0.1".parse().expect("ip")));
        for bad in [
            "10.0.0.300",
            "1.2.3",
            "10.0.0.9-10.0.0.1",
            "::1-10.0.0.1",
            "fe80::*",
        ] {
            let err = IpFilter::parse(&[bad.to_string()]).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }
}
