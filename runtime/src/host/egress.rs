//! The addresses a job's HTTP call may not reach: one table, derived from the
//! IANA special-purpose address registries (IPv4: RFC 6890 and its updates,
//! IPv6: RFC 6890, RFC 8190 and theirs), every row with its range, name and
//! RFC, plus the blocks those registries leave to others (IPv4 multicast,
//! limited broadcast, reserved 240/4; IPv6 multicast, deprecated site-local,
//! the deprecated IPv4-compatible and the IPv4-translated forms, and all of
//! the IPv6 space outside global unicast 2000::/3).
//!
//! The table itself, one row per block, is the `table` module; this one
//! reads it. An address is judged by the most specific row that holds it
//! ([`row_of`]); no row: an ordinary public address, allowed.
//!
//! - [`Verdict::Refuse`]: the registry marks the block not globally reachable
//!   (or it is not unicast): refused.
//! - [`Verdict::Reachable`]: a block the registry marks globally reachable
//!   inside a refused one (e.g. 192.0.0.9/32 inside 192.0.0.0/24): allowed.
//! - [`Verdict::Embeds`]: a globally routed prefix whose translator or relay
//!   delivers to an IPv4 address carried in the IPv6 one (NAT64 64:ff9b::/96,
//!   6to4 2002::/16, Teredo 2001::/32): the embedded IPv4 addresses are decoded
//!   and judged by the IPv4 rows, so `64:ff9b::a9fe:a9fe` is refused as the
//!   metadata address it reaches, while `64:ff9b::808:808` (how an IPv6-only
//!   node behind DNS64 reaches a public IPv4 host) is allowed.
//!
//! The IPv4-in-IPv6 forms that no Internet translator routes are refused
//! outright, whatever they embed: IPv4-mapped `::ffff:0:0/96` (a dual-stack
//! socket delivers it to the embedded address on the host's own network),
//! IPv4-translated `::ffff:0:0:0/96`, IPv4-compatible `::/96` and the NAT64
//! local-use prefix `64:ff9b:1::/48`. No public DNS answer carries them, and a
//! decoded public address would gain nothing over its plain IPv4 form.

mod table;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use self::table::TABLE;

/// An address block: network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// An IPv4 block.
    V4(Ipv4Addr, u8),
    /// An IPv6 block.
    V6(Ipv6Addr, u8),
}

impl Net {
    /// Whether `ip` lies in this block (an IPv4 block holds only IPv4
    /// addresses, an IPv6 block only IPv6 ones).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Net::V4(net, len), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                a.to_bits() & mask == net.to_bits() & mask
            }
            (Net::V6(net, len), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                a.to_bits() & mask == net.to_bits() & mask
            }
            _ => false,
        }
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        match *self {
            Net::V4(_, l) | Net::V6(_, l) => l,
        }
    }

    /// The first and last address of the block.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match *self {
            Net::V4(net, len) => {
                let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                let first = net.to_bits() & !host;
                (
                    IpAddr::V4(Ipv4Addr::from_bits(first)),
                    IpAddr::V4(Ipv4Addr::from_bits(first | host)),
                )
            }
            Net::V6(net, len) => {
                let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                let first = net.to_bits() & !host;
                (
                    IpAddr::V6(Ipv6Addr::from_bits(first)),
                    IpAddr::V6(Ipv6Addr::from_bits(first | host)),
                )
            }
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Net::V4(a, l) => write!(f, "{a}/{l}"),
            Net::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

impl Net {
    /// The block `prefix` spells: `192.0.2.0/24`, or `2001:db8::/32` (hex in
    /// lower case, `::` for one run of zero groups, no dotted IPv4 tail).
    /// Evaluated when the table is built, at compile time: a malformed
    /// prefix, or one with bits set past its length, fails the build.
    const fn parse(prefix: &str) -> Net {
        let s = prefix.as_bytes();
        let mut slash = 0;
        while slash < s.len() && s[slash] != b'/' {
            slash += 1;
        }
        assert!(slash < s.len(), "a prefix ends in /length");
        let len = field(s, slash + 1, s.len(), 10);
        let mut colon = false;
        let mut i = 0;
        while i < slash {
            colon |= s[i] == b':';
            i += 1;
        }
        let net = if colon {
            assert!(len <= 128, "an IPv6 prefix is at most /128");
            Net::V6(parse_v6(s, slash), len as u8)
        } else {
            assert!(len <= 32, "an IPv4 prefix is at most /32");
            Net::V4(parse_v4(s, slash), len as u8)
        };
        let (bits, host) = match net {
            Net::V4(a, _) => (a.to_bits() as u128, (u32::MAX as u128) >> len),
            Net::V6(a, _) => match u128::MAX.checked_shr(len) {
                Some(host) => (a.to_bits(), host),
                None => (a.to_bits(), 0),
            },
        };
        assert!(bits & host == 0, "a prefix has no bits set past its length");
        net
    }
}

/// The number `s[from..to]` spells in `radix` (10 or 16): 1 to 4 digits.
const fn field(s: &[u8], from: usize, to: usize, radix: u32) -> u32 {
    assert!(
        from < to && to - from <= 4,
        "a prefix's field has 1 to 4 digits"
    );
    let mut n = 0;
    let mut i = from;
    while i < to {
        let digit = match s[i] {
            b'0'..=b'9' => s[i] - b'0',
            b'a'..=b'f' if radix == 16 => s[i] - b'a' + 10,
            _ => panic!("a prefix's field has a character that is not a digit"),
        };
        n = n * radix + digit as u32;
        i += 1;
    }
    n
}

