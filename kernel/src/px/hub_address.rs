//! Where the hub listens and where engines dial it: two different things.
//!
//! `--ip` (`$RUSTPX_HUB_IP`) is the address the hub binds: 127.0.0.1 by default, so nothing off
//! this host can reach it; `0.0.0.0` (or `*`) for every interface. `--location`
//! (`$RUSTPX_HUB_LOCATION`) is the address written into the connection blob, the one engines
//! dial. Binding `0.0.0.0` and telling engines to dial `0.0.0.0` is the mistake users of
//! ipyparallel make most, so without a location a wildcard bind advertises this host's first
//! non-loopback IPv4 address, and a loopback bind with a remote location is refused.

use std::net::{IpAddr, Ipv4Addr};

/// The hub's bind address and the address engines dial.
#[derive(Debug, Clone, PartialEq)]
pub struct HubAddress {
    pub bind: String,
    pub location: String,
}

/// The environment variables that set them (the kernel's `--ip` and `--location` set these).
pub const IP_ENV: &str = "RUSTPX_HUB_IP";
pub const LOCATION_ENV: &str = "RUSTPX_HUB_LOCATION";

/// Why the hub's address cannot be what the environment asks for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HubAddressError {
    #[error(
        "{IP_ENV}={0} is not an IP address: give the address of one interface, or 0.0.0.0 for all"
    )]
    NotAnAddress(String),
    #[error("the hub would listen on {bind} only, so engines dialling {location} could never reach it: set {IP_ENV}=0.0.0.0 (or the address of the interface {location} is on)")]
    Unreachable { bind: String, location: String },
    #[error("{LOCATION_ENV}={0} is not an address engines can dial: give this host's name or address as other hosts see it")]
    Undiallable(String),
}

impl HubAddress {
    /// From `$RUSTPX_HUB_IP` and `$RUSTPX_HUB_LOCATION`.
    pub fn from_environment() -> Result<HubAddress, HubAddressError> {
        let ip = std::env::var(IP_ENV).ok().filter(|v| !v.is_empty());
        let location = std::env::var(LOCATION_ENV).ok().filter(|v| !v.is_empty());
        resolve(ip.as_deref(), location.as_deref(), first_public_ipv4)
    }

    /// Whether engines on other hosts can reach the hub.
    pub fn reachable_from_other_hosts(&self) -> bool {
        !is_loopback(&self.bind) && !is_loopback(&self.location)
    }
}

/// The rules above, with the host's address lookup passed in (tests give their own).
pub fn resolve(
    ip: Option<&str>,
    location: Option<&str>,
    public_address: impl Fn() -> Option<Ipv4Addr>,
) -> Result<HubAddress, HubAddressError> {
    let bind = match ip.unwrap_or("127.0.0.1") {
        "*" => "0.0.0.0".to_owned(),
        other => other.to_owned(),
    };
    if bind.parse::<IpAddr>().is_err() {
        return Err(HubAddressError::NotAnAddress(bind));
    }
    let location = match location {
        Some(location) => {
            if is_loopback(&bind) && !is_loopback(location) {
                return Err(HubAddressError::Unreachable {
                    bind,
                    location: location.to_owned(),
                });
            }
            location.to_owned()
        }
        None if is_unspecified(&bind) => match public_address() {
            Some(address) => address.to_string(),
            None => "127.0.0.1".to_owned(),
        },
        None => bind.clone(),
    };
    if is_unspecified(&location) {
        return Err(HubAddressError::Undiallable(location));
    }
    Ok(HubAddress { bind, location })
}

fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_unspecified(address: &str) -> bool {
    address
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// This host's first IPv4 address that is up and not loopback.
pub fn first_public_ipv4() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & libc::IFF_UP as u32 != 0;
        if entry.ifa_addr.is_null() || !up {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family we check first.
        let family = unsafe { (*entry.ifa_addr).sa_family } as i32;
        if family != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let address = unsafe { *(entry.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
        if !ip.is_loopback() {
            found = Some(ip);
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(10, 1, 2, 3))
    }

    #[test]
    fn the_default_is_loopback_for_both() {
        let address = resolve(None, None, public).unwrap();
        assert_eq!(address.bind, "127.0.0.1");
        assert_eq!(address.location, "127.0.0.1");
        assert!(!address.reachable_from_other_hosts());
    }

    #[test]
    fn a_wildcard_bind_advertises_a_real_address() {
        let address = resolve(Some("*"), None, public).unwrap();
        assert_eq!(address.bind, "0.0.0.0");
        assert_eq!(address.location, "10.1.2.3");
        assert!(address.reachable_from_other_hosts());
        let given = resolve(Some("0.0.0.0"), Some("head-node"), public).unwrap();
        assert_eq!(given.location, "head-node");
    }

    #[test]
    fn mixing_up_the_two_is_refused_with_the_fix() {
        let error = resolve(None, Some("10.0.0.5"), public).unwrap_err();
        assert!(matches!(error, HubAddressError::Unreachable { .. }));
        assert!(
            error.to_string().contains("RUSTPX_HUB_IP=0.0.0.0"),
            "{error}"
        );
        let error = resolve(Some("0.0.0.0"), Some("0.0.0.0"), public).unwrap_err();
        assert_eq!(error, HubAddressError::Undiallable("0.0.0.0".into()));
        assert!(error.to_string().contains("RUSTPX_HUB_LOCATION"), "{error}");
        assert_eq!(
            resolve(Some("not-an-ip"), None, public),
            Err(HubAddressError::NotAnAddress("not-an-ip".into()))
        );
    }

    #[test]
    fn this_host_has_an_address_lookup_that_skips_loopback() {
        if let Some(ip) = first_public_ipv4() {
            assert!(!ip.is_loopback());
        }
    }
}
