//! The table, row by row: each row's block holds its first and last address
//! and not the neighbours outside; an address the row is the most specific
//! for gets the row's verdict; and named cases pin what each row means.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("{s} is an IP"))
}

fn step(a: IpAddr, up: bool) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => {
            let b = a.to_bits();
            let n = if up {
                b.checked_add(1)
            } else {
                b.checked_sub(1)
            }?;
            Some(IpAddr::V4(Ipv4Addr::from_bits(n)))
        }
        IpAddr::V6(a) => {
            let b = a.to_bits();
            let n = if up {
                b.checked_add(1)
            } else {
                b.checked_sub(1)
            }?;
            Some(IpAddr::V6(Ipv6Addr::from_bits(n)))
        }
    }
}

fn middle(net: &Net) -> IpAddr {
    match net.bounds() {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() / 2 + b.to_bits() / 2))
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() / 2 + b.to_bits() / 2))
        }
        _ => unreachable!(),
    }
}

#[test]
fn every_row_holds_its_edges_and_not_its_neighbours() {
    for r in TABLE {
        let (first, last) = r.net.bounds();
        assert!(r.net.contains(first) && r.net.contains(last), "{}", r.net);
        if let Some(before) = step(first, false) {
            assert!(!r.net.contains(before), "{} holds {before}", r.net);
        }
        if let Some(after) = step(last, true) {
            assert!(!r.net.contains(after), "{} holds {after}", r.net);
        }
        // The network address is the block's first address: no stray host bits.
        assert_eq!(
            match r.net {
                Net::V4(a, _) => IpAddr::V4(a),
                Net::V6(a, _) => IpAddr::V6(a),
            },
            first,
            "{}",
            r.net
        );
    }
}

#[test]
fn every_row_decides_the_addresses_it_is_the_most_specific_for() {
    for r in TABLE {
        let (first, last) = r.net.bounds();
        let own: Vec<IpAddr> = [first, last, middle(&r.net)]
            .into_iter()
            .filter(|a| std::ptr::eq(row_of(*a).unwrap(), r))
            .collect();
        assert!(
            !own.is_empty(),
            "{} is shadowed by more specific rows",
            r.net
        );
        for a in own {
            let got = check(a);
            match r.verdict {
                Verdict::Refuse => {
                    let e = got.expect_err(&a.to_string());
                    assert!(std::ptr::eq(e.row, r) && e.via.is_none(), "{a}: {e}");
                }
                Verdict::Reachable => assert_eq!(got, Ok(()), "{a}"),
                Verdict::Embeds(how) => {
                    let IpAddr::V6(v6) = a else { unreachable!() };
                    let refused = how
                        .decode(v6)
                        .into_iter()
                        .any(|v4| check(IpAddr::V4(v4)).is_err());
                    assert_eq!(got.is_err(), refused, "{a}: {got:?}");
                }
            }
        }
    }
}

