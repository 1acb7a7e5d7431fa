//! One query in, one answer out: questions in the cluster's domain answered from the
//! [`Zone`] (authoritative, with the SOA on negative answers so resolvers cache them),
//! the rest left to the forwarder. Malformed or unexpected queries get FORMERR or
//! NOTIMP, never a crash; a UDP answer larger than the asker takes (512 bytes, or its
//! EDNS size) is cut and marked truncated, so it asks again over TCP.

use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{Found, Zone, TTL};

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Ask upstream (a name outside the cluster's domain).
    Forward,
    /// Say nothing (not even a header to answer).
    Drop,
}

/// The largest UDP answer without EDNS.
pub const CLASSIC_UDP: usize = 512;

/// The header of the answer to `q`: its ID, opcode and recursion flags.
pub fn reply_to(q: &Message) -> Message {
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    r
}

/// A bare error answer for a query that could not be read: its ID and the code.
fn error_for(packet: &[u8], code: ResponseCode) -> Reply {
    if packet.len() < 12 {
        return Reply::Drop;
    }
    let mut r = Message::new();
    r.set_id(u16::from_be_bytes([packet[0], packet[1]]))
        .set_message_type(MessageType::Response)
        .set_response_code(code);
    match r.to_vec() {
        Ok(b) => Reply::Answer(b),
        Err(_) => Reply::Drop,
    }
}

fn soa(zone: &Zone) -> Option<Record> {
    let origin = Name::from_str(zone.domain()).ok()?;
    let mname = Name::from_str(&format!("ns.dns.{}", zone.domain())).ok()?;
    let rname = Name::from_str(&format!("hostmaster.{}", zone.domain())).ok()?;
    Some(Record::from_rdata(
        origin,
        TTL,
        RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL)),
    ))
}

/// Answers `packet` from `zone`; `udp` says it came over UDP (answers are then cut
/// to what the asker takes).
pub fn answer(zone: &Zone, packet: &[u8], udp: bool) -> Reply {
    let q = match Message::from_vec(packet) {
        Ok(q) => q,
        Err(_) => return error_for(packet, ResponseCode::FormErr),
    };
    if q.message_type() != MessageType::Query {
        return Reply::Drop;
    }
    if q.op_code() != OpCode::Query {
        let mut r = reply_to(&q);
        r.set_response_code(ResponseCode::NotImp);
        return encode(r, None);
    }
    let [question] = q.queries() else {
        let mut r = reply_to(&q);
        r.set_response_code(ResponseCode::FormErr);
        return encode(r, None);
    };
    if question.query_class() != DNSClass::IN && question.query_class() != DNSClass::ANY {
        return Reply::Forward;
    }
    let qname = question.name().to_ascii().to_ascii_lowercase();
    let found = zone.lookup(&qname, question.query_type());
    if found == Found::NotOurs {
        return Reply::Forward;
    }
    let mut r = reply_to(&q);
    r.set_authoritative(true).add_query(question.clone());
    match found {
        Found::Records(rs) => {
            // Records carry the owner as stored; answer with the name as asked.
            for mut rec in rs {
                rec.set_name(question.name().clone());
                r.add_answer(rec);
            }
            r.set_response_code(ResponseCode::NoError);
        }
        Found::NoData => {
            r.set_response_code(ResponseCode::NoError);
            r.add_name_servers(soa(zone));
        }
        Found::NxDomain | Found::NotOurs => {
            r.set_response_code(ResponseCode::NXDomain);
            r.add_name_servers(soa(zone));
        }
    }
    let limit = udp.then(|| udp_limit_of(&q));
    if let Some(e) = q.extensions() {
        let mut edns = Edns::new();
        edns.set_max_payload(e.max_payload().max(CLASSIC_UDP as u16));
        r.set_edns(edns);
    }
    encode(r, limit)
}

/// Encodes `r`, cut to `limit` bytes (answers dropped, TC set) when it is larger.
fn encode(mut r: Message, limit: Option<usize>) -> Reply {
    let Ok(bytes) = r.to_vec() else {
        return Reply::Drop;
    };
    match limit {
        Some(max) if bytes.len() > max => {
            r.take_answers();
            r.take_additionals();
            r.take_name_servers();
            r.set_truncated(true);
            match r.to_vec() {
                Ok(b) => Reply::Answer(b),
                Err(_) => Reply::Drop,
            }
        }
        _ => Reply::Answer(bytes),
    }
}

/// The largest UDP answer the asker of `q` takes: 512 bytes, or its EDNS payload size.
fn udp_limit_of(q: &Message) -> usize {
    q.extensions().as_ref().map_or(CLASSIC_UDP, |e| {
        usize::from(e.max_payload()).max(CLASSIC_UDP)
    })
}

/// The largest UDP answer the asker of `packet` takes (512 bytes if it does not parse).
pub fn udp_limit(packet: &[u8]) -> usize {
    Message::from_vec(packet).map_or(CLASSIC_UDP, |q| udp_limit_of(&q))
}

/// Whether an answer has the TC (truncated) bit set.
pub fn is_truncated(answer: &[u8]) -> bool {
    answer.len() > 2 && answer[2] & 0x02 != 0
}

/// The records of `qtype` an upstream answer holds (for the forwarder's cache TTL).
pub fn min_ttl(packet: &[u8]) -> Option<u32> {
    let m = Message::from_vec(packet).ok()?;
    m.answers()
        .iter()
        .chain(m.name_servers())
        .map(|r| r.ttl())
        .min()
}

/// The cache key of a query: lowercased name, type and class.
pub fn cache_key(packet: &[u8]) -> Option<(String, RecordType, DNSClass)> {
    let m = Message::from_vec(packet).ok()?;
    let [q] = m.queries() else { return None };
    Some((
        q.name().to_ascii().to_ascii_lowercase(),
        q.query_type(),
        q.query_class(),
    ))
}
