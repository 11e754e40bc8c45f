//! The canonical JSON writer: byte for byte what `serde_jcs 0.1.0` writes (the encoding
//! Decision Gate hashes), without its cost.
//!
//! `serde_jcs` boxes a writer for every fragment it writes and buffers every object
//! member in two vectors and a `BTreeMap` before sorting. This writer keeps one output
//! buffer: members are written where they fall, their byte spans are remembered, and when
//! an object ends out of order its members are copied back sorted (an object already in
//! order stays as written). The rules are the same:
//! - members are ordered by the bytes of their serialized key, quotes and escapes
//!   included (so `"a "` sorts before `"a"`); a repeated key keeps its last value;
//! - no whitespace; integers verbatim; floats in ECMAScript form (`ryu-js`), zero as `0`
//!   (NaN and infinities arrive as `null`: `serde_json` writes them so);
//! - strings escaped as `serde_json` escapes them.
//!
//! The tests compare it with `serde_jcs` itself over generated values, and the reference
//! runpack fixtures check the digests built on it.

use std::io;
use std::num::FpCategory;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

/// Writes the canonical JSON of `value`.
///
/// # Errors
/// A value with no JSON form (a non-string map key, a non-finite float).
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let formatter = CanonicalFormatter { out: &mut out, objects: Vec::new(), members: Vec::new(), scratch: Vec::new() };
    // Every formatter call writes to `out`; the serializer's own writer stays unused.
    value.serialize(&mut serde_json::Serializer::with_formatter(io::sink(), formatter))?;
    Ok(out)
}

/// One written member of an open object: its key at `key_start..key_end`, then `:`, then
/// its value up to `value_end`.
struct Member {
    key_start: usize,
    key_end: usize,
    value_end: usize,
}

/// An object being written.
struct OpenObject {
    /// Where its first member starts (just after `{`).
    content_start: usize,
    /// Index of its first member in `members`.
    first_member: usize,
    /// Span of the key being written or just written.
    key_start: usize,
    key_end: usize,
}

struct CanonicalFormatter<'a> {
    out: &'a mut Vec<u8>,
    objects: Vec<OpenObject>,
    /// Members of every open object, innermost last.
    members: Vec<Member>,
    /// Reused buffer for reordering an object's members.
    scratch: Vec<u8>,
}

fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl CanonicalFormatter<'_> {
    fn open_object(&mut self) -> io::Result<&mut OpenObject> {
        self.objects.last_mut().ok_or_else(|| refused("object member outside an object"))
    }

    fn write_float(&mut self, category: FpCategory, value: impl ryu_js::Float) -> io::Result<()> {
        match category {
            FpCategory::Nan | FpCategory::Infinite => Err(refused("NaN and infinities have no JSON form")),
            FpCategory::Zero => {
                self.out.push(b'0');
                Ok(())
            }
            FpCategory::Normal | FpCategory::Subnormal => {
                self.out.extend_from_slice(ryu_js::Buffer::new().format_finite(value).as_bytes());
                Ok(())
            }
        }
    }
}

/// Integers are written as `serde_json` writes them (verbatim, any width), into `out`.
macro_rules! integers_written_plainly {
    ($($method:ident: $type:ty),* $(,)?) => {$(
        fn $method<W: ?Sized + io::Write>(&mut self, _: &mut W, value: $type) -> io::Result<()> {
            CompactFormatter.$method(self.out, value)
        }
    )*};
}

