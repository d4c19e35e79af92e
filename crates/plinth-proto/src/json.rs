//! The JSON form of the proto messages, used by the HTTP API and the CLI's `--json`.
//!
//! Field names are the proto's. Byte fields (keys, values) are plain strings when they are
//! UTF-8; binary bytes travel as base64 in a sibling field named with a `_b64` suffix
//! (`"value_b64": "AAEC"` instead of `"value": ...`). Enums are their proto names (`"EQUAL"`).
//! Inside serde the two forms meet as one: a byte field (de)serializes as a string or as the
//! marker object `{"$b64": "..."}`, and [`decode`] / [`encode`] rename `x_b64` to and from it.
//!
//! Decoding is strict, because a request quietly misread does what its sender did not mean: a
//! field the message does not have (a typo like `"leas"`), a field given twice, or a byte field
//! given both as text and as base64 is refused, naming the field.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

const MARKER: &str = "$b64";
const SUFFIX: &str = "_b64";

/// Why a JSON request could not be read: the field at fault (a path such as
/// `compares[0].versoin`, or `body` for the document as a whole) and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    fn body(message: impl Into<String>) -> DecodeError {
        DecodeError {
            field: "body".to_owned(),
            message: message.into(),
        }
    }
}

/// Parses JSON text into a value, refusing an object that names a field twice (a parser that
/// keeps the last one would act on half of what was sent).
pub fn parse(text: &[u8]) -> Result<Value, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    StrictValue
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|e| DecodeError::body(format!("request body is not valid JSON: {e}")))
}

/// Parses a request body (JSON text) as the message `T`: see [`decode`].
pub fn decode_text<T: DeserializeOwned + Serialize>(text: &[u8]) -> Result<T, DecodeError> {
    let value = parse(text)?;
    if !value.is_object() {
        return Err(DecodeError::body("request body must be a JSON object"));
    }
    decode(value)
}

/// Reads a request message from its JSON value: `x_b64` fields become byte fields, the rest maps
/// by proto name. A field the message does not have, or a byte field given both as `x` and
/// `x_b64`, is refused naming it.
pub fn decode<T: DeserializeOwned + Serialize>(mut value: Value) -> Result<T, DecodeError> {
    lift_b64(&mut value, "")?;
    let message = T::deserialize(&value).map_err(|e| {
        DecodeError::body(format!(
            "request body does not match the request message: {e}"
        ))
    })?;
    // Every field given must be one the message has: the message encoded again holds every
    // field it has (and the variant given of a oneof), so a key missing there was not read.
    let read = serde_json::to_value(&message).expect("proto messages always serialize");
    check_known(&value, &read, "")?;
    Ok(message)
}

/// Renders a message: UTF-8 byte fields as strings, binary ones as `x_b64` base64 strings.
pub fn encode<T: Serialize>(message: &T) -> Value {
    let mut value = serde_json::to_value(message).expect("proto messages always serialize");
    lower_b64(&mut value);
    value
}

