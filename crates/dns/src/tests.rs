//! The zone and the answers, from Services and EndpointSlices as the API serves them.

use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;

use crate::answer::{answer, Reply};
use crate::zone::{reverse_name, Found, Zone};

fn zone() -> Zone {
    let services = [
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"clusterIP": "10.96.1.10", "clusterIPs": ["10.96.1.10"],
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        json!({"metadata": {"name": "db", "namespace": "prod"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
        json!({"metadata": {"name": "ext", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        json!({"metadata": {"name": "empty", "namespace": "default"},
               "spec": {"clusterIP": "None"}}),
    ];
    let slices = [json!({"metadata": {"name": "db-x", "namespace": "prod",
                                      "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.2.6"], "conditions": {"ready": true}},
            {"addresses": ["10.42.2.7"], "conditions": {"ready": false}}]})];
    let services: Vec<Arc<_>> = services
        .into_iter()
        .map(|s| Arc::new(serde_json::from_value(s).unwrap()))
        .collect();
    let slices: Vec<Arc<_>> = slices
        .into_iter()
        .map(|s| Arc::new(serde_json::from_value(s).unwrap()))
        .collect();
    Zone::build("cluster.local", &services, &slices)
}

fn addrs(f: Found) -> Vec<String> {
    match f {
        Found::Records(rs) => rs
            .iter()
            .map(|r| match r.data() {
                RData::A(a) => a.0.to_string(),
                RData::SRV(s) => format!("{} {}", s.port(), s.target()),
                RData::PTR(p) => p.0.to_string(),
                RData::CNAME(c) => c.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn services_endpoints_and_pods_have_their_names() {
    let z = zone();
    assert_eq!(
        addrs(z.lookup("web.default.svc.cluster.local.", RecordType::A)),
        ["10.96.1.10"]
    );
    assert_eq!(
        addrs(z.lookup("WEB.default.svc.cluster.local", RecordType::A)),
        ["10.96.1.10"]
    );
    assert_eq!(
        addrs(z.lookup("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)),
        ["80 web.default.svc.cluster.local."]
    );
    // Headless: the ready endpoints, each by hostname or dashed address.
    assert_eq!(
        addrs(z.lookup("db.prod.svc.cluster.local.", RecordType::A)),
        ["10.42.1.5", "10.42.2.6"]
    );
    assert_eq!(
        addrs(z.lookup("db-0.db.prod.svc.cluster.local.", RecordType::A)),
        ["10.42.1.5"]
    );
    assert_eq!(
        addrs(z.lookup("10-42-2-6.db.prod.svc.cluster.local.", RecordType::A)),
        ["10.42.2.6"]
    );
    let srv = addrs(z.lookup("_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV));
    assert!(
        srv.contains(&"5432 db-0.db.prod.svc.cluster.local.".to_string()),
        "{srv:?}"
    );
    assert_eq!(
        addrs(z.lookup("ext.default.svc.cluster.local.", RecordType::A)),
        ["example.com."]
    );
    assert_eq!(
        addrs(z.lookup("10-42-3-4.anything.pod.cluster.local.", RecordType::A)),
        ["10.42.3.4"]
    );
    assert_eq!(
        addrs(z.lookup(
            &reverse_name("10.96.1.10".parse().unwrap()),
            RecordType::PTR
        )),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        addrs(z.lookup(&reverse_name("10.42.1.5".parse().unwrap()), RecordType::PTR)),
        ["db-0.db.prod.svc.cluster.local."]
    );
}

#[test]
fn missing_names_and_types_are_told_apart() {
    let z = zone();
    assert_eq!(
        z.lookup("nope.default.svc.cluster.local.", RecordType::A),
        Found::NxDomain
    );
    assert_eq!(
        z.lookup("web.default.svc.cluster.local.", RecordType::AAAA),
        Found::NoData
    );
    assert_eq!(
        z.lookup("default.svc.cluster.local.", RecordType::A),
        Found::NoData
    );
    assert_eq!(
        z.lookup("empty.default.svc.cluster.local.", RecordType::A),
        Found::NoData
    );
    assert_eq!(z.lookup("cluster.local.", RecordType::A), Found::NoData);
    assert_eq!(z.lookup("example.com.", RecordType::A), Found::NotOurs);
    assert_eq!(
        z.lookup("1.2.3.4.in-addr.arpa.", RecordType::PTR),
        Found::NotOurs
    );
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn reply(r: Reply) -> Message {
    match r {
        Reply::Answer(b) => Message::from_vec(&b).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn answers_are_authoritative_with_the_soa_on_negatives() {
    let z = zone();
    let m = reply(answer(
        &z,
        &query("web.default.svc.cluster.local.", RecordType::A, None),
        true,
    ));
    assert_eq!(m.id(), 4242);
    assert!(m.authoritative());
    assert_eq!(m.answers().len(), 1);
    let m = reply(answer(
        &z,
        &query("nope.default.svc.cluster.local.", RecordType::A, None),
        true,
    ));
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    assert_eq!(
        answer(&z, &query("example.com.", RecordType::A, None), true),
        Reply::Forward
    );
}

#[test]
fn bad_and_odd_queries_get_an_answer_or_silence_never_a_crash() {
    let z = zone();
    // Garbage with a header: FORMERR with its ID. Shorter than a header: silence.
    let mut junk = vec![0x12, 0x34];
    junk.extend_from_slice(&[0xff; 30]);
    let m = reply(answer(&z, &junk, true));
    assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    assert_eq!(answer(&z, &[1, 2, 3], true), Reply::Drop);
    assert_eq!(answer(&z, &[], true), Reply::Drop);
    // A truncated packet (the question cut off).
    let q = query("web.default.svc.cluster.local.", RecordType::A, None);
    let m = reply(answer(&z, &q[..q.len() - 3], true));
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // An update: not implemented.
    let mut u = Message::from_vec(&q).unwrap();
    u.set_op_code(OpCode::Update);
    let m = reply(answer(&z, &u.to_vec().unwrap(), true));
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    // Unknown types in the zone: an empty answer.
    let m = reply(answer(
        &z,
        &query(
            "web.default.svc.cluster.local.",
            RecordType::Unknown(65000),
            None,
        ),
        true,
    ));
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    // A response sent to us: ignored.
    let mut r = Message::from_vec(&q).unwrap();
    r.set_message_type(MessageType::Response);
    assert_eq!(answer(&z, &r.to_vec().unwrap(), true), Reply::Drop);
}

#[test]
fn big_udp_answers_are_truncated_unless_edns_or_tcp_allow_them() {
    // A headless Service with 100 endpoints: some 1,600 bytes of A records.
    let eps: Vec<_> = (0..100)
        .map(|i| json!({"addresses": [format!("10.42.{}.{}", i / 200, i % 200 + 1)]}))
        .collect();
    let svc = json!({"metadata": {"name": "big", "namespace": "default"},
                     "spec": {"clusterIP": "None"}});
    let slice = json!({"metadata": {"name": "big-x", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4", "endpoints": eps});
    let z = Zone::build(
        "cluster.local",
        &[Arc::new(serde_json::from_value(svc).unwrap())],
        &[Arc::new(serde_json::from_value(slice).unwrap())],
    );
    let q = query("big.default.svc.cluster.local.", RecordType::A, None);
    let m = reply(answer(&z, &q, true));
    assert!(m.truncated());
    assert!(m.answers().is_empty());
    let m = reply(answer(&z, &q, false));
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 100);
    let q = query("big.default.svc.cluster.local.", RecordType::A, Some(4096));
    let m = reply(answer(&z, &q, true));
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 100);
}

#[test]
fn other_names_are_forwarded_once_then_answered_from_the_cache() {
    use crate::forward::Forwarder;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // An upstream that answers every question with 192.0.2.7 (TTL 60), counting.
        let up = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            while let Ok((n, from)) = up.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = crate::answer::reply_to(&q);
                r.add_query(q.queries()[0].clone());
                r.add_answer(hickory_proto::rr::Record::from_rdata(
                    q.queries()[0].name().clone(),
                    60,
                    RData::A(hickory_proto::rr::rdata::A("192.0.2.7".parse().unwrap())),
                ));
                up.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        let shared = crate::Shared::new("cluster.local", Forwarder::new(vec![addr]));
        for id in [1u16, 2] {
            let mut q = Message::from_vec(&query("example.com.", RecordType::A, None)).unwrap();
            q.set_id(id);
            let b = shared.respond(&q.to_vec().unwrap(), true).await.unwrap();
            let m = Message::from_vec(&b).unwrap();
            assert_eq!(m.id(), id, "the asker's ID, also from the cache");
            assert_eq!(m.answers().len(), 1);
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the second answer came from the cache"
        );
        // No upstream answering: SERVFAIL, not silence.
        let none = crate::Shared::new("cluster.local", Forwarder::new(vec![]));
        let b = none
            .respond(&query("example.org.", RecordType::A, None), true)
            .await
            .unwrap();
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::ServFail
        );
    });
}

#[test]
fn forwarded_answers_too_big_for_udp_come_cut_over_udp_and_whole_over_tcp() {
    use crate::forward::Forwarder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // An upstream with 60 addresses for every name: cut over UDP (no EDNS), whole
        // over TCP, on one port.
        let full = |q: &Message| {
            let mut r = crate::answer::reply_to(q);
            r.add_query(q.queries()[0].clone());
            for i in 1..=60u8 {
                r.add_answer(hickory_proto::rr::Record::from_rdata(
                    q.queries()[0].name().clone(),
                    60,
                    RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, i)),
                ));
            }
            r
        };
        // A UDP and a TCP socket on one port (tried again if the UDP socket's port is
        // taken for TCP).
        let (up, tcp) = 'bound: {
            for _ in 0..20 {
                let up = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                if let Ok(tcp) = tokio::net::TcpListener::bind(up.local_addr().unwrap()).await {
                    break 'bound (up, tcp);
                }
            }
            panic!("no port free for both UDP and TCP");
        };
        let addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            while let Ok((n, from)) = up.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = full(&q);
                r.take_answers();
                r.set_truncated(true);
                up.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let n = s.read_u16().await.unwrap();
                let mut q = vec![0u8; usize::from(n)];
                s.read_exact(&mut q).await.unwrap();
                let b = full(&Message::from_vec(&q).unwrap()).to_vec().unwrap();
                s.write_all(&(b.len() as u16).to_be_bytes()).await.unwrap();
                s.write_all(&b).await.unwrap();
            }
        });
        let shared = crate::Shared::new("cluster.local", Forwarder::new(vec![addr]));
        let q = query("big.example.", RecordType::A, None);
        let ask = |udp: bool| {
            let (shared, q) = (shared.clone(), q.clone());
            async move { Message::from_vec(&shared.respond(&q, udp).await.unwrap()).unwrap() }
        };
        // UDP first: cut, and not kept (a TCP asker must not get the cut answer).
        let m = ask(true).await;
        assert!(m.truncated() && m.answers().is_empty());
        let m = ask(false).await;
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 60);
        // The whole answer, now cached, is too big for a UDP asker: it gets a cut one.
        let b = shared.respond(&q, true).await.unwrap();
        assert!(b.len() <= 512, "{} bytes over UDP", b.len());
        assert!(Message::from_vec(&b).unwrap().truncated());
        // A TCP asker gets it from the cache, whole.
        assert_eq!(ask(false).await.answers().len(), 60);
    });
}
