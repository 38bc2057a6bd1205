//! The refused-address table, as data: one row per block of the IANA
//! special-purpose address registries (and the blocks they leave to others),
//! each with its prefix, its name as the registry gives it, the RFC that
//! defines it and its verdict. The lookup that reads it, and what each
//! verdict means, are in [`super`].

use super::Embedding::{Nat64, SixToFour, Teredo};
use super::Verdict::{Embeds, Reachable, Refuse};
use super::{Row, row};

/// Every special-purpose block, IPv4 then IPv6.
#[rustfmt::skip]
pub static TABLE: &[Row] = &[
    // IPv4 special-purpose address registry.
    row("0.0.0.0/8",          "this network",                                           "RFC 791",  Refuse),
    row("0.0.0.0/32",         "this host on this network",                              "RFC 1122", Refuse),
    row("10.0.0.0/8",         "private-use",                                            "RFC 1918", Refuse),
    row("100.64.0.0/10",      "shared address space (carrier-grade NAT)",               "RFC 6598", Refuse),
    row("127.0.0.0/8",        "loopback",                                               "RFC 1122", Refuse),
    row("169.254.0.0/16",     "link-local (cloud metadata 169.254.169.254 lives here)", "RFC 3927", Refuse),
    row("172.16.0.0/12",      "private-use",                                            "RFC 1918", Refuse),
    row("192.0.0.0/24",       "IETF protocol assignments",                              "RFC 6890", Refuse),
    row("192.0.0.0/29",       "IPv4 service continuity prefix",                         "RFC 7335", Refuse),
    row("192.0.0.8/32",       "IPv4 dummy address",                                     "RFC 7600", Refuse),
    row("192.0.0.9/32",       "port control protocol anycast",                          "RFC 7723", Reachable),
    row("192.0.0.10/32",      "TURN anycast",                                           "RFC 8155", Reachable),
    row("192.0.0.170/32",     "NAT64/DNS64 discovery",                                  "RFC 8880", Refuse),
    row("192.0.0.171/32",     "NAT64/DNS64 discovery",                                  "RFC 8880", Refuse),
    row("192.0.2.0/24",       "documentation (TEST-NET-1)",                             "RFC 5737", Refuse),
    row("192.31.196.0/24",    "AS112-v4",                                               "RFC 7535", Reachable),
    row("192.52.193.0/24",    "AMT",                                                    "RFC 7450", Reachable),
    row("192.88.99.0/24",     "deprecated 6to4 relay anycast",                          "RFC 7526", Refuse),
    row("192.88.99.2/32",     "6a44 relay anycast",                                     "RFC 6751", Refuse),
    row("192.168.0.0/16",     "private-use",                                            "RFC 1918", Refuse),
    row("192.175.48.0/24",    "direct delegation AS112 service",                        "RFC 7534", Reachable),
    row("198.18.0.0/15",      "benchmarking",                                           "RFC 2544", Refuse),
    row("198.51.100.0/24",    "documentation (TEST-NET-2)",                             "RFC 5737", Refuse),
    row("203.0.113.0/24",     "documentation (TEST-NET-3)",                             "RFC 5737", Refuse),
    // Not unicast (the multicast registry, RFC 1112, RFC 919).
    row("224.0.0.0/4",        "multicast",                                              "RFC 5771", Refuse),
    row("240.0.0.0/4",        "reserved",                                               "RFC 1112", Refuse),
    row("255.255.255.255/32", "limited broadcast",                                      "RFC 919",  Refuse),
    // IPv6: everything outside global unicast is reserved (the IPv6 address
    // space registry); the rows below name the special blocks in it.
    row("::/0",               "outside global unicast 2000::/3",                        "RFC 4291", Refuse),
    row("2000::/3",           "global unicast",                                         "RFC 4291", Reachable),
    // IPv6 special-purpose address registry, and the embedded-IPv4 forms.
    row("::/128",             "unspecified",                                            "RFC 4291", Refuse),
    row("::1/128",            "loopback",                                               "RFC 4291", Refuse),
    row("::/96",              "IPv4-compatible (deprecated)",                           "RFC 4291", Refuse),
    row("::ffff:0:0/96",      "IPv4-mapped",                                            "RFC 4291", Refuse),
    row("::ffff:0:0:0/96",    "IPv4-translated",                                        "RFC 2765", Refuse),
    row("64:ff9b::/96",       "NAT64 well-known prefix",                                "RFC 6052", Embeds(Nat64)),
    row("64:ff9b:1::/48",     "NAT64 local-use prefix",                                 "RFC 8215", Refuse),
    row("100::/64",           "discard-only",                                           "RFC 6666", Refuse),
    row("100:0:0:1::/64",     "dummy IPv6 prefix",                                      "RFC 9780", Refuse),
    row("2001::/23",          "IETF protocol assignments",                              "RFC 2928", Refuse),
    row("2001::/32",          "Teredo",                                                 "RFC 4380", Embeds(Teredo)),
    row("2001:1::1/128",      "port control protocol anycast",                          "RFC 7723", Reachable),
    row("2001:1::2/128",      "TURN anycast",                                           "RFC 8155", Reachable),
    row("2001:1::3/128",      "DNS-SD service registration anycast",                    "RFC 9665", Reachable),
    row("2001:2::/48",        "benchmarking",                                           "RFC 5180", Refuse),
    row("2001:3::/32",        "AMT",                                                    "RFC 7450", Reachable),
    row("2001:4:112::/48",    "AS112-v6",                                               "RFC 7535", Reachable),
    row("2001:10::/28",       "deprecated ORCHID",                                      "RFC 4843", Refuse),
    row("2001:20::/28",       "ORCHIDv2",                                               "RFC 7343", Reachable),
    row("2001:30::/28",       "drone remote ID entity tags",                            "RFC 9374", Reachable),
    row("2001:db8::/32",      "documentation",                                          "RFC 3849", Refuse),
    row("2002::/16",          "6to4",                                                   "RFC 3056", Embeds(SixToFour)),
    row("2620:4f:8000::/48",  "direct delegation AS112 service",                        "RFC 7534", Reachable),
    row("3fff::/20",          "documentation",                                          "RFC 9637", Refuse),
    row("5f00::/16",          "SRv6 SIDs",                                              "RFC 9602", Refuse),
    row("fc00::/7",           "unique-local (cloud metadata fd00:ec2::254 lives here)", "RFC 4193", Refuse),
    row("fe80::/10",          "link-local",                                             "RFC 4291", Refuse),
    row("fec0::/10",          "site-local (deprecated)",                                "RFC 3879", Refuse),
    row("ff00::/8",           "multicast",                                              "RFC 4291", Refuse),
];
