//! Which network addresses the http provider may connect to on a tenant's behalf.
//!
//! A scenario author chooses the URLs the http provider fetches, and the appliance fetches them
//! from inside the operator's network. Unless the operator names a host in `allowed_hosts` (or
//! sets `allow_private_networks`), a URL may only reach globally routable addresses: loopback,
//! private, link-local (cloud metadata), carrier-grade NAT, multicast and reserved ranges are
//! refused. The check runs on the resolved addresses the connection then uses, so a name that
//! resolves to a public address at one lookup and to an internal one at the next cannot slip
//! through between check and connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a URL's host was refused: the message a scenario author sees (no resolved address in
/// it, so the refusal does not map the operator's network for them).
pub const NON_PUBLIC_ADDRESS: &str =
    "url host resolves to a non-public address (loopback, private, link-local or reserved); \
     the operator must list the host in allowed_hosts to allow it";

/// True when `ip` is globally routable, i.e. not in any range that reaches the appliance
/// itself, the operator's private networks, or nothing at all.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let non_public = a == 0 // "this network", 0.0.0.0 included
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 169 && b == 254) // link-local, cloud metadata services
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224; // multicast, reserved, broadcast
    !non_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    let first = segments[0];
    let non_public = (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first & 0xff00) == 0xff00 // multicast
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation
        || (first == 0x2001 && segments[1] == 0) // Teredo: tunnels to an IPv4 the check cannot see
        || (first == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only
        || (first & 0xe000) != 0x2000; // outside global unicast 2000::/3
    !non_public
}

/// The IPv4 address an IPv6 address carries, for the forms a connection reaches it by:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (`::` and `::1` land in
/// 0.0.0.0/8, which is not public either), NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return Some(from(s[6], s[7]));
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    None
}

/// Checks a resolved answer: refused as a whole when any address in it is not public (a name
/// with one internal address is treated as internal).
///
/// # Errors
/// `PermissionDenied` carrying [`NON_PUBLIC_ADDRESS`].
pub fn only_public(addresses: Vec<SocketAddr>) -> std::io::Result<Vec<SocketAddr>> {
    if addresses.iter().any(|address| !is_public(address.ip())) {
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, NON_PUBLIC_ADDRESS));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_reserved_addresses_are_not_public() {
        for address in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
            "4000::1",
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert!(!is_public(ip), "{address} must not be public");
        }
    }

    #[test]
    fn global_unicast_addresses_are_public() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.1.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.0.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert!(is_public(ip), "{address} must be public");
        }
    }

    #[test]
    fn an_answer_with_any_internal_address_is_refused_with_the_policy_message() {
        let public: SocketAddr = "8.8.8.8:443".parse().unwrap();
        for internal in ["127.0.0.1:443", "[::ffff:169.254.169.254]:80", "[fd00::1]:443"] {
            let error = only_public(vec![public, internal.parse().unwrap()]).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied, "{internal}");
            assert_eq!(error.to_string(), NON_PUBLIC_ADDRESS);
        }
        assert_eq!(only_public(vec![public]).unwrap(), vec![public]);
    }
}
