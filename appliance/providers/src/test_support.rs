//! Helpers shared by the providers' unit tests.

use dg_engine::evidence::EvidenceContext;
use dg_engine::time::Timestamp;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An evidence context for a provider call outside any real run.
pub(crate) fn context() -> EvidenceContext {
    let one = NonZeroU64::MIN;
    EvidenceContext {
        tenant_id: one,
        namespace_id: one,
        run_id: "r".into(),
        scenario_id: "s".into(),
        stage_id: "st".into(),
        trigger_id: "t".into(),
        trigger_time: Timestamp::Logical(1),
        correlation_id: None,
    }
}

/// A DNS server on a loopback UDP port, for the http provider's resolver tests: it answers A
/// queries for the names it was given, an empty answer for other types of those names, and
/// NXDOMAIN for every other name; or, built `silent`, never answers. It counts the queries it
/// received and stops by itself after a few seconds.
pub(crate) struct LoopbackDns {
    pub(crate) address: SocketAddr,
    queries: Arc<AtomicUsize>,
}

impl LoopbackDns {
    /// Answers `names` (name without the final dot, IPv4 address).
    pub(crate) fn answering(names: &[(&str, Ipv4Addr)]) -> Self {
        Self::start(Some(names.iter().map(|(name, ip)| (format!("{name}."), *ip)).collect()))
    }

    /// Receives queries and never answers.
    pub(crate) fn silent() -> Self {
        Self::start(None)
    }

    fn start(names: Option<Vec<(String, Ipv4Addr)>>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let address = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&queries);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buffer = [0u8; 1500];
            while Instant::now() < deadline {
                let Ok((len, peer)) = socket.recv_from(&mut buffer) else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let Some(names) = &names else { continue };
                let request = Message::from_vec(&buffer[..len]).unwrap();
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                for query in &request.queries {
                    response.add_query(query.clone());
                    let asked = query.name().to_ascii().to_ascii_lowercase();
                    match names.iter().find(|(name, _)| *name == asked) {
                        Some((_, ip)) if query.query_type() == RecordType::A => {
                            response.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A(*ip))));
                        }
                        Some(_) => {}
                        None => response.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
                socket.send_to(&response.to_vec().unwrap(), peer).unwrap();
            }
        });
        Self { address, queries }
    }

    /// Queries received so far.
    pub(crate) fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Queries received, after waiting up to `within` for the first: the server's thread
    /// counts a query only once it has read it, which a silent server's caller cannot await.
    pub(crate) fn queries_within(&self, within: Duration) -> usize {
        let waiting = Instant::now();
        while self.queries() == 0 && waiting.elapsed() < within {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.queries()
    }
}
