//! JSON renderings shared by the HTTP endpoint and the client: bytes, members, CRDT
//! values; and the percent-encoding of keys in URL paths.

use hearsay::codec::Status;
use hearsay::crdt::Value;
use hearsay::membership::Member;
use serde_json::{json, Map, Value as Json};

/// Bytes as a JSON string when they are UTF-8, else `{"hex": "…"}`.
pub(crate) fn bytes(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => json!({ "hex": hex(b) }),
    }
}

/// Bytes as text for a table: UTF-8 as is, anything else as `0x…`.
pub(crate) fn bytes_text(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        Json::Object(o) => match o.get("hex").and_then(Json::as_str) {
            Some(h) => format!("0x{h}"),
            None => j.to_string(),
        },
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// Lowercase hex digits.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex digits to bytes.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A member status's lowercase name.
pub(crate) fn status(s: Status) -> &'static str {
    match s {
        Status::Alive => "alive",
        Status::Suspect => "suspect",
        Status::Dead => "dead",
        Status::Left => "left",
    }
}

/// One member as the API shows it.
pub(crate) fn member(m: &Member, local: bool) -> Json {
    json!({
        "id": m.id.to_string(),
        "addr": m.addr.to_string(),
        "incarnation": m.incarnation,
        "status": status(m.status),
        "drained": m.drained,
        "metadata": bytes(&m.metadata),
        "local": local,
    })
}

/// A counter as a JSON number when it fits one, else as a decimal string.
fn counter(n: i128) -> Json {
    match i64::try_from(n) {
        Ok(n) => json!(n),
        Err(_) => Json::String(n.to_string()),
    }
}

/// A CRDT value as JSON: counters as numbers, sets and multi-value registers as arrays,
/// a last-writer-wins register as its value (or null), a flag as a boolean, a map as an
/// object of `{"kind", "value"}` by key.
pub(crate) fn value(v: &Value) -> Json {
    use hearsay::crdt::Kind;
    match v.kind() {
        Kind::GCounter | Kind::PNCounter => v.counter().map(counter).unwrap_or(Json::Null),
        Kind::AWSet | Kind::MVRegister => {
            let items = if v.kind() == Kind::AWSet {
                v.elements()
            } else {
                v.values()
            };
            Json::Array(items.unwrap_or_default().into_iter().map(bytes).collect())
        }
        Kind::LwwRegister => v
            .values()
            .and_then(|vs| vs.first().map(|b| bytes(b)))
            .unwrap_or(Json::Null),
        Kind::EWFlag => v.flag().map(Json::Bool).unwrap_or(Json::Null),
        Kind::ORMap => {
            let mut obj = Map::new();
            for (k, nested) in v.entries().unwrap_or_default() {
                let key = match std::str::from_utf8(k) {
                    Ok(s) => s.to_string(),
                    Err(_) => format!("0x{}", hex(k)),
                };
                obj.insert(
                    key,
                    json!({ "kind": nested.kind().name(), "value": value(nested) }),
                );
            }
            Json::Object(obj)
        }
    }
}

/// A value for a table cell.
pub(crate) fn value_text(j: &Json) -> String {
    match j {
        Json::Array(items) => {
            let parts: Vec<String> = items.iter().map(bytes_text).collect();
            format!("[{}]", parts.join(", "))
        }
        Json::Object(o) if !o.contains_key("hex") => j.to_string(),
        other => bytes_text(other),
    }
}

/// Percent-encode every byte outside RFC 3986's unreserved set, for a URL path segment.
pub(crate) fn encode_component(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Decode `%XX` escapes; `None` for a malformed escape.
pub(crate) fn decode_component(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay::crdt::{Actor, Kind, Op};

    #[test]
    fn keys_survive_a_url_path() {
        for key in [&b"plain"[..], b"a/b c?d=e&f%", b"\xff\x00\xfe", b""] {
            let enc = encode_component(key);
            assert!(enc.bytes().all(|c| c.is_ascii_graphic() && c != b'/'));
            assert_eq!(decode_component(&enc).unwrap(), key);
        }
        assert!(decode_component("%4").is_none());
        assert!(decode_component("%zz").is_none());
        assert_eq!(unhex(&hex(b"\x01\xab")).unwrap(), b"\x01\xab");
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn values_render_by_kind() {
        let mut a = Actor { id: 1, lamport: 0 };
        let mut c = Value::new(Kind::PNCounter);
        c.apply(&mut a, &Op::Incr(5)).unwrap();
        c.apply(&mut a, &Op::Decr(7)).unwrap();
        assert_eq!(value(&c), json!(-2));
        let mut r = Value::new(Kind::LwwRegister);
        assert_eq!(value(&r), Json::Null);
        r.apply(&mut a, &Op::Write(b"hello".to_vec())).unwrap();
        assert_eq!(value(&r), json!("hello"));
        let mut s = Value::new(Kind::AWSet);
        s.apply(&mut a, &Op::Add(b"x".to_vec())).unwrap();
        s.apply(&mut a, &Op::Add(vec![0xff])).unwrap();
        assert_eq!(value(&s), json!(["x", {"hex": "ff"}]));
        assert_eq!(value_text(&value(&s)), "[x, 0xff]");
        let mut m = Value::new(Kind::ORMap);
        m.apply(
            &mut a,
            &Op::Update {
                key: b"hits".to_vec(),
                kind: Kind::GCounter,
                op: Box::new(Op::Incr(3)),
            },
        )
        .unwrap();
        assert_eq!(value(&m), json!({"hits": {"kind": "gcounter", "value": 3}}));
        let mut f = Value::new(Kind::EWFlag);
        f.apply(&mut a, &Op::Enable).unwrap();
        assert_eq!(value(&f), json!(true));
    }
}
