//! Where status hooks may be sent. A status hook is a URL chosen by whoever
//! submits a job, and the server POSTs to it: without a policy, any client could
//! make the server reach its own loopback services or a cloud metadata endpoint
//! (169.254.169.254). Loopback, link-local and unspecified addresses are denied
//! unless the operator allows them (`hooks.allow`); `hooks.deny` adds networks.
//!
//! The policy is applied to the address actually connected to: IP-literal URLs are
//! checked at submit (a 400) and before each delivery, and host names through the
//! webhook client's resolver, so a name that resolves (or later re-resolves) to a
//! denied address is never connected to. Redirects are not followed.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;

/// Networks denied by default: loopback, link-local (incl. cloud metadata),
/// unspecified.
const DEFAULT_DENY: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/8",
    "::/128",
];

/// The hook address policy: an address in `allow` is permitted; otherwise one in
/// `deny` (the defaults plus the operator's) is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct HookPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Default for HookPolicy {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: DEFAULT_DENY
                .iter()
                .map(|n| n.parse().expect("valid default network"))
                .collect(),
        }
    }
}

impl HookPolicy {
    /// The default policy with these allowed and extra denied networks (CIDR
    /// text, or a bare address for a single host). The error names the bad entry.
    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let parse = |s: &String| -> Result<IpNet, String> {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a network (CIDR such as 10.0.0.0/8) or address"))
        };
        let mut policy = Self {
            allow: allow.iter().map(parse).collect::<Result<_, _>>()?,
            ..Self::default()
        };
        for d in deny {
            policy.deny.push(parse(d)?);
        }
        Ok(policy)
    }

    /// Whether hooks may connect to `ip`; the error says which rule refuses it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        // ::ffff:127.0.0.1 is 127.0.0.1.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match self.deny.iter().find(|n| n.contains(&ip)) {
            Some(net) => Err(format!(
                "address {ip} is in the denied network {net} (allow it with `hooks.allow`)"
            )),
            None => Ok(()),
        }
    }

    /// Check the host of a URL when it is an IP literal (names are checked when
    /// they are resolved).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let Ok(url) = reqwest::Url::parse(url) else {
            return Err("is not a URL".into());
        };
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

/// The webhook client's resolver: the system resolver, with every denied address
/// removed; a name left with none fails to resolve, naming why.
#[derive(Debug, Clone)]
pub struct PolicyResolver(pub Arc<HookPolicy>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let fut: Pin<Box<dyn Future<Output = Result<reqwest::dns::Addrs, BoxError>> + Send>> =
            Box::pin(async move {
                let host = name.as_str().to_string();
                let found: Vec<SocketAddr> =
                    tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
                let mut refused = None;
                let allowed: Vec<SocketAddr> = found
                    .into_iter()
                    .filter(|a| match policy.check(a.ip()) {
                        Ok(()) => true,
                        Err(why) => {
                            refused = Some(why);
                            false
                        }
                    })
                    .collect();
                if allowed.is_empty() {
                    let why = refused.unwrap_or_else(|| "no address".into());
                    return Err(format!("{host}: {why}").into());
                }
                Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
            });
        fut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_and_unspecified_are_denied_by_default() {
        let p = HookPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
        ] {
            assert!(p.check(ip(bad)).is_err(), "{bad}");
        }
        for good in ["10.1.2.3", "192.168.1.1", "93.184.216.34", "2001:db8::1"] {
            assert!(p.check(ip(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn allow_beats_deny_and_deny_adds_networks() {
        let p = HookPolicy::new(&["127.0.0.1".into()], &["10.0.0.0/8".into()]).unwrap();
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("127.0.0.2")).is_err());
        let why = p.check(ip("10.9.9.9")).unwrap_err();
        assert!(why.contains("10.0.0.0/8"), "{why}");
        assert!(HookPolicy::new(&["nonsense".into()], &[]).is_err());
    }

    #[test]
    fn urls_with_ip_literals_are_checked_names_are_left_to_the_resolver() {
        let p = HookPolicy::default();
        assert!(p.check_url("http://127.0.0.1:9/hook").is_err());
        assert!(p.check_url("http://[::1]/hook").is_err());
        assert!(
            p.check_url("http://169.254.169.254/latest/meta-data")
                .is_err()
        );
        assert!(p.check_url("http://hooks.example.com/x").is_ok());
        assert!(p.check_url("https://93.184.216.34/x").is_ok());
    }
}