/// Named cases, at least one inside each row and the edges that matter:
/// `(address, Some(name of the refusing row) | None for allowed)`.
const CASES: &[(&str, Option<&str>)] = &[
    // IPv4.
    ("0.0.0.0", Some("this host on this network")),
    ("0.1.2.3", Some("this network")),
    ("0.255.255.255", Some("this network")),
    ("1.0.0.0", None),
    ("9.255.255.255", None),
    ("10.0.0.0", Some("private-use")),
    ("10.1.2.3", Some("private-use")),
    ("10.255.255.255", Some("private-use")),
    ("11.0.0.0", None),
    ("100.63.255.255", None),
    (
        "100.64.0.0",
        Some("shared address space (carrier-grade NAT)"),
    ),
    (
        "100.127.255.255",
        Some("shared address space (carrier-grade NAT)"),
    ),
    ("100.128.0.0", None),
    ("126.255.255.255", None),
    ("127.0.0.1", Some("loopback")),
    ("127.255.255.255", Some("loopback")),
    ("128.0.0.0", None),
    ("169.253.255.255", None),
    (
        "169.254.169.254",
        Some("link-local (cloud metadata 169.254.169.254 lives here)"),
    ),
    ("169.255.0.0", None),
    ("172.15.255.255", None),
    ("172.16.0.1", Some("private-use")),
    ("172.31.255.255", Some("private-use")),
    ("172.32.0.0", None),
    ("191.255.255.255", None),
    ("192.0.0.0", Some("IPv4 service continuity prefix")),
    ("192.0.0.7", Some("IPv4 service continuity prefix")),
    ("192.0.0.8", Some("IPv4 dummy address")),
    ("192.0.0.9", None),
    ("192.0.0.10", None),
    ("192.0.0.11", Some("IETF protocol assignments")),
    ("192.0.0.170", Some("NAT64/DNS64 discovery")),
    ("192.0.0.171", Some("NAT64/DNS64 discovery")),
    ("192.0.0.255", Some("IETF protocol assignments")),
    ("192.0.1.0", None),
    ("192.0.2.1", Some("documentation (TEST-NET-1)")),
    ("192.0.3.0", None),
    ("192.31.196.1", None),
    ("192.52.193.1", None),
    ("192.88.99.1", Some("deprecated 6to4 relay anycast")),
    ("192.88.99.2", Some("6a44 relay anycast")),
    ("192.167.255.255", None),
    ("192.168.0.0", Some("private-use")),
    ("192.168.255.255", Some("private-use")),
    ("192.169.0.0", None),
    ("192.175.48.1", None),
    ("198.17.255.255", None),
    ("198.18.0.0", Some("benchmarking")),
    ("198.19.255.255", Some("benchmarking")),
    ("198.20.0.0", None),
    ("198.51.100.7", Some("documentation (TEST-NET-2)")),
    ("203.0.113.7", Some("documentation (TEST-NET-3)")),
    ("223.255.255.255", None),
    ("224.0.0.0", Some("multicast")),
    ("239.255.255.255", Some("multicast")),
    ("240.0.0.0", Some("reserved")),
    ("255.255.255.254", Some("reserved")),
    ("255.255.255.255", Some("limited broadcast")),
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    // IPv6.
    ("::", Some("unspecified")),
    ("::1", Some("loopback")),
    ("::2", Some("IPv4-compatible (deprecated)")),
    ("::127.0.0.1", Some("IPv4-compatible (deprecated)")),
    ("::8.8.8.8", Some("IPv4-compatible (deprecated)")),
    ("::ffff:127.0.0.1", Some("IPv4-mapped")),
    ("::ffff:8.8.8.8", Some("IPv4-mapped")),
    ("::ffff:0:7f00:1", Some("IPv4-translated")),
    ("::ffff:0:808:808", Some("IPv4-translated")),
    ("::1:0:0:0", Some("outside global unicast 2000::/3")),
    ("64:ff9b::7f00:1", Some("NAT64 well-known prefix")),
    ("64:ff9b::a9fe:a9fe", Some("NAT64 well-known prefix")),
    ("64:ff9b::a00:1", Some("NAT64 well-known prefix")),
    ("64:ff9b::808:808", None),
    ("64:ff9b:1::808:808", Some("NAT64 local-use prefix")),
    (
        "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
        Some("NAT64 local-use prefix"),
    ),
    ("100::1", Some("discard-only")),
    ("100::ffff:ffff:ffff:ffff", Some("discard-only")),
    ("100:0:0:1::1", Some("dummy IPv6 prefix")),
    (
        "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("outside global unicast 2000::/3"),
    ),
    ("2000::", None),
    ("2001::", Some("Teredo")),
    // Teredo, RFC 4380's example: server 65.54.227.120, client 192.0.2.45.
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("Teredo")),
    // Server 65.54.227.120, client 8.8.8.8 (inverted: f7f7:f7f7).
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
    // Server 127.0.0.1, client 8.8.8.8.
    ("2001:0:7f00:1:8000:63bf:f7f7:f7f7", Some("Teredo")),
    ("2001:1::1", None),
    ("2001:1::2", None),
    ("2001:1::3", None),
    ("2001:1::4", Some("IETF protocol assignments")),
    ("2001:2::1", Some("benchmarking")),
    ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some("benchmarking")),
    ("2001:3::1", None),
    ("2001:4:112::1", None),
    ("2001:10::1", Some("deprecated ORCHID")),
    ("2001:20::1", None),
    ("2001:30::1", None),
    (
        "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("IETF protocol assignments"),
    ),
    ("2001:200::", None),
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:db8::1", Some("documentation")),
    (
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("documentation"),
    ),
    ("2001:db9::", None),
    ("2002:7f00:1::", Some("6to4")),
    ("2002:a9fe:a9fe::1", Some("6to4")),
    ("2002:808:808::1", None),
    ("2620:4f:8000::1", None),
    ("3fff::1", Some("documentation")),
    (
        "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("documentation"),
    ),
    ("3fff:1000::", None),
    ("4000::1", Some("outside global unicast 2000::/3")),
    ("5f00::1", Some("SRv6 SIDs")),
    (
        "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("outside global unicast 2000::/3"),
    ),
    (
        "fc00::1",
        Some("unique-local (cloud metadata fd00:ec2::254 lives here)"),
    ),
    (
        "fd00:ec2::254",
        Some("unique-local (cloud metadata fd00:ec2::254 lives here)"),
    ),
    (
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("unique-local (cloud metadata fd00:ec2::254 lives here)"),
    ),
    ("fe00::1", Some("outside global unicast 2000::/3")),
    ("fe80::1", Some("link-local")),
    (
        "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("link-local"),
    ),
    ("fec0::1", Some("site-local (deprecated)")),
    ("ff02::1", Some("multicast")),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("multicast")),
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001::200e", None),
];

