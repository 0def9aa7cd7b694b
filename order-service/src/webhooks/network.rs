//! Which addresses a webhook may reach: public unicast only, unless an allowed network (CIDR,
//! `ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS`) contains the address. The check is made on resolved
//! addresses inside the connector (see [`super::connector`]), so a name that resolves to an
//! internal address — at save time or only later (DNS rebinding) — is refused when connecting.
//! URL rules (https://, http:// only for hosts inside the allowed networks) are checked here too,
//! when an endpoint is saved and again at every attempt.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network (like 10.0.0.0/8 or fd00::/8)"))?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The networks webhooks may reach although they are not public.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Vec<Cidr>);

impl AllowedNetworks {
    /// Parses a comma-separated list of CIDRs (empty: none).
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(AllowedNetworks)
    }

    /// Whether an allowed network contains `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// Why a connection to `ip` is refused, or `None` when it may be made.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allows(ip) {
            return None;
        }
        forbidden_range(canonical(ip))
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible forms as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The name of the non-public range `ip` is in, if any.
fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("an unspecified address (0.0.0.0/8)")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address (RFC 1918)")
    } else if ip.is_link_local() {
        Some("a link-local address (169.254.0.0/16)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared address (100.64.0.0/10)")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() || a >= 240 {
        Some("a reserved address (240.0.0.0/4)")
    } else if ip.is_documentation() || (a == 192 && b == 0 && ip.octets()[2] == 0) {
        Some("a documentation or IETF-reserved address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address (198.18.0.0/15)")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("an unspecified address (::)")
    } else if ip.is_loopback() {
        Some("a loopback address (::1)")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a unique local address (fc00::/7)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address (fe80::/10)")
    } else if first & 0xffc0 == 0xfec0 {
        Some("a site-local address (fec0::/10)")
    } else if ip.is_multicast() {
        Some("a multicast address (ff00::/8)")
    } else if let Some(v4) = ip.to_ipv4() {
        // IPv4-compatible (::a.b.c.d) and NAT64 forms reach IPv4 addresses: judge those.
        forbidden_v4(v4).map(|_| "an IPv4-compatible form of a non-public address")
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., c, d] = ip.segments();
        let v4 = Ipv4Addr::new((c >> 8) as u8, c as u8, (d >> 8) as u8, d as u8);
        forbidden_v4(v4).map(|_| "a NAT64 form of a non-public address")
    } else {
        None
    }
}

/// A webhook URL that passed the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// The URL as given.
    pub uri: http::Uri,
    /// https or not.
    pub tls: bool,
    /// The host, without brackets.
    pub host: String,
    /// The port (the scheme's default when not given).
    pub port: u16,
}

/// Checks a URL against the rules: absolute, at most 2048 characters, no user information,
/// `https://`, or `http://` for a host inside the allowed networks (a literal address must be
/// inside them; a name is accepted when networks are configured, and every address it resolves
/// to is checked when connecting), and no literal address in a non-public range unless allowed.
pub fn check_url(text: &str, allowed: &AllowedNetworks) -> Result<TargetUrl, String> {
    if text.is_empty() {
        return Err("is required".into());
    }
    if text.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|error| format!("is not a URL: {error}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => return Err(format!("scheme {other:?} is not allowed: use https://")),
        None => return Err("must be an absolute https:// URL".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "must name a host".to_owned())?;
    if authority.as_str().contains('@') {
        return Err("must not contain user information (user:password@)".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err("must name a host".into());
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    if !tls {
        // http:// only where the allowed networks reach: a literal address must be inside
        // them; a name is allowed only when networks are configured at all, and each address
        // it resolves to is checked again when connecting.
        let inside = match host.parse::<IpAddr>() {
            Ok(ip) => allowed.allows(ip),
            Err(_) => !allowed.0.is_empty(),
        };
        if !inside {
            return Err("must be https:// (http:// is only for hosts inside \
                 ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS)"
                .into());
        }
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && let Some(range) = allowed.refusal(ip)
    {
        return Err(format!(
            "points at {range}, which webhooks may not reach unless \
             ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS allows it"
        ));
    }
    Ok(TargetUrl {
        uri,
        tls,
        host,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        AllowedNetworks::default()
            .refusal(ip.parse().unwrap())
            .is_some()
    }

    #[test]
    fn non_public_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(ip), "{ip} is public");
        }
    }

    #[test]
    fn allowed_networks_open_their_ranges_only() {
        let allowed = AllowedNetworks::parse("127.0.0.0/8, fd00::/8").unwrap();
        assert!(allowed.refusal("127.0.0.1".parse().unwrap()).is_none());
        assert!(
            allowed
                .refusal("::ffff:127.0.0.1".parse().unwrap())
                .is_none()
        );
        assert!(allowed.refusal("fd12::1".parse().unwrap()).is_none());
        assert!(allowed.refusal("10.0.0.1".parse().unwrap()).is_some());
        assert!(AllowedNetworks::parse("10.0.0.0/33").is_err());
        assert!(AllowedNetworks::parse("nonsense").is_err());
        assert_eq!(
            AllowedNetworks::parse("").unwrap(),
            AllowedNetworks::default()
        );
    }

    #[test]
    fn urls_follow_the_rules() {
        let none = AllowedNetworks::default();
        let local = AllowedNetworks::parse("127.0.0.0/8").unwrap();
        assert!(check_url("https://example.com/hook", &none).is_ok());
        assert!(check_url("http://example.com/hook", &none).is_err());
        assert!(check_url("http://127.0.0.1:8080/hook", &none).is_err());
        assert!(check_url("https://127.0.0.1/hook", &none).is_err());
        assert!(check_url("http://127.0.0.1:8080/hook", &local).is_ok());
        assert!(check_url("http://10.0.0.1/hook", &local).is_err());
        assert!(check_url("ftp://example.com/", &none).is_err());
        assert!(check_url("https://user:pw@example.com/", &none).is_err());
        assert!(check_url("/relative", &none).is_err());
        assert!(check_url("https://[::1]/", &none).is_err());
        let target = check_url("https://example.com/x", &none).unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("example.com", 443, true)
        );
    }
}
