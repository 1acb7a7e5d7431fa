//! The OpenAPI v2 document in its protobuf form, as kube-apiserver serves
//! /openapi/v2 to clients asking for
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (kubectl asks for
//! nothing else, and fails on JSON). The message shapes are gnostic's openapi_v2
//! model (Document, Schema, NamedSchema...), as its documentation defines them; the
//! field numbers are written here by hand because no maintained crate ships the
//! model for prost, and the encoding is plain protobuf wire format. Maps become
//! lists of named pairs and free-form values (defaults, enums, vendor extensions)
//! their YAML text, as gnostic encodes them. The paths are left out: clients read
//! the definitions (by their x-kubernetes-group-version-kind) and discovery serves
//! the paths.

use serde_json::Value;

/// Protobuf wire writer.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn message(&mut self, field: u32, m: Writer) {
        self.bytes(field, &m.0);
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// gnostic's Any: a free-form value as YAML text (field 2).
fn any(v: &Value) -> Writer {
    let mut w = Writer::default();
    w.string(2, &serde_yaml::to_string(v).unwrap_or_default());
    w
}

/// A NamedAny (name 1, value 2) for each vendor extension (x-...) of `o`.
fn extensions(w: &mut Writer, field: u32, o: &serde_json::Map<String, Value>) {
    for (k, v) in o.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Writer::default();
        named.string(1, k);
        named.message(2, any(v));
        w.message(field, named);
    }
}

fn strings(w: &mut Writer, field: u32, v: Option<&Value>) {
    match v {
        Some(Value::String(s)) => w.string(field, s),
        Some(Value::Array(a)) => {
            for s in a.iter().filter_map(Value::as_str) {
                w.bytes(field, s.as_bytes());
            }
        }
        _ => {}
    }
}

/// A Schema message from a JSON schema object.
fn schema(s: &Value) -> Writer {
    let mut w = Writer::default();
    let Some(o) = s.as_object() else { return w };
    let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
    let int = |k: &str| o.get(k).and_then(Value::as_i64).unwrap_or(0);
    let float = |k: &str| o.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let flag = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
    w.string(1, text("$ref"));
    w.string(2, text("format"));
    w.string(3, text("title"));
    w.string(4, text("description"));
    if let Some(d) = o.get("default") {
        w.message(5, any(d));
    }
    w.double(6, float("multipleOf"));
    w.double(7, float("maximum"));
    w.boolean(8, flag("exclusiveMaximum"));
    w.double(9, float("minimum"));
    w.boolean(10, flag("exclusiveMinimum"));
    w.int64(11, int("maxLength"));
    w.int64(12, int("minLength"));
    w.string(13, text("pattern"));
    w.int64(14, int("maxItems"));
    w.int64(15, int("minItems"));
    w.boolean(16, flag("uniqueItems"));
    w.int64(17, int("maxProperties"));
    w.int64(18, int("minProperties"));
    strings(&mut w, 19, o.get("required"));
    for e in o
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(20, any(e));
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Writer::default();
            item.key(2, 0);
            item.varint(u64::from(*b));
            w.message(21, item);
        }
        Some(v @ Value::Object(_)) => {
            let mut item = Writer::default();
            item.message(1, schema(v));
            w.message(21, item);
        }
        _ => {}
    }
    if o.get("type").is_some() {
        let mut t = Writer::default();
        strings(&mut t, 1, o.get("type"));
        w.message(22, t);
    }
    match o.get("items") {
        Some(Value::Array(items)) => {
            let mut it = Writer::default();
            for i in items {
                it.message(1, schema(i));
            }
            w.message(23, it);
        }
        Some(i @ Value::Object(_)) => {
            let mut it = Writer::default();
            it.message(1, schema(i));
            w.message(23, it);
        }
        _ => {}
    }
    for s in o
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(24, schema(s));
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        let mut p = Writer::default();
        for (name, s) in props {
            p.message(1, named_schema(name, s));
        }
        w.message(25, p);
    }
    w.string(26, text("discriminator"));
    w.boolean(27, flag("readOnly"));
    if let Some(e) = o.get("example") {
        w.message(30, any(e));
    }
    extensions(&mut w, 31, o);
    w
}

fn named_schema(name: &str, s: &Value) -> Writer {
    let mut w = Writer::default();
    w.string(1, name);
    w.message(2, schema(s));
    w
}

/// The Document message of a v2 document (swagger, info, definitions).
pub fn document(doc: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    w.string(
        1,
        doc.get("swagger").and_then(Value::as_str).unwrap_or("2.0"),
    );
    if let Some(info) = doc.get("info").and_then(Value::as_object) {
        let mut i = Writer::default();
        i.string(1, info.get("title").and_then(Value::as_str).unwrap_or(""));
        i.string(2, info.get("version").and_then(Value::as_str).unwrap_or(""));
        w.message(2, i);
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        let mut d = Writer::default();
        for (name, s) in defs {
            d.message(1, named_schema(name, s));
        }
        w.message(9, d);
    }
    w.0
}
