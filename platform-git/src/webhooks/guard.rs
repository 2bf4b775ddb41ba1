//! The SSRF guard: which addresses a webhook delivery may connect to.
//!
//! A payload URL is chosen by a repository administrator, and the delivery runs inside the
//! operator's network: without a guard, a hook pointed at `http://10.0.0.5/` or at a cloud
//! metadata service would make the forge send requests (and show the answers) for anyone who can
//! create a hook. The guard refuses every address that is not public unless the operator allows
//! it with `APP_WEBHOOK_ALLOWED_HOSTS` (see [`AllowList::parse`]).
//!
//! Refused by default ([`classify`]):
//!
//! | kind | IPv4 | IPv6 |
//! | --- | --- | --- |
//! | cloud metadata | 169.254.169.254, 169.254.170.2, 169.254.170.23, 100.100.100.200 | fd00:ec2::254, fd00:ec2::23 |
//! | loopback | 127.0.0.0/8 | ::1 |
//! | unspecified | 0.0.0.0 | :: |
//! | "this network" | 0.0.0.0/8 | |
//! | private | 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 | |
//! | shared (carrier-grade NAT) | 100.64.0.0/10 | |
//! | link-local | 169.254.0.0/16 | fe80::/10 |
//! | unique-local | | fc00::/7 |
//! | site-local (deprecated) | | fec0::/10 |
//! | multicast | 224.0.0.0/4 | ff00::/8 |
//! | broadcast | 255.255.255.255 | |
//! | reserved | 240.0.0.0/4 | |
//!
//! An IPv6 address that carries an IPv4 address is judged as that IPv4 address: IPv4-mapped
//! (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4
//! (`2002:AABB:CCDD::/48`). The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32) are not refused: tests use them as public addresses.
//!
//! The guard checks twice, with the same rules: [`Guard::precheck_url`] before a request (scheme,
//! credentials, and the address of an IP-literal host, which an HTTP client connects to without
//! resolving), and [`Guard::resolve_host`] when a host name is resolved. The HTTP client of
//! [`client`](super::client) resolves through the guard ([`reqwest::dns::Resolve`]), so it
//! connects to exactly the addresses that were checked: there is no window in which a DNS answer
//! could change between the check and the connection.
//!
//! ```
//! use platform_git::webhooks::guard::{AllowList, AddressKind, classify};
//!
//! let allow = AllowList::parse("hooks.internal.example, 10.20.0.0/16, private")?;
//! assert!(allow.allows_host("HOOKS.internal.example"));
//! assert_eq!(allow.check_address("10.20.1.2".parse()?), Ok(()));
//! assert_eq!(classify("169.254.169.254".parse()?), Some(AddressKind::CloudMetadata));
//! // `private` never lets a metadata address through.
//! assert_eq!(
//!     allow.check_address("::ffff:169.254.169.254".parse()?),
//!     Err(AddressKind::CloudMetadata)
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// The configuration variable that holds the operator's [`AllowList`].
pub const ALLOWED_HOSTS_VARIABLE: &str = "APP_WEBHOOK_ALLOWED_HOSTS";

/// The cloud metadata services: refused unless an entry names them (not implied by `private`).
///
/// AWS, GCP, Azure and Oracle (169.254.169.254, and AWS's IPv6 fd00:ec2::254), AWS ECS task
/// metadata (169.254.170.2), EKS Pod Identity (169.254.170.23, fd00:ec2::23) and Alibaba Cloud
/// (100.100.100.200).
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23),
];

