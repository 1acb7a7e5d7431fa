//! The types of the generated protobuf field table (`fields`): what the decoder
//! needs to know of each field of each message.

/// A field type of the table.
#[derive(Clone, Copy, Debug)]
pub enum Type {
    /// string
    Str,
    /// bool
    Bool,
    /// int32 and the like
    I32,
    /// int64
    I64,
    /// float
    F32,
    /// double
    F64,
    /// bytes (base64 in JSON)
    Bytes,
    /// A message.
    Msg(&'static str),
    /// map<string, string>
    MapStr,
    /// map<string, bytes>
    MapBytes,
    /// map<string, message>
    MapMsg(&'static str),
}

/// A field: number, Rust-style name, type, repeated.
#[derive(Clone, Copy, Debug)]
pub struct Field(pub u32, pub &'static str, pub Type, pub bool);
