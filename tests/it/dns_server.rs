//! A real DNS server on loopback (UDP), loaded with records by the test: TXT and MX answers,
//! NXDOMAIN for names it does not know, NODATA for known names without the asked type, and a
//! SERVFAIL mode. Written against RFC 1035 §4 directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    txt: HashMap<String, Vec<String>>,
    mx: HashMap<String, Vec<(u16, String)>>,
    servfail: bool,
}

pub struct TestDns {
    pub port: u16,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

const TXT: u16 = 16;
const MX: u16 = 15;

impl TestDns {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let z = Arc::clone(&zone);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(reply) = answer(&buf[..n], &z) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Self { port, zone, task }
    }

    /// The `domains.dns_servers` entry for this server.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_txt(&self, name: &str, value: &str) {
        let mut z = self.zone.lock().expect("lock");
        z.txt
            .insert(name.to_ascii_lowercase(), vec![value.to_owned()]);
    }

    pub fn set_mx(&self, name: &str, host: &str) {
        let mut z = self.zone.lock().expect("lock");
        z.mx.insert(name.to_ascii_lowercase(), vec![(10, host.to_owned())]);
    }

    pub fn servfail(&self, on: bool) {
        self.zone.lock().expect("lock").servfail = on;
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), pos));
        }
        labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).into_owned());
        pos += len;
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(query: &[u8], zone: &Mutex<Zone>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let (name, end) = read_name(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = &query[12..end + 4];
    let z = zone.lock().expect("lock");
    let known = z.txt.contains_key(&name) || z.mx.contains_key(&name);
    let mut rdatas: Vec<Vec<u8>> = Vec::new();
    match qtype {
        TXT => {
            for value in z.txt.get(&name).into_iter().flatten() {
                let mut rdata = Vec::new();
                for chunk in value.as_bytes().chunks(255) {
                    rdata.push(chunk.len() as u8);
                    rdata.extend_from_slice(chunk);
                }
                rdatas.push(rdata);
            }
        }
        MX => {
            for (pref, host) in z.mx.get(&name).into_iter().flatten() {
                let mut rdata = pref.to_be_bytes().to_vec();
                write_name(&mut rdata, host);
                rdatas.push(rdata);
            }
        }
        _ => {}
    }
    let rcode: u8 = if z.servfail {
        2
    } else if known {
        0
    } else {
        3
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    // QR, opcode 0, AA; RD copied; RA; rcode.
    out.push(0x84 | (query[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    let count = if rcode == 0 { rdatas.len() } else { 0 };
    out.extend_from_slice(&(count as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for rdata in rdatas.iter().take(count) {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    Some(out)
}
