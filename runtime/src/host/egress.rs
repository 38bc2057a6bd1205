//! The addresses a job's HTTP call may not reach: one table, derived from the
//! IANA special-purpose address registries (IPv4: RFC 6890 and its updates,
//! IPv6: RFC 6890, RFC 8190 and theirs), every row with its range, name and
//! RFC, plus the blocks those registries leave to others (IPv4 multicast,
//! limited broadcast, reserved 240/4; IPv6 multicast, deprecated site-local,
//! the deprecated IPv4-compatible and the IPv4-translated forms, and all of
//! the IPv6 space outside global unicast 2000::/3).
//!
//! An address is judged by the most specific row that holds it
//! ([`row`]); no row: an ordinary public address, allowed.
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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Net {
    Net::V4(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Net {
    Net::V6(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

const fn row(net: Net, name: &'static str, rfc: &'static str, verdict: Verdict) -> Row {
    Row {
        net,
        name,
        rfc,
        verdict,
    }
}

use Verdict::{Reachable, Refuse};

/// Every special-purpose block, IPv4 then IPv6.
pub static TABLE: &[Row] = &[
    // IPv4 special-purpose address registry.
    row(v4(0, 0, 0, 0, 8), "this network", "RFC 791", Refuse),
    row(
        v4(0, 0, 0, 0, 32),
        "this host on this network",
        "RFC 1122",
        Refuse,
    ),
    row(v4(10, 0, 0, 0, 8), "private-use", "RFC 1918", Refuse),
    row(
        v4(100, 64, 0, 0, 10),
        "shared address space (carrier-grade NAT)",
        "RFC 6598",
        Refuse,
    ),
    row(v4(127, 0, 0, 0, 8), "loopback", "RFC 1122", Refuse),
    row(
        v4(169, 254, 0, 0, 16),
        "link-local (cloud metadata 169.254.169.254 lives here)",
        "RFC 3927",
        Refuse,
    ),
    row(v4(172, 16, 0, 0, 12), "private-use", "RFC 1918", Refuse),
    row(
        v4(192, 0, 0, 0, 24),
        "IETF protocol assignments",
        "RFC 6890",
        Refuse,
    ),
    row(
        v4(192, 0, 0, 0, 29),
        "IPv4 service continuity prefix",
        "RFC 7335",
        Refuse,
    ),
    row(
        v4(192, 0, 0, 8, 32),
        "IPv4 dummy address",
        "RFC 7600",
        Refuse,
    ),
    row(
        v4(192, 0, 0, 9, 32),
        "port control protocol anycast",
        "RFC 7723",
        Reachable,
    ),
    row(v4(192, 0, 0, 10, 32), "TURN anycast", "RFC 8155", Reachable),
    row(
        v4(192, 0, 0, 170, 32),
        "NAT64/DNS64 discovery",
        "RFC 8880",
        Refuse,
    ),
    row(
        v4(192, 0, 0, 171, 32),
        "NAT64/DNS64 discovery",
        "RFC 8880",
        Refuse,
    ),
    row(
        v4(192, 0, 2, 0, 24),
        "documentation (TEST-NET-1)",
        "RFC 5737",
        Refuse,
    ),
    row(v4(192, 31, 196, 0, 24), "AS112-v4", "RFC 7535", Reachable),
    row(v4(192, 52, 193, 0, 24), "AMT", "RFC 7450", Reachable),
    row(
        v4(192, 88, 99, 0, 24),
        "deprecated 6to4 relay anycast",
        "RFC 7526",
        Refuse,
    ),
    row(
        v4(192, 88, 99, 2, 32),
        "6a44 relay anycast",
        "RFC 6751",
        Refuse,
    ),
    row(v4(192, 168, 0, 0, 16), "private-use", "RFC 1918", Refuse),
    row(
        v4(192, 175, 48, 0, 24),
        "direct delegation AS112 service",
        "RFC 7534",
        Reachable,
    ),
    row(v4(198, 18, 0, 0, 15), "benchmarking", "RFC 2544", Refuse),
    row(
        v4(198, 51, 100, 0, 24),
        "documentation (TEST-NET-2)",
        "RFC 5737",
        Refuse,
    ),
    row(
        v4(203, 0, 113, 0, 24),
        "documentation (TEST-NET-3)",
        "RFC 5737",
        Refuse,
    ),
    // Not unicast (the multicast registry, RFC 1112, RFC 919).
    row(v4(224, 0, 0, 0, 4), "multicast", "RFC 5771", Refuse),
    row(v4(240, 0, 0, 0, 4), "reserved", "RFC 1112", Refuse),
    row(
        v4(255, 255, 255, 255, 32),
        "limited broadcast",
        "RFC 919",
        Refuse,
    ),
    // IPv6: everything outside global unicast is reserved (the IPv6 address
    // space registry); the rows below name the special blocks in it.
    row(
        v6([0; 8], 0),
        "outside global unicast 2000::/3",
        "RFC 4291",
        Refuse,
    ),
    row(
        v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3),
        "global unicast",
        "RFC 4291",
        Reachable,
    ),
    // IPv6 special-purpose address registry, and the embedded-IPv4 forms.
    row(v6([0; 8], 128), "unspecified", "RFC 4291", Refuse),
    row(
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        "loopback",
        "RFC 4291",
        Refuse,
    ),
    row(
        v6([0; 8], 96),
        "IPv4-compatible (deprecated)",
        "RFC 4291",
        Refuse,
    ),
    row(
        v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        "IPv4-mapped",
        "RFC 4291",
        Refuse,
    ),
    row(
        v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
        "IPv4-translated",
        "RFC 2765",
        Refuse,
    ),
    row(
        v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        "NAT64 well-known prefix",
        "RFC 6052",
        Verdict::Embeds(Embedding::Nat64),
    ),
    row(
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "NAT64 local-use prefix",
        "RFC 8215",
        Refuse,
    ),
    row(
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard-only",
        "RFC 6666",
        Refuse,
    ),
    row(
        v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64),
        "dummy IPv6 prefix",
        "RFC 9780",
        Refuse,
    ),
    row(
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments",
        "RFC 2928",
        Refuse,
    ),
    row(
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        "Teredo",
        "RFC 4380",
        Verdict::Embeds(Embedding::Teredo),
    ),
    row(
        v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128),
        "port control protocol anycast",
        "RFC 7723",
        Reachable,
    ),
    row(
        v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128),
        "TURN anycast",
        "RFC 8155",
        Reachable,
    ),
    row(
        v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128),
        "DNS-SD service registration anycast",
        "RFC 9665",
        Reachable,
    ),
    row(
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        "benchmarking",
        "RFC 5180",
        Refuse,
    ),
    row(
        v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32),
        "AMT",
        "RFC 7450",
        Reachable,
    ),
    row(
        v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48),
        "AS112-v6",
        "RFC 7535",
        Reachable,
    ),
    row(
        v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28),
        "deprecated ORCHID",
        "RFC 4843",
        Refuse,
    ),
    row(
        v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28),
        "ORCHIDv2",
        "RFC 7343",
        Reachable,
    ),
    row(
        v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28),
        "drone remote ID entity tags",
        "RFC 9374",
        Reachable,
    ),
    row(
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
        "RFC 3849",
        Refuse,
    ),
    row(
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        "6to4",
        "RFC 3056",
        Verdict::Embeds(Embedding::SixToFour),
    ),
    row(
        v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48),
        "direct delegation AS112 service",
        "RFC 7534",
        Reachable,
    ),
    row(
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        "documentation",
        "RFC 9637",
        Refuse,
    ),
    row(
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        "SRv6 SIDs",
        "RFC 9602",
        Refuse,
    ),
    row(
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique-local (cloud metadata fd00:ec2::254 lives here)",
        "RFC 4193",
        Refuse,
    ),
    row(
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "link-local",
        "RFC 4291",
        Refuse,
    ),
    row(
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
        "RFC 3879",
        Refuse,
    ),
    row(
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        "multicast",
        "RFC 4291",
        Refuse,
    ),
];

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
                if let Some(inner) = row_of(IpAddr::V4(v4)).filter(|r| r.verdict == Refuse) {
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
