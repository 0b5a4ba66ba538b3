//! Where a player request comes from: the client's address (the socket
//! peer, or what a trusted proxy says in its header), whether it lies in a
//! network, and its country from a MaxMind GeoIP2/GeoLite2 database.
//!
//! Owns the parsed `[access]` settings and the database, opened once at
//! start. Must never believe an address header from a peer that is not a
//! trusted proxy, never fail a request on a database error (the country is
//! then unknown), and never log a client's address.

use crate::config::{AccessConfig, ConfigError};
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Whether any of `nets` holds `addr`.
pub fn in_networks(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&addr))
}

/// An ISO 3166-1 alpha-2 code, upper case.
pub type Country = [u8; 2];

/// `"fr"` or `"FR"` as a [`Country`]; anything but two ASCII letters is none.
pub fn country(code: &str) -> Option<Country> {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// The node's answer to "who is this client and where": built from
/// `[access]`, shared by every player request.
pub struct Locator {
    trusted_proxies: Vec<IpNet>,
    header: HeaderName,
    countries: Option<maxminddb::Reader<Vec<u8>>>,
}

impl Locator {
    /// Parses `[access]` and opens its GeoIP database (read whole into
    /// memory: a Country database is a few MB, and lookups then never touch
    /// the disk). A database that does not open stops the node at start.
    pub fn open(cfg: &AccessConfig) -> Result<Locator, ConfigError> {
        let mut locator = Locator::from_config(cfg)?;
        if !cfg.geoip_database.as_os_str().is_empty() {
            let reader = maxminddb::Reader::open_readfile(&cfg.geoip_database).map_err(|e| {
                ConfigError::Invalid(format!(
                    "access.geoip_database = \"{}\": not a readable MaxMind database: {e}",
                    cfg.geoip_database.display()
                ))
            })?;
            let meta = reader.metadata();
            tracing::info!(
                database = %meta.database_type,
                built = meta.build_epoch,
                "GeoIP database loaded"
            );
            locator.countries = Some(reader);
        }
        Ok(locator)
    }

    /// `[access]` without its database.
    pub fn from_config(cfg: &AccessConfig) -> Result<Locator, ConfigError> {
        let trusted_proxies = cfg.trusted_networks()?;
        let header = cfg.address_header()?;
        Ok(Locator {
            trusted_proxies,
            header,
            countries: None,
        })
    }

    /// Nothing trusted, no database: the client is the socket peer.
    pub fn direct() -> Locator {
        Locator {
            trusted_proxies: Vec::new(),
            header: HeaderName::from_static("x-forwarded-for"),
            countries: None,
        }
    }

    pub fn has_countries(&self) -> bool {
        self.countries.is_some()
    }

    /// The client's address. From a trusted proxy, the header's addresses
    /// are read from the right (each proxy appends the address it saw) and
    /// the first one that is not itself a trusted proxy is the client; if
    /// every one is trusted, the left-most. An entry that is not an address
    /// ends the walk at the last good one: whatever lies left of it was
    /// written by someone no trusted proxy vouches for. From any other peer
    /// the header is ignored.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !in_networks(&self.trusted_proxies, client) {
            return client;
        }
        for line in headers.get_all(&self.header).iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for entry in line.rsplit(',') {
                let Some(addr) = forwarded_address(entry) else {
                    return client;
                };
                client = addr;
                if !in_networks(&self.trusted_proxies, addr) {
                    return client;
                }
            }
        }
        client
    }

    /// The country the database places `addr` in (its `country`, else its
    /// `registered_country`), or none: no database, an address it does not
    /// list (private and loopback ranges), or an IPv6 address in an
    /// IPv4-only database.
    pub fn country(&self, addr: IpAddr) -> Option<Country> {
        let reader = self.countries.as_ref()?;
        let found = reader.lookup(addr.to_canonical()).ok()?;
        ["country", "registered_country"].iter().find_map(|record| {
            let path = [
                maxminddb::PathElement::Key(record),
                maxminddb::PathElement::Key("iso_code"),
            ];
            found
                .decode_path::<&str>(&path)
                .ok()
                .flatten()
                .and_then(country)
        })
    }
}