/// The IPv4 address `s[..end]`: four decimal fields.
const fn parse_v4(s: &[u8], end: usize) -> Ipv4Addr {
    let mut octets = [0u8; 4];
    let (mut n, mut start, mut i) = (0, 0, 0);
    while i <= end {
        if i == end || s[i] == b'.' {
            assert!(n < 4, "an IPv4 address has four fields");
            let value = field(s, start, i, 10);
            assert!(value <= 255, "an IPv4 field is at most 255");
            octets[n] = value as u8;
            n += 1;
            start = i + 1;
        }
        i += 1;
    }
    assert!(n == 4, "an IPv4 address has four fields");
    Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])
}

/// The IPv6 address `s[..end]`: eight hex groups, or fewer around one `::`.
const fn parse_v6(s: &[u8], end: usize) -> Ipv6Addr {
    let mut read = [0u16; 8];
    let mut n = 0;
    // Where the `::` stands: how many groups come before it.
    let mut gap = None;
    let mut i = 0;
    if end >= 2 && s[0] == b':' && s[1] == b':' {
        gap = Some(0);
        i = 2;
    }
    while i < end {
        let mut j = i;
        while j < end && s[j] != b':' {
            j += 1;
        }
        assert!(n < 8, "an IPv6 address has at most eight groups");
        read[n] = field(s, i, j, 16) as u16;
        n += 1;
        if j == end {
            break;
        }
        if j + 1 < end && s[j + 1] == b':' {
            assert!(gap.is_none(), "an IPv6 address has one `::` at most");
            gap = Some(n);
            i = j + 2;
        } else {
            assert!(j + 1 < end, "an IPv6 address does not end in one `:`");
            i = j + 1;
        }
    }
    let mut groups = [0u16; 8];
    match gap {
        None => {
            assert!(n == 8, "an IPv6 address without `::` has eight groups");
            groups = read;
        }
        Some(before) => {
            assert!(n < 8, "a `::` stands for one group at least");
            let after = n - before;
            let mut k = 0;
            while k < before {
                groups[k] = read[k];
                k += 1;
            }
            k = 0;
            while k < after {
                groups[8 - after + k] = read[before + k];
                k += 1;
            }
        }
    }
    let g = groups;
    Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])
}

/// How a row judges the addresses it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused.
    Refuse,
    /// Allowed: globally reachable per the registry.
    Reachable,
    /// Allowed only if every IPv4 address it embeds is.
    Embeds(Embedding),
}

/// Where an IPv6 prefix carries IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// The last 32 bits (RFC 6052, /96 prefix).
    Nat64,
    /// Bits 16 to 48 (RFC 3056).
    SixToFour,
    /// The server in bits 32 to 64, the client in the last 32, inverted
    /// (RFC 4380).
    Teredo,
}

impl Embedding {
    /// The IPv4 addresses `a` embeds.
    pub fn decode(self, a: Ipv6Addr) -> Vec<Ipv4Addr> {
        let bits = a.to_bits();
        match self {
            Embedding::Nat64 => vec![Ipv4Addr::from_bits(bits as u32)],
            Embedding::SixToFour => vec![Ipv4Addr::from_bits((bits >> 80) as u32)],
            Embedding::Teredo => vec![
                Ipv4Addr::from_bits((bits >> 64) as u32),
                Ipv4Addr::from_bits(!(bits as u32)),
            ],
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// The block.
    pub net: Net,
    /// What it is, as the registry names it.
    pub name: &'static str,
    /// Where it is defined.
    pub rfc: &'static str,
    /// Refused, allowed, or judged by what it embeds.
    pub verdict: Verdict,
}

/// A row of the table: `prefix` as [`Net::parse`] reads it.
const fn row(prefix: &str, name: &'static str, rfc: &'static str, verdict: Verdict) -> Row {
    Row {
        net: Net::parse(prefix),
        name,
        rfc,
        verdict,
    }
}

/// The most specific row holding `ip`, if any.
pub fn row_of(ip: IpAddr) -> Option<&'static Row> {
    TABLE
        .iter()
        .filter(|r| r.net.contains(ip))
        .max_by_key(|r| r.net.len())
}

/// An address a job may not reach, and the row that says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The address.
    pub ip: IpAddr,
    /// Its row.
    pub row: &'static Row,
    /// For an embedding prefix: the embedded IPv4 address refused, and its row.
    pub via: Option<(Ipv4Addr, &'static Row)>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refused { ip, row, via } = self;
        match via {
            None => write!(f, "{ip} is {} ({}, {})", row.name, row.net, row.rfc),
            Some((v4, inner)) => write!(
                f,
                "{ip} is {} ({}, {}) reaching {v4}, which is {} ({}, {})",
                row.name, row.net, row.rfc, inner.name, inner.net, inner.rfc
            ),
        }
    }
}

/// Whether a job may reach `ip` (when the class's allowlist does not name it
/// as an IP literal): `Err` says which row refuses it.
pub fn check(ip: IpAddr) -> Result<(), Refused> {
    let Some(row) = row_of(ip) else {
        return Ok(());
    };
    match (row.verdict, ip) {
        (Verdict::Reachable, _) => Ok(()),
        (Verdict::Embeds(how), IpAddr::V6(a)) => {
            for v4 in how.decode(a) {
                if let Some(inner) = row_of(IpAddr::V4(v4)).filter(|r| r.verdict == Verdict::Refuse)
                {
                    return Err(Refused {
                        ip,
                        row,
                        via: Some((v4, inner)),
                    });
                }
            }
            Ok(())
        }
        _ => Err(Refused { ip, row, via: None }),
    }
}

#[cfg(test)]
mod tests;