impl Formatter for CanonicalFormatter<'_> {
    fn write_null<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn write_bool<W: ?Sized + io::Write>(&mut self, _: &mut W, value: bool) -> io::Result<()> {
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    integers_written_plainly!(write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64, write_i128: i128,
        write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64, write_u128: u128);

    fn write_f32<W: ?Sized + io::Write>(&mut self, _: &mut W, value: f32) -> io::Result<()> {
        self.write_float(value.classify(), value)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, _: &mut W, value: f64) -> io::Result<()> {
        self.write_float(value.classify(), value)
    }

    fn write_number_str<W: ?Sized + io::Write>(&mut self, _: &mut W, _: &str) -> io::Result<()> {
        Err(refused("arbitrary-precision numbers have no canonical form here"))
    }

    fn begin_string<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b'"');
        Ok(())
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b'"');
        Ok(())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, _: &mut W, fragment: &str) -> io::Result<()> {
        self.out.extend_from_slice(fragment.as_bytes());
        Ok(())
    }

    fn write_char_escape<W: ?Sized + io::Write>(&mut self, _: &mut W, escape: CharEscape) -> io::Result<()> {
        const HEX: [u8; 16] = *b"0123456789abcdef";
        let escaped: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                let sequence = [b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xF)]];
                self.out.extend_from_slice(&sequence);
                return Ok(());
            }
        };
        self.out.extend_from_slice(escaped);
        Ok(())
    }

    fn write_raw_fragment<W: ?Sized + io::Write>(&mut self, _: &mut W, fragment: &str) -> io::Result<()> {
        // As serde_jcs does: a raw fragment is parsed and written canonically.
        let value: serde_json::Value = serde_json::from_str(fragment)?;
        self.out.extend_from_slice(&to_vec(&value)?);
        Ok(())
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b'[');
        Ok(())
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b']');
        Ok(())
    }

    fn begin_array_value<W: ?Sized + io::Write>(&mut self, _: &mut W, first: bool) -> io::Result<()> {
        if !first {
            self.out.push(b',');
        }
        Ok(())
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        Ok(())
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b'{');
        let here = self.out.len();
        self.objects.push(OpenObject {
            content_start: here,
            first_member: self.members.len(),
            key_start: here,
            key_end: here,
        });
        Ok(())
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, _: &mut W, first: bool) -> io::Result<()> {
        if !first {
            self.out.push(b',');
        }
        let here = self.out.len();
        self.open_object()?.key_start = here;
        Ok(())
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let here = self.out.len();
        self.open_object()?.key_end = here;
        Ok(())
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b':');
        Ok(())
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let value_end = self.out.len();
        let object = self.open_object()?;
        let member = Member { key_start: object.key_start, key_end: object.key_end, value_end };
        self.members.push(member);
        Ok(())
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let object = self.objects.pop().ok_or_else(|| refused("object end without a start"))?;
        let out = &mut *self.out;
        let members = &mut self.members[object.first_member..];
        let key = |member: &Member| member.key_start..member.key_end;
        if members.windows(2).all(|pair| out[key(&pair[0])] < out[key(&pair[1])]) {
            // Already in order with no repeated key: the bytes written are canonical.
            self.members.truncate(object.first_member);
            out.push(b'}');
            return Ok(());
        }
        // Stable: among equal keys the last written stays last, and is the one kept.
        members.sort_by(|a, b| out[key(a)].cmp(&out[key(b)]));
        self.scratch.clear();
        for (index, member) in members.iter().enumerate() {
            if members.get(index + 1).is_some_and(|next| out[key(next)] == out[key(member)]) {
                continue;
            }
            if !self.scratch.is_empty() {
                self.scratch.push(b',');
            }
            self.scratch.extend_from_slice(&out[member.key_start..member.value_end]);
        }
        self.members.truncate(object.first_member);
        out.truncate(object.content_start);
        out.extend_from_slice(&self.scratch);
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn same_as_serde_jcs(value: &Value) {
        let reference = serde_jcs::to_vec(value).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&to_vec(value).unwrap()),
            String::from_utf8_lossy(&reference),
            "input {value}"
        );
    }

    #[test]
    fn keys_sort_by_their_serialized_bytes_quotes_included() {
        // `"a "` sorts before `"a"` because a space (0x20) is below the closing quote.
        let value = json!({"a": 1, "a ": 2, "a!": 3, "a\"": 4, "a\n": 5, "": 6, "é": 7, "z": {"y": [], "x": {}}});
        let expected = r#"{"":6,"a ":2,"a!":3,"a":1,"a\"":4,"a\n":5,"z":{"x":{},"y":[]},"é":7}"#;
        assert_eq!(String::from_utf8(to_vec(&value).unwrap()).unwrap(), expected);
        same_as_serde_jcs(&value);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        struct Twice;
        impl Serialize for Twice {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("k", &1)?;
                map.serialize_entry("a", &[1, 2])?;
                map.serialize_entry("k", &{ json!({"b": 1, "a": 2}) })?;
                map.end()
            }
        }
        assert_eq!(to_vec(&Twice).unwrap(), serde_jcs::to_vec(&Twice).unwrap());
        assert_eq!(to_vec(&Twice).unwrap(), br#"{"a":[1,2],"k":{"a":2,"b":1}}"#);
    }

    #[test]
    fn integer_keys_and_enum_variants_match() {
        let map: std::collections::HashMap<i64, &str> = [(10, "x"), (-2, "y"), (3, "z")].into_iter().collect();
        assert_eq!(to_vec(&map).unwrap(), serde_jcs::to_vec(&map).unwrap());
        #[derive(Serialize)]
        enum Shape {
            Circle { radius: f64, centre: (i32, i32) },
            Dot,
            Tagged(u8),
        }
        for shape in [Shape::Circle { radius: 0.5, centre: (1, -1) }, Shape::Dot, Shape::Tagged(7)] {
            assert_eq!(to_vec(&shape).unwrap(), serde_jcs::to_vec(&shape).unwrap());
        }
    }

    #[test]
    fn non_finite_floats_are_null_as_in_serde_jcs() {
        // serde_json turns NaN and infinities into `null` before the formatter sees them.
        let floats = vec![f64::NAN, 1.5, f64::INFINITY, -0.0, 1e21, 5e-324];
        assert_eq!(to_vec(&floats).unwrap(), serde_jcs::to_vec(&floats).unwrap());
        assert_eq!(to_vec(&floats).unwrap(), b"[null,1.5,null,0,1e+21,5e-324]");
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            "[ -~\u{0}-\u{1f}\u{7f}é\u{10348}]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[ -~\u{0}-\u{1f}é]{0,5}", inner), 0..7)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// A map written in the given order, repeats included (`Value` objects arrive sorted).
    struct InOrder(Vec<(String, Value)>);

    impl Serialize for InOrder {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (key, value) in &self.0 {
                map.serialize_entry(key, value)?;
            }
            map.end()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn writes_what_serde_jcs_writes(value in any_value()) {
            prop_assert_eq!(to_vec(&value).unwrap(), serde_jcs::to_vec(&value).unwrap());
        }

        #[test]
        fn orders_members_as_serde_jcs_does(members in prop::collection::vec(("[ -~\u{0}-\u{1f}é]{0,3}", any_value()), 0..12)) {
            let map = vec![InOrder(members)];
            prop_assert_eq!(to_vec(&map).unwrap(), serde_jcs::to_vec(&map).unwrap());
        }
    }
}
