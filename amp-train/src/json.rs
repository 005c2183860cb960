//! Floats in JSON that read back as they were written, non-finite ones included.
//!
//! JSON numbers cannot be NaN or infinite, and `serde_json` writes those as
//! `null`, which then fails to read back as a float — a checkpoint with one
//! NaN loss could never be resumed. Fields that may hold any float use
//! `#[serde(with = "crate::json::float")]` (or `float_vec`): finite values are
//! plain numbers, the others the strings `"NaN"`, `"inf"` and `"-inf"`.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A float as JSON: a number, or `"NaN"` / `"inf"` / `"-inf"`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct JsonFloat(f64);

impl Serialize for JsonFloat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f64(v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

impl<'de> Deserialize<'de> for JsonFloat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JsonFloat;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, or \"NaN\", \"inf\" or \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonFloat, E> {
                Ok(JsonFloat(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonFloat, E> {
                Ok(JsonFloat(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonFloat, E> {
                Ok(JsonFloat(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonFloat, E> {
                match v {
                    "NaN" => Ok(JsonFloat(f64::NAN)),
                    "inf" => Ok(JsonFloat(f64::INFINITY)),
                    "-inf" => Ok(JsonFloat(f64::NEG_INFINITY)),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `#[serde(with = "crate::json::float")]` for an `f64` field.
pub(crate) mod float {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        JsonFloat(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(JsonFloat::deserialize(d)?.0)
    }
}

/// `#[serde(with = "crate::json::float_vec")]` for a `Vec<f64>` field.
pub(crate) mod float_vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for &x in v {
            seq.serialize_element(&JsonFloat(x))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<JsonFloat>::deserialize(d)?
            .into_iter()
            .map(|x| x.0)
            .collect())
    }
}

/// `#[serde(default, with = "crate::json::opt_float")]` for an `Option<f64>`
/// field: `null` is `None`, any float (non-finite ones as strings) is `Some`.
pub(crate) mod opt_float {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(JsonFloat).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<JsonFloat>::deserialize(d)?.map(|x| x.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "super::float")]
        loss: f64,
        #[serde(with = "super::float_vec")]
        losses: Vec<f64>,
        #[serde(default, with = "super::opt_float")]
        accuracy: Option<f64>,
    }

    #[test]
    fn non_finite_values_read_back_as_written() {
        let r = Record {
            loss: f64::NAN,
            losses: vec![
                1.5,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                -0.0,
                1e-300,
            ],
            accuracy: Some(f64::INFINITY),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"loss":"NaN","losses":[1.5,"inf","-inf","NaN",-0.0,1e-300],"accuracy":"inf"}"#
        );
        let back: Record = serde_json::from_str(&json).unwrap();
        assert!(back.loss.is_nan());
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.losses[..3]), bits(&r.losses[..3]));
        assert!(back.losses[3].is_nan());
        assert_eq!(bits(&back.losses[4..]), bits(&r.losses[4..]));
        assert_eq!(back.accuracy, Some(f64::INFINITY));
        let none: Record =
            serde_json::from_str(r#"{"loss":1,"losses":[],"accuracy":null}"#).unwrap();
        assert_eq!(none.accuracy, None);
        let absent: Record = serde_json::from_str(r#"{"loss":1,"losses":[]}"#).unwrap();
        assert_eq!(absent.accuracy, None);
        assert!(serde_json::from_str::<Record>(r#"{"loss":"nan","losses":[]}"#).is_err());
    }
}