#[test]
fn named_cases_get_their_rows() {
    for (a, want) in CASES {
        let got = check(ip(a));
        match want {
            None => assert_eq!(got, Ok(()), "{a}"),
            Some(name) => {
                let e = got.expect_err(a);
                assert_eq!(e.row.name, *name, "{a}: {e}");
            }
        }
    }
}

#[test]
fn every_row_has_a_named_case() {
    for r in TABLE {
        let covered = CASES
            .iter()
            .any(|(a, _)| std::ptr::eq(row_of(ip(a)).unwrap_or(&TABLE[0]), r));
        assert!(covered, "no named case for {} ({})", r.net, r.name);
    }
}

#[test]
fn an_embedded_refusal_names_the_address_it_reaches() {
    let e = check(ip("64:ff9b::a9fe:a9fe")).unwrap_err();
    assert_eq!(
        e.via.map(|(v4, _)| v4),
        Some(Ipv4Addr::new(169, 254, 169, 254))
    );
    assert_eq!(
        e.to_string(),
        "64:ff9b::a9fe:a9fe is NAT64 well-known prefix (64:ff9b::/96, RFC 6052) reaching \
         169.254.169.254, which is link-local (cloud metadata 169.254.169.254 lives here) \
         (169.254.0.0/16, RFC 3927)"
    );
    let e = check(ip("2002:7f00:1::")).unwrap_err();
    assert_eq!(e.via.map(|(v4, _)| v4), Some(Ipv4Addr::LOCALHOST));
    let e = check(ip("10.0.0.1")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "10.0.0.1 is private-use (10.0.0.0/8, RFC 1918)"
    );
}

#[test]
fn prefixes_are_read_as_the_standard_library_reads_them() {
    for p in [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "192.0.0.171/32",
        "255.255.255.255/32",
        "::/0",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b:1::/48",
        "100:0:0:1::/64",
        "2001:db8::/32",
        "2620:4f:8000::/48",
        "1:2:3:4:5:6:7:8/128",
        "1:2:3:4:5:6:7::/112",
        "::2:3:4:5:6:7:8/128",
        "fe80::/10",
    ] {
        let (a, len) = p.split_once('/').unwrap();
        let len: u8 = len.parse().unwrap();
        let want = match ip(a) {
            IpAddr::V4(a) => Net::V4(a, len),
            IpAddr::V6(a) => Net::V6(a, len),
        };
        assert_eq!(Net::parse(p), want, "{p}");
    }
}
