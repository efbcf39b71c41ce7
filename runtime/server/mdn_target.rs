//! Where an asynchronous MDN may be sent. `Receipt-Delivery-Option` is a URL
//! the sender chooses, and Atom POSTs to it (with retries for hours), so a
//! stranger could otherwise make Atom send requests to its own admin API,
//! to loopback services or to hosts on the internal network (SSRF).
//!
//! Rules: only `http` and `https`; the host must resolve to public
//! addresses only (no loopback, private, link-local, unique-local, CGNAT,
//! multicast or unspecified address), checked at receipt for literal
//! addresses and again before every attempt for names (the connection is
//! then pinned to the checked address, so DNS cannot switch it in
//! between); unless the listener allows the URL in `async_mdn.allowed_urls`
//! (URL prefixes such as `http://10.1.2.3:8080/as2/mdn`, or host patterns
//! such as `mdn.partner.example` and `*.partner.example`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

/// A listener's allowed targets, beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdnTargetPolicy {
    prefixes: Vec<String>,
    hosts: Vec<String>,
}

/// Where to connect for one attempt.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    /// The host name and the checked address to pin it to (`None` for an
    /// address literal or an allowed URL, which connect as written).
    pub pin: Option<(String, SocketAddr)>,
}

impl MdnTargetPolicy {
    /// Parses `async_mdn.allowed_urls`.
    pub fn parse(entries: &[String]) -> Result<MdnTargetPolicy, String> {
        let mut policy = MdnTargetPolicy::default();
        for entry in entries {
            let entry = entry.trim();
            let lower = entry.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                Url::parse(entry).map_err(|e| format!("{entry:?} is not a URL: {e}"))?;
                policy.prefixes.push(entry.to_string());
            } else if !entry.is_empty()
                && entry
                    .trim_start_matches("*.")
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
            {
                policy.hosts.push(lower);
            } else {
                return Err(format!(
                    "{entry:?} is neither an http(s) URL prefix nor a host pattern such as mdn.partner.example or *.partner.example"
                ));
            }
        }
        Ok(policy)
    }

    fn allows(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        self.prefixes
            .iter()
            .any(|p| url.as_str().starts_with(p.as_str()))
            || self
                .hosts
                .iter()
                .any(|pattern| match pattern.strip_prefix("*.") {
                    Some(domain) => host.ends_with(&format!(".{domain}")),
                    None => host == *pattern,
                })
    }

    /// What can be checked without the network: scheme, syntax, address
    /// literals. Done at receipt, so a refused target is answered at once.
    pub fn check(&self, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{url:?}: only http and https URLs take asynchronous MDNs"
            ));
        }
        let Some(host) = parsed.host() else {
            return Err(format!("{url:?} has no host"));
        };
        if self.allows(&parsed) {
            return Ok(parsed);
        }
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(name) if name.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
            return Err(not_public(url, ip));
        }
        Ok(parsed)
    }

    /// Before each attempt: resolves the host and checks every address.
    pub async fn resolve(&self, url: &str) -> Result<Target, String> {
        let url = self.check(url)?;
        if self.allows(&url) {
            return Ok(Target { url, pin: None });
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            _ => return Ok(Target { url, pin: None }),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        if let Some(bad) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(not_public(url.as_str(), bad.ip()));
        }
        let first = addresses
            .first()
            .copied()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Target {
            url,
            pin: Some((host, first)),
        })
    }
}

fn not_public(url: &str, ip: IpAddr) -> String {
    format!(
        "{url:?} points at {ip}, an internal address; asynchronous MDNs go to public addresses unless the listener lists the URL in async_mdn.allowed_urls"
    )
}

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT, RFC 6598
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking, RFC 2544
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_targets_are_refused_unless_allowed() {
        let none = MdnTargetPolicy::default();
        for bad in [
            "http://127.0.0.1:9190/listeners/x/pause",
            "http://localhost/mdn",
            "http://[::1]/mdn",
            "http://10.0.0.5/mdn",
            "http://172.16.1.1/mdn",
            "http://192.168.1.1/mdn",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0:80/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "not a url",
        ] {
            assert!(none.check(bad).is_err(), "{bad} must be refused");
        }
        assert!(none.check("https://mdn.partner.example/as2").is_ok());
        assert!(none.check("http://8.8.8.8/mdn").is_ok());
        let allowed =
            MdnTargetPolicy::parse(&["http://127.0.0.1:8080/mdn".into(), "*.corp.example".into()])
                .expect("policy");
        assert!(allowed.check("http://127.0.0.1:8080/mdn/1").is_ok());
        assert!(allowed.check("http://127.0.0.1:9190/admin").is_err());
        assert!(allowed.check("https://as2.corp.example/mdn").is_ok());
        assert!(allowed.check("file:///etc/passwd").is_err());
        assert!(MdnTargetPolicy::parse(&["ftp://x".into()]).is_err());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let none = MdnTargetPolicy::default();
        let refused = none
            .resolve("http://localhost.localdomain:1/mdn")
            .await
            .map(|t| t.url);
        // Resolves to loopback on every machine that knows the name; a
        // machine that cannot resolve it refuses it too.
        assert!(refused.is_err(), "{refused:?}");
    }
}