/// Why an address is not public: the reason the guard refuses it by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressKind {
    /// A cloud metadata service (169.254.169.254 and the others listed in the module docs).
    CloudMetadata,
    /// 127.0.0.0/8 or ::1.
    Loopback,
    /// 0.0.0.0 or ::, which connect to the local host.
    Unspecified,
    /// 0.0.0.0/8, "this network".
    ThisNetwork,
    /// RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16.
    Private,
    /// RFC 6598 shared address space (carrier-grade NAT): 100.64.0.0/10.
    SharedAddressSpace,
    /// 169.254.0.0/16 or fe80::/10.
    LinkLocal,
    /// IPv6 unique-local addresses, fc00::/7.
    UniqueLocal,
    /// Deprecated IPv6 site-local addresses, fec0::/10.
    SiteLocal,
    /// 224.0.0.0/4 or ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, reserved for future use.
    Reserved,
}

impl AddressKind {
    /// Returns whether the `private` entry of an [`AllowList`] lets this kind through.
    pub fn is_private(self) -> bool {
        matches!(self, Self::Private | Self::SharedAddressSpace | Self::UniqueLocal)
    }

    /// What an operator can write in [`ALLOWED_HOSTS_VARIABLE`] to let this kind through.
    fn remedy(self) -> &'static str {
        match self {
            Self::CloudMetadata => {
                "allow it with an APP_WEBHOOK_ALLOWED_HOSTS entry naming this address \
                 (`private` does not)"
            }
            Self::Private | Self::SharedAddressSpace | Self::UniqueLocal => {
                "allow it with APP_WEBHOOK_ALLOWED_HOSTS (the host, the address, a CIDR block \
                 or `private`)"
            }
            Self::Loopback => {
                "allow it with APP_WEBHOOK_ALLOWED_HOSTS (the host, the address, a CIDR block \
                 or `loopback`)"
            }
            _ => "allow it with APP_WEBHOOK_ALLOWED_HOSTS (the host, the address or a CIDR block)",
        }
    }
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CloudMetadata => "a cloud metadata address",
            Self::Loopback => "a loopback address",
            Self::Unspecified => "the unspecified address",
            Self::ThisNetwork => "a \"this network\" address (0.0.0.0/8)",
            Self::Private => "a private address",
            Self::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Self::LinkLocal => "a link-local address",
            Self::UniqueLocal => "a unique-local address",
            Self::SiteLocal => "a site-local address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
        })
    }
}

/// Returns the IPv4 address an IPv6 address carries, if it is IPv4-mapped (`::ffff:0:0/96`),
/// IPv4-compatible (`::/96`, except `::` and `::1`), NAT64 (`64:ff9b::/96`) or 6to4
/// (`2002::/16`).
pub fn embedded_ipv4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = address.segments();
    let v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match segments {
        [0, 0, 0, 0, 0, 0xffff, high, low] => Some(v4(high, low)),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        [0x2002, high, low, ..] => Some(v4(high, low)),
        _ => None,
    }
}

