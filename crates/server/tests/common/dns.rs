//! A loopback DNS responder for tests, in process: it answers only the A and SRV records it is
//! given (NOERROR with no answer for another type of a known name, NXDOMAIN for any other
//! name), never recurses, and records every question; the SIP and XMPP tests share it. Point
//! the hub at it with [`TestDns::toml`] so no lookup leaves the machine.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One resource record.
#[derive(Debug, Clone)]
pub enum Record {
    A {
        name: String,
        ip: Ipv4Addr,
    },
    Srv {
        name: String,
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
}

impl Record {
    pub fn a(name: &str, ip: Ipv4Addr) -> Record {
        Record::A {
            name: name.to_ascii_lowercase(),
            ip,
        }
    }

    /// An SRV record, e.g. `srv("_sip._tcp.corp-b.test", 0, 5, 5070, "sip.corp-b.test")`.
    pub fn srv(name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::Srv {
            name: name.to_ascii_lowercase(),
            priority,
            weight,
            port,
            target: target.to_ascii_lowercase(),
        }
    }

    fn name(&self) -> &str {
        match self {
            Record::A { name, .. } | Record::Srv { name, .. } => name,
        }
    }

    fn rtype(&self) -> u16 {
        match self {
            Record::A { .. } => 1,
            Record::Srv { .. } => 33,
        }
    }

    fn rdata(&self) -> Vec<u8> {
        match self {
            Record::A { ip, .. } => ip.octets().to_vec(),
            Record::Srv {
                priority,
                weight,
                port,
                target,
                ..
            } => {
                let mut out = Vec::new();
                out.extend_from_slice(&priority.to_be_bytes());
                out.extend_from_slice(&weight.to_be_bytes());
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&encode_name(target));
                out
            }
        }
    }
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// The question of a query: (name, type, end offset of the question), or `None` when the
/// bytes are not one.
fn question(data: &[u8]) -> Option<(String, u16, usize)> {
    let mut off = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*data.get(off)?);
        if len == 0 {
            off += 1;
            break;
        }
        if len > 63 || labels.len() > 127 {
            return None;
        }
        let label = data.get(off + 1..off + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        off += 1 + len;
    }
    let qtype = u16::from_be_bytes([*data.get(off)?, *data.get(off + 1)?]);
    data.get(off + 3)?;
    Some((labels.join("."), qtype, off + 4))
}

fn answer(data: &[u8], records: &[Record]) -> Option<(Vec<u8>, String)> {
    if data.len() < 12 {
        return None;
    }
    let (name, qtype, end) = question(data)?;
    let known = records.iter().any(|r| r.name() == name);
    let matching: Vec<&Record> = records
        .iter()
        .filter(|r| r.name() == name && r.rtype() == qtype)
        .collect();
    let rcode: u16 = if known { 0 } else { 3 };
    let rd = u16::from_be_bytes([data[2], data[3]]) & 0x0100;
    let mut out = Vec::new();
    out.extend_from_slice(&data[..2]);
    out.extend_from_slice(&(0x8400 | rd | rcode).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(matching.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&data[12..end]);
    for r in &matching {
        out.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        out.extend_from_slice(&r.rtype().to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        let rdata = r.rdata();
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    let line = format!(
        "{name} type={qtype} -> {}",
        if known {
            matching.len().to_string()
        } else {
            "NXDOMAIN".into()
        }
    );
    Some((out, line))
}

/// A running responder on a loopback UDP port; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TestDns {
    pub fn start(records: Vec<Record>) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((reply, line)) = answer(&buf[..n], &records) {
                    let _ = socket.send_to(&reply, peer);
                    q.lock().unwrap().push(line);
                }
            }
        });
        TestDns {
            addr,
            queries,
            stop,
        }
    }

    /// `[dns]` for the hub's configuration.
    pub fn toml(&self) -> String {
        format!("[dns]\nservers = [\"{}\"]\n", self.addr)
    }

    /// A line (`NAME type=N -> ANSWERS`) for every question answered so far.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
