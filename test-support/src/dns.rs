//! A DNS server on loopback answering A, AAAA and SRV questions from a table the test sets, as
//! the cluster DNS answers for a headless Service.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    addresses: HashMap<String, Vec<IpAddr>>,
    services: HashMap<String, Vec<(String, u16)>>,
}

/// The server; dropping it stops it.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Starts a server on a free UDP port.
    pub async fn start() -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.context("binding the DNS server")?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone::default()));
        let served = zone.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((length, peer)) = socket.recv_from(&mut buffer).await else { continue };
                if let Some(answer) = answer(&served, &buffer[..length]) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        Ok(Self { addr, zone, task })
    }

    /// The server's address, what `APP_METRICS_DNS_SERVER` takes.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the A/AAAA records of `name` (none: the name does not exist).
    pub fn set_addresses(&self, name: &str, addresses: &[IpAddr]) {
        self.zone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .addresses
            .insert(key(name), addresses.to_vec());
    }

    /// Sets the SRV records of `name`: each a host and a port.
    pub fn set_services(&self, name: &str, targets: &[(&str, u16)]) {
        self.zone.lock().unwrap_or_else(PoisonError::into_inner).services.insert(
            key(name),
            targets.iter().map(|(host, port)| ((*host).to_owned(), *port)).collect(),
        );
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(zone: &Mutex<Zone>, packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    let zone = zone.lock().unwrap_or_else(PoisonError::into_inner);
    let mut known = false;
    for question in &query.queries {
        response.add_query(question.clone());
        let name = key(&question.name().to_ascii());
        let owner = question.name().clone();
        let addresses = zone.addresses.get(&name);
        let services = zone.services.get(&name);
        known |= addresses.is_some() || services.is_some();
        match question.query_type() {
            RecordType::A => {
                for ip in addresses.into_iter().flatten() {
                    if let IpAddr::V4(v4) = ip {
                        response.add_answer(Record::from_rdata(owner.clone(), 1, RData::A(A(*v4))));
                    }
                }
            }
            RecordType::AAAA => {
                for ip in addresses.into_iter().flatten() {
                    if let IpAddr::V6(v6) = ip {
                        response.add_answer(Record::from_rdata(
                            owner.clone(),
                            1,
                            RData::AAAA(AAAA(*v6)),
                        ));
                    }
                }
            }
            RecordType::SRV => {
                for (host, port) in services.into_iter().flatten() {
                    let target = Name::from_ascii(format!("{host}.")).ok()?;
                    response.add_answer(Record::from_rdata(
                        owner.clone(),
                        1,
                        RData::SRV(SRV::new(0, 100, *port, target)),
                    ));
                }
            }
            _ => {}
        }
    }
    if !known {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response.to_vec().ok()
}