/// Returns the address the guard judges `address` as: the IPv4 address an IPv6 address carries
/// (see [`embedded_ipv4`]), or `address` itself.
pub fn judged_as(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// Returns why `address` is not public, or `None` for a public address.
///
/// The address is first reduced to the IPv4 address it carries, if any ([`judged_as`]).
pub fn classify(address: IpAddr) -> Option<AddressKind> {
    match judged_as(address) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> Option<AddressKind> {
    let [a, b, ..] = address.octets();
    let kind = if METADATA_V4.contains(&address) {
        AddressKind::CloudMetadata
    } else if address.is_unspecified() {
        AddressKind::Unspecified
    } else if a == 0 {
        AddressKind::ThisNetwork
    } else if address.is_loopback() {
        AddressKind::Loopback
    } else if address.is_private() {
        AddressKind::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        AddressKind::SharedAddressSpace
    } else if address.is_link_local() {
        AddressKind::LinkLocal
    } else if address.is_multicast() {
        AddressKind::Multicast
    } else if address.is_broadcast() {
        AddressKind::Broadcast
    } else if a >= 240 {
        AddressKind::Reserved
    } else {
        return None;
    };
    Some(kind)
}

fn classify_v6(address: Ipv6Addr) -> Option<AddressKind> {
    let first = address.segments()[0];
    let kind = if METADATA_V6.contains(&address) {
        AddressKind::CloudMetadata
    } else if address.is_unspecified() {
        AddressKind::Unspecified
    } else if address.is_loopback() {
        AddressKind::Loopback
    } else if (first & 0xffc0) == 0xfe80 {
        AddressKind::LinkLocal
    } else if (first & 0xffc0) == 0xfec0 {
        AddressKind::SiteLocal
    } else if (first & 0xfe00) == 0xfc00 {
        AddressKind::UniqueLocal
    } else if (first & 0xff00) == 0xff00 {
        AddressKind::Multicast
    } else {
        return None;
    };
    Some(kind)
}

/// What the operator allows beyond public addresses, parsed from [`ALLOWED_HOSTS_VARIABLE`].
///
/// The default (an empty value) allows nothing extra.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    everything: bool,
    private: bool,
    loopback: bool,
    /// Exact host names, lowercase, without a trailing dot.
    hosts: Vec<String>,
    /// `*.example.com` entries, kept as `.example.com`.
    suffixes: Vec<String>,
    networks: Vec<IpNet>,
}

impl AllowList {
    /// Parses the operator's comma-separated list.
    ///
    /// Each entry (surrounding spaces and empty entries are ignored) is one of:
    ///
    /// - a host name, matched exactly and case-insensitively: a hook whose URL names it connects
    ///   to whatever it resolves to, the operator having vouched for it;
    /// - `*.example.com`: every subdomain of `example.com` (not `example.com` itself), likewise;
    /// - an IP address (`10.1.2.3`, `fd00::5`, `[fd00::5]`) or a CIDR block (`10.20.0.0/16`):
    ///   addresses it contains are allowed, cloud metadata addresses included;
    /// - `private`: the RFC 1918 ranges, 100.64.0.0/10 and fc00::/7, but no cloud metadata
    ///   address among them;
    /// - `loopback`: 127.0.0.0/8 and ::1;
    /// - `*`: everything, metadata services included.
    ///
    /// # Errors
    ///
    /// [`GuardError::InvalidEntry`] naming the first entry that is none of these.
    pub fn parse(value: &str) -> Result<Self, GuardError> {
        Self::from_entries(value.split(','))
    }

    /// Builds the list from entries already split (as the configuration keeps them), each read
    /// as by [`parse`](Self::parse).
    ///
    /// # Errors
    ///
    /// [`GuardError::InvalidEntry`] naming the first invalid entry.
    pub fn from_entries<I>(entries: I) -> Result<Self, GuardError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut list = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if !entry.is_empty() {
                list.add(entry)?;
            }
        }
        Ok(list)
    }

    fn add(&mut self, entry: &str) -> Result<(), GuardError> {
        let invalid = |reason| GuardError::InvalidEntry { entry: entry.to_owned(), reason };
        match entry.to_ascii_lowercase().as_str() {
            "*" => self.everything = true,
            "private" => self.private = true,
            "loopback" => self.loopback = true,
            lower => {
                let unbracketed = lower
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
                    .unwrap_or(lower);
                if let Ok(network) = unbracketed.parse::<IpNet>() {
                    self.networks.push(network);
                } else if let Ok(address) = unbracketed.parse::<IpAddr>() {
                    self.networks.push(IpNet::from(address));
                } else if lower.contains('/') {
                    return Err(invalid("not a valid CIDR block"));
                } else if let Some(domain) = lower.strip_prefix("*.") {
                    match Host::parse(domain) {
                        Ok(Host::Domain(ascii)) => {
                            let domain = host_name(&ascii).ok_or_else(|| invalid(NOT_A_HOST))?;
                            self.suffixes.push(format!(".{domain}"));
                        }
                        _ => return Err(invalid(NOT_A_HOST)),
                    }
                } else {
                    match Host::parse(lower).map_err(|_| invalid(NOT_A_HOST))? {
                        // An internationalized name is kept as the URL parser spells it (punycode).
                        Host::Domain(ascii) => {
                            let host = host_name(&ascii).ok_or_else(|| invalid(NOT_A_HOST))?;
                            self.hosts.push(host);
                        }
                        // The URL parser's other spellings of an address (`0x7f.1`).
                        Host::Ipv4(address) => self.networks.push(IpNet::from(IpAddr::V4(address))),
                        Host::Ipv6(address) => self.networks.push(IpNet::from(IpAddr::V6(address))),
                    }
                }
            }
        }
        Ok(())
    }

    /// Returns whether the operator allowed `host` by name (or allowed everything), in which case
    /// its addresses are not checked.
    pub fn allows_host(&self, host: &str) -> bool {
        if self.everything {
            return true;
        }
        let host = normalize_host(host);
        self.hosts.contains(&host)
            || self.suffixes.iter().any(|suffix| host.ends_with(suffix.as_str()))
    }

    /// Checks one address: `Ok` when it is public or allowed, else why it is refused.
    ///
    /// # Errors
    ///
    /// The [`AddressKind`] of a refused address.
    pub fn check_address(&self, address: IpAddr) -> Result<(), AddressKind> {
        let Some(kind) = classify(address) else {
            return Ok(());
        };
        let judged = judged_as(address);
        let named = self
            .networks
            .iter()
            .any(|network| network.contains(&judged) || network.contains(&address));
        let allowed = self.everything
            || named
            || (kind.is_private() && self.private)
            || (kind == AddressKind::Loopback && self.loopback);
        if allowed { Ok(()) } else { Err(kind) }
    }
}