/// `path.field`, or `field` at the top.
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn lift_b64(value: &mut Value, path: &str) -> Result<(), DecodeError> {
    match value {
        Value::Object(map) => {
            let renamed: Vec<String> = map
                .keys()
                .filter(|k| k.ends_with(SUFFIX))
                .cloned()
                .collect();
            for key in renamed {
                let plain = &key[..key.len() - SUFFIX.len()];
                if map.contains_key(plain) {
                    let field = join(path, plain);
                    return Err(DecodeError {
                        message: format!(
                            "{field} is given both as {plain} and as {key}; give one: {plain} for text, {key} for base64"
                        ),
                        field,
                    });
                }
                let inner = map.remove(&key).expect("listed");
                let mut marker = Map::new();
                marker.insert(MARKER.to_string(), inner);
                map.insert(plain.to_string(), Value::Object(marker));
            }
            for (key, inner) in map.iter_mut() {
                lift_b64(inner, &join(path, key))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, inner) in items.iter_mut().enumerate() {
                lift_b64(inner, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Refuses a key of `given` that `read` (the message decoded from it, encoded again) lacks.
fn check_known(given: &Value, read: &Value, path: &str) -> Result<(), DecodeError> {
    match (given, read) {
        (Value::Object(given), Value::Object(read)) => {
            for (key, inner) in given {
                let Some(read_inner) = read.get(key) else {
                    let field = join(path, key);
                    let mut known: Vec<&str> = read.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(DecodeError {
                        message: format!(
                            "{field} is not a field of this request; the fields here are: {}",
                            known.join(", ")
                        ),
                        field,
                    });
                };
                check_known(inner, read_inner, &join(path, key))?;
            }
            Ok(())
        }
        (Value::Array(given), Value::Array(read)) => {
            for (i, (inner, read_inner)) in given.iter().zip(read).enumerate() {
                check_known(inner, read_inner, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A JSON value, parsed with every object's keys checked for repeats.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "field {key:?} is given twice in one object"
                )));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn lower_b64(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let binary: Vec<String> = map
                .iter()
                .filter(|(_, v)| {
                    v.as_object()
                        .is_some_and(|o| o.len() == 1 && o.contains_key(MARKER))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in binary {
                let mut marker = map.remove(&key).expect("listed");
                let inner = marker
                    .as_object_mut()
                    .and_then(|o| o.remove(MARKER))
                    .expect("marker");
                map.insert(format!("{key}{SUFFIX}"), inner);
            }
            map.values_mut().for_each(lower_b64);
        }
        Value::Array(items) => items.iter_mut().for_each(lower_b64),
        _ => {}
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BytesForm {
    Text(String),
    Binary {
        #[serde(rename = "$b64")]
        b64: String,
    },
}

fn to_form(bytes: &[u8]) -> BytesForm {
    match std::str::from_utf8(bytes) {
        Ok(text) => BytesForm::Text(text.to_string()),
        Err(_) => BytesForm::Binary {
            b64: BASE64.encode(bytes),
        },
    }
}

fn from_form<E: serde::de::Error>(form: BytesForm) -> Result<Vec<u8>, E> {
    match form {
        BytesForm::Text(text) => Ok(text.into_bytes()),
        BytesForm::Binary { b64 } => BASE64
            .decode(b64.as_bytes())
            .map_err(|e| E::custom(format!("a _b64 field is not valid base64: {e}"))),
    }
}

/// A byte field: a UTF-8 string, or base64 behind the `$b64` marker.
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        to_form(bytes).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        from_form(BytesForm::deserialize(d)?)
    }
}

/// A repeated byte field: each element as [`bytes`] does it.
pub mod bytes_list {
    use super::*;

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        list.iter()
            .map(|b| to_form(b))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<BytesForm>::deserialize(d)?
            .into_iter()
            .map(from_form)
            .collect()
    }
}

/// A string field that holds JSON text, as the JSON value itself; an empty string is `null`.
pub mod json_text {
    use super::*;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        to_value(text).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(from_value(&Value::deserialize(d)?))
    }
}

/// A map whose values hold JSON text, as a JSON object of the values themselves.
pub mod json_text_map {
    use super::*;
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k, to_value(v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        Ok(BTreeMap::<String, Value>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    serde_json::to_string(&v).expect("a JSON value serializes"),
                )
            })
            .collect())
    }
}

/// JSON text as a value: text that is not JSON (which a server never sends) stays a string.
fn to_value(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn from_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        value => serde_json::to_string(value).expect("a JSON value serializes"),
    }
}

macro_rules! proto_enum {
    ($module:ident, $ty:ty) => {
        /// An enum field by its proto name (case-insensitive on input).
        pub mod $module {
            use super::*;

            pub fn serialize<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                match <$ty>::try_from(*value) {
                    Ok(v) => s.serialize_str(v.as_str_name()),
                    Err(_) => s.serialize_i32(*value),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                let name = String::deserialize(d)?;
                <$ty>::from_str_name(&name.to_ascii_uppercase())
                    .map(|v| v as i32)
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "unknown {} {name:?}",
                            stringify!($module)
                        ))
                    })
            }
        }
    };
}

