//! Decoding of kube's protobuf wire format (`application/vnd.kubernetes.protobuf`,
//! which kubectl uses for typed requests such as `kubectl create namespace`) into the
//! JSON objects the rest of the server works with. The field numbers come from a
//! generated table (`fields`, of the types in `table`); JSON names from the OpenAPI schemas.
//! Hand-written because no crate converts kube's protobuf messages to kube's JSON.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::status::ApiError;

#[rustfmt::skip]
mod fields;
mod table;

pub use table::{Field, Type};

fn messages() -> &'static HashMap<&'static str, &'static [Field]> {
    static M: OnceLock<HashMap<&'static str, &'static [Field]>> = OnceLock::new();
    M.get_or_init(|| fields::MESSAGES.iter().copied().collect())
}

/// JSON property names by (lower-case schema name, normalized property name).
fn json_names() -> &'static HashMap<(String, String), String> {
    static N: OnceLock<HashMap<(String, String), String>> = OnceLock::new();
    N.get_or_init(|| {
        let mut out = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for r in crate::resources::RESOURCES {
            if !seen.insert((r.group, r.version)) {
                continue;
            }
            for (name, s) in &crate::schema::for_group_version(r.group, r.version).defs {
                let msg = name.trim_start_matches("io.k8s.").to_ascii_lowercase();
                for p in s
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|m| m.keys())
                {
                    out.insert((msg.clone(), normalize(p)), p.clone());
                }
            }
        }
        out
    })
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `field` of `msg` is one Go embeds inline (`json:",inline"`: Volume's
/// volumeSource, IngressRule's ingressRuleValue, Probe's handler...): a message field
/// the kind's JSON schema has no property for, whose own fields sit in the parent.
fn is_inline(msg: &str, field: &str) -> bool {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| json_names().keys().map(|(m, _)| m.clone()).collect());
    let m = msg.to_ascii_lowercase();
    known.contains(&m) && !json_names().contains_key(&(m, normalize(field)))
}

fn json_name(msg: &str, field: &str) -> String {
    json_names()
        .get(&(msg.to_ascii_lowercase(), normalize(field)))
        .cloned()
        .unwrap_or_else(|| camel(field))
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

fn bad(why: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf body is malformed: {why}"))
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or_else(|| bad("truncated varint"))?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let n = self.varint()? as usize;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| bad("length past the end"))?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn fixed(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| bad("truncated fixed field"))?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
}

/// Raw fields of a message: (number, wire type, varint value or bytes).
enum Raw<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed(&'a [u8]),
}