impl FromStr for AllowList {
    type Err = GuardError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

const NOT_A_HOST: &str =
    "not a host name, `*.domain`, IP address, CIDR block, `private`, `loopback` or `*`";

/// A valid DNS host name, lowercase and without a trailing dot, or `None`.
fn host_name(name: &str) -> Option<String> {
    let name = normalize_host(name);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(valid_label)).then_some(name)
}

fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The error returned by the guard's checks and by [`AllowList::parse`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// An entry of [`ALLOWED_HOSTS_VARIABLE`] is not understood.
    #[error("invalid {ALLOWED_HOSTS_VARIABLE} entry {entry:?}: {reason}")]
    InvalidEntry {
        /// The entry, as written.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The payload URL is not http or https.
    #[error("payload URL scheme {scheme:?} is not allowed: use http or https")]
    UnsupportedScheme {
        /// The URL's scheme.
        scheme: String,
    },
    /// The payload URL has a user name or password (which are not repeated here).
    #[error(
        "payload URL must not contain credentials (user name or password): send them in a \
         header, or sign deliveries with the hook's secret"
    )]
    CredentialsInUrl,
    /// The payload URL has no host.
    #[error("payload URL has no host")]
    NoHost,
    /// The host name could not be resolved.
    #[error("failed to resolve payload URL host {host:?}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why the resolver failed.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("payload URL host {host:?} resolves to no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The host name resolved to (at least) one refused address.
    #[error("payload URL host {host:?} resolves to {}, {kind}; {}", Shown(*.address), .kind.remedy())]
    HostRefused {
        /// The host name.
        host: String,
        /// The first refused address it resolved to.
        address: IpAddr,
        /// Why that address is refused.
        kind: AddressKind,
    },
    /// The payload URL's host is a refused IP address.
    #[error("payload URL address {} is {kind}; {}", Shown(*.address), .kind.remedy())]
    AddressRefused {
        /// The address.
        address: IpAddr,
        /// Why it is refused.
        kind: AddressKind,
    },
}

impl GuardError {
    /// Returns whether trying again later may succeed (the resolver failed or found nothing),
    /// as opposed to a refusal or a bad URL that stays wrong until someone changes it.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Resolve { .. } | Self::NoAddress { .. })
    }
}

