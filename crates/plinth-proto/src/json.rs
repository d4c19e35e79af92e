//! The JSON form of the proto messages, used by the HTTP API and the CLI's `--json`.
//!
//! Field names are the proto's. Byte fields (keys, values) are plain strings when they are
//! UTF-8; binary bytes travel as base64 in a sibling field named with a `_b64` suffix
//! (`"value_b64": "AAEC"` instead of `"value": ...`). Enums are their proto names (`"EQUAL"`).
//! Inside serde the two forms meet as one: a byte field (de)serializes as a string or as the
//! marker object `{"$b64": "..."}`, and [`decode`] / [`encode`] rename `x_b64` to and from it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

const MARKER: &str = "$b64";
const SUFFIX: &str = "_b64";

/// Parses a request body: `x_b64` fields become byte fields, the rest maps by proto name.
pub fn decode<T: DeserializeOwned>(mut value: Value) -> Result<T, serde_json::Error> {
    lift_b64(&mut value);
    serde_json::from_value(value)
}

/// Renders a message: UTF-8 byte fields as strings, binary ones as `x_b64` base64 strings.
pub fn encode<T: Serialize>(message: &T) -> Value {
    let mut value = serde_json::to_value(message).expect("proto messages always serialize");
    lower_b64(&mut value);
    value
}

fn lift_b64(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let renamed: Vec<String> = map
                .keys()
                .filter(|k| k.ends_with(SUFFIX))
                .cloned()
                .collect();
            for key in renamed {
                let inner = map.remove(&key).expect("listed");
                let mut marker = Map::new();
                marker.insert(MARKER.to_string(), inner);
                map.insert(
                    key[..key.len() - SUFFIX.len()].to_string(),
                    Value::Object(marker),
                );
            }
            map.values_mut().for_each(lift_b64);
        }
        Value::Array(items) => items.iter_mut().for_each(lift_b64),
        _ => {}
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
    fn bad_base64_is_an_error_naming_the_problem() {
        let err = decode::<PutRequest>(serde_json::json!({"key_b64": "!!"})).unwrap_err();
        assert!(
            err.to_string().contains("base64") || err.to_string().contains("did not match"),
            "{err}"
        );
    }
}