fn fields(b: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, ApiError> {
    let mut r = Reader { b, i: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let tag = r.varint()?;
        let (num, wt) = ((tag >> 3) as u32, tag & 7);
        let raw = match wt {
            0 => Raw::Varint(r.varint()?),
            1 => Raw::Fixed(r.fixed(8)?),
            2 => Raw::Len(r.bytes()?),
            5 => Raw::Fixed(r.fixed(4)?),
            w => return Err(bad(&format!("unsupported wire type {w}"))),
        };
        out.push((num, raw));
    }
    Ok(out)
}

fn scalar(t: Type, raw: &Raw<'_>) -> Result<Value, ApiError> {
    use base64::Engine;
    Ok(match (t, raw) {
        (Type::Str, Raw::Len(b)) => json!(String::from_utf8_lossy(b)),
        (Type::Bytes, Raw::Len(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (Type::Bool, Raw::Varint(v)) => json!(*v != 0),
        (Type::I32, Raw::Varint(v)) => json!(*v as i64 as i32),
        (Type::I64, Raw::Varint(v)) => json!(*v as i64),
        (Type::F64, Raw::Fixed(b)) if b.len() == 8 => {
            json!(f64::from_le_bytes((*b).try_into().unwrap_or([0; 8])))
        }
        (Type::F32, Raw::Fixed(b)) if b.len() == 4 => {
            json!(f32::from_le_bytes((*b).try_into().unwrap_or([0; 4])))
        }
        _ => return Err(bad("a field has the wrong wire type")),
    })
}

fn time(seconds: i64, nanos: i64, micro: bool) -> Value {
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    match jiff::Timestamp::new(seconds, nanos as i32) {
        Ok(t) if micro => json!(t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

/// Decodes one message of type `msg`.
fn message(msg: &str, b: &[u8], depth: usize) -> Result<Value, ApiError> {
    if depth > 64 {
        return Err(bad("nested too deeply"));
    }
    let raw = fields(b)?;
    let int = |n: u32| {
        raw.iter().find_map(|(f, r)| match r {
            Raw::Varint(v) if *f == n => Some(*v as i64),
            _ => None,
        })
    };
    let text = |n: u32| {
        raw.iter().find_map(|(f, r)| match r {
            Raw::Len(b) if *f == n => Some(*b),
            _ => None,
        })
    };
    match msg {
        "apimachinery.pkg.apis.meta.v1.Time" => {
            return Ok(time(int(1).unwrap_or(0), int(2).unwrap_or(0), false))
        }
        "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return Ok(time(int(1).unwrap_or(0), int(2).unwrap_or(0), true))
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            return Ok(json!(String::from_utf8_lossy(text(1).unwrap_or_default())))
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            return Ok(if int(1).unwrap_or(0) == 1 {
                json!(String::from_utf8_lossy(text(3).unwrap_or_default()))
            } else {
                json!(int(2).unwrap_or(0) as i32)
            })
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            return Ok(serde_json::from_slice(text(1).unwrap_or(b"null")).unwrap_or(Value::Null))
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            return Ok(json!(format!("{}s", int(1).unwrap_or(0) as f64 / 1e9)))
        }
        _ => {}
    }
    let table = messages()
        .get(msg)
        .ok_or_else(|| bad(&format!("no protobuf schema for {msg}")))?;
    let mut obj = Map::new();
    for (num, r) in &raw {
        let Some(Field(_, name, ty, repeated)) = table.iter().find(|f| f.0 == *num) else {
            continue; // unknown fields are skipped, as proto decoders do
        };
        let key = json_name(msg, name);
        let value = match (ty, r) {
            (Type::Msg(m), Raw::Len(b)) if !*repeated && is_inline(msg, name) => {
                if let Value::Object(inner) = message(m, b, depth + 1)? {
                    obj.extend(inner);
                }
                continue;
            }
            (Type::Msg(m), Raw::Len(b)) => message(m, b, depth + 1)?,
            (Type::MapStr | Type::MapBytes | Type::MapMsg(_), Raw::Len(b)) => {
                let entry = fields(b)?;
                let k = entry.iter().find_map(|(f, r)| match r {
                    Raw::Len(b) if *f == 1 => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                });
                let v = entry.iter().find(|(f, _)| *f == 2).map(|(_, r)| r);
                let val = match (ty, v) {
                    (Type::MapStr, Some(r)) => scalar(Type::Str, r)?,
                    (Type::MapBytes, Some(r)) => scalar(Type::Bytes, r)?,
                    (Type::MapMsg(m), Some(Raw::Len(b))) => message(m, b, depth + 1)?,
                    (Type::MapStr, None) => json!(""),
                    (Type::MapBytes, None) => json!(""),
                    (Type::MapMsg(_), _) => json!({}),
                    _ => return Err(bad("a map entry has the wrong wire type")),
                };
                let m = obj.entry(key).or_insert_with(|| json!({}));
                if let (Some(k), Some(m)) = (k, m.as_object_mut()) {
                    m.insert(k, val);
                }
                continue;
            }
            (t, Raw::Len(b)) if *repeated && matches!(t, Type::I32 | Type::I64 | Type::Bool) => {
                // A packed repeated scalar.
                let mut rd = Reader { b, i: 0 };
                let arr = obj.entry(key).or_insert_with(|| json!([]));
                while !rd.done() {
                    let v = rd.varint()?;
                    if let Some(a) = arr.as_array_mut() {
                        a.push(scalar(*t, &Raw::Varint(v))?);
                    }
                }
                continue;
            }
            (t, r) => scalar(*t, r)?,
        };
        if *repeated {
            if let Some(a) = obj.entry(key).or_insert_with(|| json!([])).as_array_mut() {
                a.push(value);
            }
        } else {
            // Go writes every non-pointer field; empty strings and zero times mean
            // "unset" in kube's JSON.
            if value.is_null() || value == json!("") {
                continue;
            }
            // Non-pointer ints whose zero kube's JSON omits and whose zero would
            // read as a value here.
            if value == json!(0)
                && matches!(
                    *name,
                    "node_port" | "host_port" | "health_check_node_port" | "generation"
                )
            {
                continue;
            }
            obj.insert(key, value);
        }
    }
    Ok(Value::Object(obj))
}

/// The magic prefix of kube's protobuf envelope.
pub const MAGIC: &[u8] = b"k8s\0";

/// Decodes a request body in kube's protobuf envelope into a JSON object with
/// apiVersion and kind.
pub fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let env = fields(rest)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, r) in &env {
        match (n, r) {
            (1, Raw::Len(tm)) => {
                for (f, v) in fields(tm)? {
                    if let Raw::Len(s) = v {
                        match f {
                            1 => api_version = String::from_utf8_lossy(s).into_owned(),
                            2 => kind = String::from_utf8_lossy(s).into_owned(),
                            _ => {}
                        }
                    }
                }
            }
            (2, Raw::Len(b)) => raw = b,
            _ => {}
        }
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("core", api_version.as_str()),
    };
    // Go packages are named by the group's first label (rbac.authorization.k8s.io: rbac).
    let short = group.split('.').next().unwrap_or(group);
    let msg = format!("api.{short}.{version}.{kind}");
    let msg = if kind == "DeleteOptions" {
        "apimachinery.pkg.apis.meta.v1.DeleteOptions".to_string()
    } else {
        msg
    };
    let mut v = message(&msg, raw, 0)?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len(field: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field << 3 | 2), out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    #[test]
    fn a_configmap_envelope_decodes_to_kube_json() {
        // ObjectMeta{name:"cm1", labels{a:b}}
        let mut entry = Vec::new();
        len(1, b"a", &mut entry);
        len(2, b"b", &mut entry);
        let mut meta = Vec::new();
        len(1, b"cm1", &mut meta);
        len(2, b"", &mut meta); // generateName "" as Go writes it
        len(11, &entry, &mut meta);
        let mut cm = Vec::new();
        len(1, &meta, &mut cm);
        let mut d = Vec::new();
        len(1, b"k", &mut d);
        len(2, b"v", &mut d);
        len(2, &d, &mut cm);
        let mut tm = Vec::new();
        len(1, b"v1", &mut tm);
        len(2, b"ConfigMap", &mut tm);
        let mut env = MAGIC.to_vec();
        let mut u = Vec::new();
        len(1, &tm, &mut u);
        len(2, &cm, &mut u);
        env.extend(u);
        let v = decode_object(&env).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "labels": {"a": "b"}}, "data": {"k": "v"}})
        );
        assert!(decode_object(b"k8s\0\x0a\xff").is_err());
        assert!(decode_object(b"{}").is_err());
    }
}