proto_enum!(compare_op, crate::v1::CompareOp);
proto_enum!(event_type, crate::v1::EventType);
proto_enum!(error_code, crate::v1::ErrorCode);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Compare, CompareOp, PutRequest, compare};

    #[test]
    fn text_bytes_are_plain_strings_and_binary_uses_b64_fields() {
        let put = PutRequest {
            key: b"a".to_vec(),
            value: vec![0, 159, 146],
            lease: 0,
        };
        let json = encode(&put);
        assert_eq!(json["key"], "a");
        assert_eq!(json["value_b64"], BASE64.encode([0u8, 159, 146]));
        let back: PutRequest = decode(json).unwrap();
        assert_eq!(back, put);
    }

    #[test]
    fn missing_fields_default_and_enums_use_names() {
        let c: Compare =
            decode(serde_json::json!({"key": "k", "op": "greater", "version": 3})).unwrap();
        assert_eq!(c.op, CompareOp::Greater as i32);
        assert_eq!(c.target, Some(compare::Target::Version(3)));
        let c: Compare = decode(serde_json::json!({"key": "k", "value_b64": "AA=="})).unwrap();
        assert_eq!(c.target, Some(compare::Target::Value(vec![0])));
    }

    #[test]
    fn txn_ops_are_flat() {
        let op: crate::v1::RequestOp =
            decode(serde_json::json!({"put": {"key": "a", "value": "b"}})).unwrap();
        assert!(matches!(
            op.request,
            Some(crate::v1::request_op::Request::Put(_))
        ));
        assert_eq!(
            encode(&op),
            serde_json::json!({"put": {"key": "a", "value": "b", "lease": 0}})
        );
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it_and_the_fields_there_are() {
        let err = decode::<PutRequest>(serde_json::json!({"key": "k", "leas": 7})).unwrap_err();
        assert_eq!(err.field, "leas");
        assert_eq!(
            err.message,
            "leas is not a field of this request; the fields here are: key, lease, value"
        );
        // Inside a nested message, and beside a flattened oneof.
        let err = decode::<crate::v1::TxnRequest>(serde_json::json!({
            "compares": [{"key": "k", "op": "EQUAL", "version": 1, "versoin": 2}],
        }))
        .unwrap_err();
        assert_eq!(err.field, "compares[0].versoin");
        let err = decode::<crate::v1::TxnRequest>(serde_json::json!({
            "success": [{"put": {"key": "k", "value": "v", "lease_id": 3}}],
        }))
        .unwrap_err();
        assert_eq!(err.field, "success[0].put.lease_id");
        // Binary bytes and maps of the caller's own keys are not unknown fields.
        let ok: crate::v1::QueueSendRequest = decode(serde_json::json!({
            "queue": "q", "body_b64": "AP8=", "attributes": {"anything": "goes"},
        }))
        .unwrap();
        assert_eq!(ok.body, vec![0, 255]);
    }

    #[test]
    fn a_byte_field_given_as_text_and_as_base64_is_refused() {
        let err = decode::<PutRequest>(
            serde_json::json!({"key": "k", "value": "a", "value_b64": "AA=="}),
        )
        .unwrap_err();
        assert_eq!(err.field, "value");
        assert!(
            err.message.contains("both as value and as value_b64"),
            "{err}"
        );
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let err =
            decode_text::<PutRequest>(br#"{"key": "a", "value": "x", "key": "b"}"#).unwrap_err();
        assert_eq!(err.field, "body");
        assert!(err.message.contains(r#""key" is given twice"#), "{err}");
        // Nested objects too.
        let err = decode_text::<crate::v1::TxnRequest>(
            br#"{"success": [{"put": {"key": "a", "key": "b"}}]}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("given twice"), "{err}");
        let ok: PutRequest = decode_text(br#"{"key": "a", "value": "x"}"#).unwrap();
        assert_eq!(ok.key, b"a");
    }

    #[test]
    fn bad_base64_is_an_error_naming_the_problem() {
        let err = decode::<PutRequest>(serde_json::json!({"key_b64": "!!"})).unwrap_err();
        assert!(
            err.to_string().contains("base64") || err.to_string().contains("did not match"),
            "{err}"
        );
    }
}