/// One entry of an address header: `203.0.113.7`, `2001:db8::1`, or with a
/// port as some proxies write it (`203.0.113.7:5123`, `[2001:db8::1]:443`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let addr = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or(entry)
                .parse::<IpAddr>()
        })
        .ok()?;
    Some(addr.to_canonical())
}

/// A GeoIP database as a GeoLite2-Country one lays it out (IPv6 tree,
/// IPv4 under `::/96`) holding `entries` (network, country), written to a
/// temporary file, and a locator that reads it.
#[cfg(test)]
pub(crate) fn test_locator(entries: &[(&str, &str)]) -> (tempfile::TempDir, Locator) {
    use maxminddb_writer::{Database, metadata::IpVersion, paths::IpAddrWithMask};
    #[derive(serde::Serialize)]
    struct Code<'a> {
        iso_code: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Record<'a> {
        country: Code<'a>,
    }
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.ip_version = IpVersion::V6;
    db.metadata.database_type = "GeoLite2-Country".into();
    for (net, code) in entries {
        let net = crate::config::parse_network(net).expect("network");
        let (addr, len) = match net {
            IpNet::V4(v4) => (
                IpAddr::from(v4.addr().to_ipv6_compatible()),
                v4.prefix_len() + 96,
            ),
            IpNet::V6(v6) => (IpAddr::from(v6.addr()), v6.prefix_len()),
        };
        let data = db
            .insert_value(Record {
                country: Code { iso_code: code },
            })
            .expect("record");
        db.insert_node(IpAddrWithMask::new(addr, len), data);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("countries.mmdb");
    let file = std::fs::File::create(&path).expect("create");
    db.write_to(file).expect("write database");
    let locator = Locator::open(&AccessConfig {
        geoip_database: path,
        ..AccessConfig::default()
    })
    .expect("open the database");
    (dir, locator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;
    use axum::http::HeaderValue;

    #[test]
    fn countries_come_from_the_database() {
        let (_dir, l) = test_locator(&[
            ("203.0.113.0/24", "FR"),
            ("198.51.100.0/24", "de"),
            ("2001:db8::/32", "JP"),
        ]);
        assert!(l.has_countries());
        assert_eq!(l.country(ip("203.0.113.7")), Some(*b"FR"));
        assert_eq!(l.country(ip("::ffff:203.0.113.7")), Some(*b"FR"));
        assert_eq!(l.country(ip("198.51.100.1")), Some(*b"DE"));
        assert_eq!(l.country(ip("2001:db8::1")), Some(*b"JP"));
        assert_eq!(l.country(ip("192.0.2.1")), None);
        assert_eq!(l.country(ip("::1")), None);
        assert_eq!(Locator::direct().country(ip("203.0.113.7")), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn locator(proxies: &[&str]) -> Locator {
        Locator::from_config(&AccessConfig {
            trusted_proxies: proxies.iter().map(|s| s.to_string()).collect(),
            ..AccessConfig::default()
        })
        .expect("valid")
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_str(l).expect("header value"),
            );
        }
        h
    }

    #[test]
    fn networks_parse_and_match() {
        assert_eq!(
            parse_network("10.1.2.3/8").map(|n| n.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_network(" 203.0.113.7 ").map(|n| n.to_string()),
            Some("203.0.113.7/32".into())
        );
        assert_eq!(
            parse_network("2001:db8::1/32").map(|n| n.to_string()),
            Some("2001:db8::/32".into())
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8", "::/129"] {
            assert!(parse_network(bad).is_none(), "{bad:?}");
        }
        let nets: Vec<IpNet> = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .filter_map(|s| parse_network(s))
            .collect();
        assert!(in_networks(&nets, ip("10.200.0.1")));
        assert!(in_networks(&nets, ip("2001:db8:ffff::1")));
        assert!(!in_networks(&nets, ip("11.0.0.1")));
        assert!(!in_networks(&[], ip("10.0.0.1")));
    }

    #[test]
    fn countries_are_two_letters_upper_cased() {
        assert_eq!(country("fr"), Some(*b"FR"));
        assert_eq!(country("De"), Some(*b"DE"));
        for bad in ["", "F", "FRA", "F1", "é"] {
            assert_eq!(country(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_its_header_says() {
        let l = locator(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.7"]);
        assert_eq!(l.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(
            locator(&[]).client(ip("10.0.0.1"), &h),
            ip("10.0.0.1"),
            "no trusted proxies: the header is never read"
        );
    }

    #[test]
    fn from_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
        let l = locator(&["10.0.0.0/8", "2001:db8:cd::/48"]);
        let peer = ip("10.0.0.1");
        // A client that forges the left-most entry does not get it used.
        let h = headers(&["1.1.1.1, 203.0.113.7, 10.0.0.9"]);
        assert_eq!(l.client(peer, &h), ip("203.0.113.7"));
        // Several header lines are one list, in order.
        let h = headers(&["1.1.1.1, 203.0.113.7", "10.0.0.9"]);
        assert_eq!(l.client(peer, &h), ip("203.0.113.7"));
        // Ports and brackets as some proxies write them; v4-mapped v6.
        assert_eq!(
            l.client(peer, &headers(&["203.0.113.7:5123"])),
            ip("203.0.113.7")
        );
        assert_eq!(
            l.client(peer, &headers(&["[2001:db8::7]:443"])),
            ip("2001:db8::7")
        );
        assert_eq!(
            l.client(peer, &headers(&["[2001:db8::7]"])),
            ip("2001:db8::7")
        );
        assert_eq!(
            l.client(ip("::ffff:10.0.0.1"), &headers(&["::ffff:203.0.113.7"])),
            ip("203.0.113.7")
        );
        // A chain of trusted proxies, IPv6 among them.
        assert_eq!(
            l.client(
                ip("2001:db8:cd::1"),
                &headers(&["203.0.113.7, 10.0.0.9, 2001:db8:cd::2"])
            ),
            ip("203.0.113.7")
        );
        // Every entry trusted: the left-most.
        assert_eq!(
            l.client(peer, &headers(&["10.0.0.3, 10.0.0.2"])),
            ip("10.0.0.3")
        );
        // Garbage ends the walk at the last address a proxy vouched for.
        assert_eq!(
            l.client(peer, &headers(&["203.0.113.7, nonsense, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        assert_eq!(l.client(peer, &headers(&["unknown"])), peer);
        // No header: the proxy itself.
        assert_eq!(l.client(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = |cfg: AccessConfig| {
            Locator::from_config(&cfg)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = bad(AccessConfig {
            trusted_proxies: vec!["cdn.example".into()],
            ..AccessConfig::default()
        });
        assert!(e.contains("access.trusted_proxies"), "{e}");
        for header in ["", "bad header", "Forwarded"] {
            let e = bad(AccessConfig {
                client_address_header: header.into(),
                ..AccessConfig::default()
            });
            assert!(
                e.contains("access.client_address_header"),
                "{header:?}: {e}"
            );
        }
        let e = Locator::open(&AccessConfig {
            geoip_database: "/nonexistent/GeoLite2-Country.mmdb".into(),
            ..AccessConfig::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("access.geoip_database"), "{e}");
        let l = Locator::from_config(&AccessConfig {
            client_address_header: "CF-Connecting-IP".into(),
            trusted_proxies: vec!["127.0.0.1".into()],
            ..AccessConfig::default()
        })
        .expect("valid");
        let mut h = HeaderMap::new();
        h.insert("cf-connecting-ip", HeaderValue::from_static("203.0.113.7"));
        assert_eq!(l.client(ip("127.0.0.1"), &h), ip("203.0.113.7"));
    }
}