/// An address as the guard's messages show it: with the IPv4 address it was judged as.
struct Shown(IpAddr);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match judged_as(self.0) {
            judged if judged != self.0 => write!(f, "{} (that is {judged})", self.0),
            _ => write!(f, "{}", self.0),
        }
    }
}

/// The SSRF guard: an [`AllowList`] and the checks that use it.
///
/// Cheap to clone. As a [`reqwest::dns::Resolve`], it resolves a host name and fails when any of
/// its addresses is refused; see the [module documentation](self).
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Arc<AllowList>,
}

impl Guard {
    /// Creates a guard that allows what `allow` allows beyond public addresses.
    pub fn new(allow: AllowList) -> Self {
        Self { allow: Arc::new(allow) }
    }

    /// The operator's allow list.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Checks what can be checked without resolving: the scheme (http or https), that the URL
    /// carries no credentials, and, when the host is an IP address, that address.
    ///
    /// Returns the address to connect to for an IP-literal host, `None` for a host name (whose
    /// addresses are checked by [`resolve_host`](Self::resolve_host)).
    ///
    /// # Errors
    ///
    /// [`GuardError::UnsupportedScheme`], [`GuardError::CredentialsInUrl`],
    /// [`GuardError::NoHost`] or [`GuardError::AddressRefused`].
    pub fn precheck_url(&self, url: &Url) -> Result<Option<SocketAddr>, GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::UnsupportedScheme { scheme: url.scheme().to_owned() });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::CredentialsInUrl);
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let address = match url.host().ok_or(GuardError::NoHost)? {
            Host::Domain(_) => return Ok(None),
            Host::Ipv4(address) => IpAddr::V4(address),
            Host::Ipv6(address) => IpAddr::V6(address),
        };
        self.allow
            .check_address(address)
            .map_err(|kind| GuardError::AddressRefused { address, kind })?;
        Ok(Some(SocketAddr::new(address, port)))
    }

    /// Checks a payload URL completely: [`precheck_url`](Self::precheck_url), then the
    /// addresses its host name resolves to. Returns the addresses a delivery may connect to.
    ///
    /// A delivery does not need this (the client checks as it connects); it answers "would
    /// this URL be refused, and why?" when a hook is created or tested.
    ///
    /// # Errors
    ///
    /// Those of [`precheck_url`](Self::precheck_url) and [`resolve_host`](Self::resolve_host).
    pub async fn check_url(&self, url: &Url) -> Result<Vec<SocketAddr>, GuardError> {
        if let Some(address) = self.precheck_url(url)? {
            return Ok(vec![address]);
        }
        let host = url.host_str().ok_or(GuardError::NoHost)?;
        self.resolve_host(host, url.port_or_known_default().unwrap_or(80)).await
    }

    /// Resolves `host` and checks every address, unless the operator allowed the host by name.
    ///
    /// # Errors
    ///
    /// [`GuardError::Resolve`], [`GuardError::NoAddress`], or [`GuardError::HostRefused`] for
    /// the first refused address: one refused address refuses the host, as the client could
    /// connect to any of them.
    pub async fn resolve_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let mut addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| GuardError::Resolve { host: host.to_owned(), source })?
            .collect();
        let mut seen = std::collections::HashSet::new();
        addresses.retain(|address| seen.insert(*address));
        if addresses.is_empty() {
            return Err(GuardError::NoAddress { host: host.to_owned() });
        }
        if !self.allow.allows_host(host) {
            for address in &addresses {
                self.allow.check_address(address.ip()).map_err(|kind| GuardError::HostRefused {
                    host: host.to_owned(),
                    address: address.ip(),
                    kind,
                })?;
            }
        }
        Ok(addresses)
    }
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in.
            let addresses = guard.resolve_host(name.as_str(), 0).await?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a valid address in the test")
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a valid URL in the test")
    }

    #[test]
    fn classifies_every_default_refused_range() {
        let cases = [
            ("127.0.0.1", AddressKind::Loopback),
            ("127.255.0.9", AddressKind::Loopback),
            ("::1", AddressKind::Loopback),
            ("0.0.0.0", AddressKind::Unspecified),
            ("::", AddressKind::Unspecified),
            ("0.1.2.3", AddressKind::ThisNetwork),
            ("10.1.2.3", AddressKind::Private),
            ("172.16.0.1", AddressKind::Private),
            ("172.31.255.255", AddressKind::Private),
            ("192.168.77.2", AddressKind::Private),
            ("100.64.0.1", AddressKind::SharedAddressSpace),
            ("100.127.255.255", AddressKind::SharedAddressSpace),
            ("169.254.1.1", AddressKind::LinkLocal),
            ("fe80::1", AddressKind::LinkLocal),
            ("febf::1", AddressKind::LinkLocal),
            ("fec0::1", AddressKind::SiteLocal),
            ("fc00::1", AddressKind::UniqueLocal),
            ("fd77::2", AddressKind::UniqueLocal),
            ("224.0.0.1", AddressKind::Multicast),
            ("239.255.255.255", AddressKind::Multicast),
            ("ff02::1", AddressKind::Multicast),
            ("255.255.255.255", AddressKind::Broadcast),
            ("240.0.0.1", AddressKind::Reserved),
            ("255.255.255.254", AddressKind::Reserved),
            ("169.254.169.254", AddressKind::CloudMetadata),
            ("169.254.170.2", AddressKind::CloudMetadata),
            ("100.100.100.200", AddressKind::CloudMetadata),
            ("fd00:ec2::254", AddressKind::CloudMetadata),
        ];
        for (address, kind) in cases {
            assert_eq!(classify(ip(address)), Some(kind), "{address}");
        }
    }

    #[test]
    fn public_and_documentation_addresses_are_not_refused() {
        for address in [
            "203.0.113.7",
            "192.0.2.1",
            "198.51.100.20",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "223.255.255.255",
            "2001:db8::1",
            "2606:4700::1111",
            "fe7f::1",
        ] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn ipv6_addresses_carrying_ipv4_are_judged_as_their_ipv4() {
        let cases = [
            ("::ffff:127.0.0.1", Some(AddressKind::Loopback)),
            ("::ffff:10.0.0.1", Some(AddressKind::Private)),
            ("::ffff:169.254.169.254", Some(AddressKind::CloudMetadata)),
            ("::ffff:203.0.113.7", None),
            ("::127.0.0.1", Some(AddressKind::Loopback)),
            ("::10.0.0.1", Some(AddressKind::Private)),
            ("::2", Some(AddressKind::ThisNetwork)),
            ("64:ff9b::10.0.0.1", Some(AddressKind::Private)),
            ("64:ff9b::169.254.169.254", Some(AddressKind::CloudMetadata)),
            ("64:ff9b::203.0.113.7", None),
            ("2002:7f00:1::", Some(AddressKind::Loopback)),
            ("2002:c0a8:0101::1", Some(AddressKind::Private)),
            ("2002:cb00:7107::1", None),
        ];
        for (address, kind) in cases {
            assert_eq!(classify(ip(address)), kind, "{address}");
        }
        assert_eq!(judged_as(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(judged_as(ip("fd77::2")), ip("fd77::2"));
    }

    #[test]
    fn the_default_list_refuses_everything_not_public() {
        let allow = AllowList::default();
        assert_eq!(allow, AllowList::parse(" , ").expect("empty entries are ignored"));
        assert_eq!(allow.check_address(ip("203.0.113.7")), Ok(()));
        assert_eq!(allow.check_address(ip("10.77.0.2")), Err(AddressKind::Private));
        assert_eq!(allow.check_address(ip("::ffff:127.0.0.1")), Err(AddressKind::Loopback));
        assert!(!allow.allows_host("example.com"));
    }

    #[test]
    fn parses_hosts_wildcards_networks_and_words() {
        let allow = AllowList::parse(
            "Hooks.Example.COM., *.corp.example, 10.77.0.0/24, 192.168.5.5, [fd00::5], \
             2001:db8:1::/48, 0x7f.1",
        )
        .expect("a valid list");
        assert!(allow.allows_host("hooks.example.com"));
        assert!(allow.allows_host("HOOKS.example.com."));
        assert!(!allow.allows_host("other.example.com"));
        assert!(!allow.allows_host("evilhooks.example.com"));
        assert!(allow.allows_host("ci.corp.example"));
        assert!(allow.allows_host("a.b.corp.example"));
        assert!(!allow.allows_host("corp.example"));
        assert!(!allow.allows_host("evilcorp.example"));
        assert_eq!(allow.check_address(ip("10.77.0.200")), Ok(()));
        assert_eq!(allow.check_address(ip("::ffff:10.77.0.200")), Ok(()));
        assert_eq!(allow.check_address(ip("10.77.1.1")), Err(AddressKind::Private));
        assert_eq!(allow.check_address(ip("192.168.5.5")), Ok(()));
        assert_eq!(allow.check_address(ip("192.168.5.6")), Err(AddressKind::Private));
        assert_eq!(allow.check_address(ip("fd00::5")), Ok(()));
        assert_eq!(allow.check_address(ip("127.0.0.1")), Ok(()), "0x7f.1 is 127.0.0.1");
        assert_eq!(allow.check_address(ip("127.0.0.2")), Err(AddressKind::Loopback));
        // An internationalized name matches the URL parser's spelling of it.
        let allow = AllowList::parse("Bücher.example, *.bücher.test").expect("a valid list");
        let host = url("http://bücher.example/").host_str().map(str::to_owned);
        assert_eq!(host.as_deref(), Some("xn--bcher-kva.example"));
        assert!(allow.allows_host("xn--bcher-kva.example"));
        assert!(allow.allows_host("hooks.xn--bcher-kva.test"));
    }

    #[test]
    fn private_allows_private_ranges_but_not_metadata_nor_loopback() {
        let allow = AllowList::parse("private").expect("a valid list");
        for address in ["10.77.0.2", "172.20.0.1", "192.168.77.2", "100.64.1.1", "fd77::2"] {
            assert_eq!(allow.check_address(ip(address)), Ok(()), "{address}");
        }
        for (address, kind) in [
            ("169.254.169.254", AddressKind::CloudMetadata),
            ("100.100.100.200", AddressKind::CloudMetadata),
            ("fd00:ec2::254", AddressKind::CloudMetadata),
            ("::ffff:169.254.169.254", AddressKind::CloudMetadata),
            ("127.0.0.1", AddressKind::Loopback),
            ("169.254.1.1", AddressKind::LinkLocal),
        ] {
            assert_eq!(allow.check_address(ip(address)), Err(kind), "{address}");
        }
    }

    #[test]
    fn metadata_is_allowed_only_when_named_or_by_star() {
        let metadata = ip("169.254.169.254");
        for list in ["169.254.169.254", "169.254.0.0/16", "*", "PRIVATE, 169.254.169.254/32"] {
            let allow = AllowList::parse(list).expect("a valid list");
            assert_eq!(allow.check_address(metadata), Ok(()), "{list}");
        }
        for list in ["private", "loopback", "169.254.170.0/24"] {
            let allow = AllowList::parse(list).expect("a valid list");
            assert_eq!(allow.check_address(metadata), Err(AddressKind::CloudMetadata), "{list}");
        }
    }

    #[test]
    fn loopback_and_star() {
        let allow = AllowList::parse("loopback").expect("a valid list");
        assert_eq!(allow.check_address(ip("127.0.0.1")), Ok(()));
        assert_eq!(allow.check_address(ip("::1")), Ok(()));
        assert_eq!(allow.check_address(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(allow.check_address(ip("10.0.0.1")), Err(AddressKind::Private));
        let all = AllowList::parse("*").expect("a valid list");
        assert!(all.allows_host("anything.example"));
        assert_eq!(all.check_address(ip("fd00:ec2::254")), Ok(()));
    }

    #[test]
    fn a_bad_entry_is_named_in_the_error() {
        for entry in ["exa mple.com", "10.0.0.0/33", "host:8080", "*.", "*foo.com", "a..b", "-a.b"]
        {
            let error = AllowList::parse(&format!("private, {entry}, loopback"))
                .expect_err("an invalid entry");
            assert!(
                matches!(&error, GuardError::InvalidEntry { entry: named, .. } if named == entry),
                "{entry}: {error:?}"
            );
            assert!(error.to_string().contains(&format!("{entry:?}")), "{error}");
            assert!(error.to_string().starts_with("invalid APP_WEBHOOK_ALLOWED_HOSTS entry"));
        }
    }

    #[test]
    fn precheck_refuses_bad_schemes_credentials_and_refused_literals() {
        let guard = Guard::default();
        let error = guard.precheck_url(&url("ftp://203.0.113.7/")).expect_err("ftp");
        assert!(matches!(error, GuardError::UnsupportedScheme { ref scheme } if scheme == "ftp"));
        for with_credentials in ["http://user:pw@203.0.113.7/", "https://token@example.com/"] {
            let error = guard.precheck_url(&url(with_credentials)).expect_err("credentials");
            assert!(matches!(error, GuardError::CredentialsInUrl));
            assert!(!error.to_string().contains("pw") && !error.to_string().contains("token"));
        }
        let error =
            guard.precheck_url(&url("http://[::ffff:127.0.0.1]:8080/")).expect_err("mapped");
        assert_eq!(
            error.to_string(),
            "payload URL address ::ffff:127.0.0.1 (that is 127.0.0.1) is a loopback address; \
             allow it with APP_WEBHOOK_ALLOWED_HOSTS (the host, the address, a CIDR block or \
             `loopback`)"
        );
        // The URL parser's other spellings of an IPv4 address are addresses, not names.
        for spelling in ["http://2130706433/", "http://0x7f.1/", "http://127.1/"] {
            let error = guard.precheck_url(&url(spelling)).expect_err(spelling);
            assert!(
                matches!(error, GuardError::AddressRefused { kind: AddressKind::Loopback, .. }),
                "{spelling}: {error:?}"
            );
        }
        let error = guard.precheck_url(&url("http://169.254.169.254/latest/")).expect_err("imds");
        assert!(error.to_string().contains("169.254.169.254 is a cloud metadata address"));
        assert!(error.to_string().contains("(`private` does not)"), "{error}");
    }

    #[test]
    fn precheck_passes_names_and_public_literals() {
        let guard = Guard::default();
        assert_eq!(guard.precheck_url(&url("https://hooks.example.com/x")).expect("a name"), None);
        assert_eq!(
            guard.precheck_url(&url("https://203.0.113.7/x")).expect("public"),
            Some("203.0.113.7:443".parse().expect("a socket address"))
        );
        assert_eq!(
            guard.precheck_url(&url("http://[2001:db8::1]:8080/")).expect("public"),
            Some("[2001:db8::1]:8080".parse().expect("a socket address"))
        );
    }

    #[test]
    fn refusal_messages_name_host_address_and_remedy() {
        let error = GuardError::HostRefused {
            host: "internal.test".to_owned(),
            address: ip("10.1.2.3"),
            kind: AddressKind::Private,
        };
        assert_eq!(
            error.to_string(),
            "payload URL host \"internal.test\" resolves to 10.1.2.3, a private address; allow it \
             with APP_WEBHOOK_ALLOWED_HOSTS (the host, the address, a CIDR block or `private`)"
        );
        assert!(!error.is_transient());
        let error = GuardError::NoAddress { host: "gone.test".to_owned() };
        assert!(error.is_transient());
    }
}
