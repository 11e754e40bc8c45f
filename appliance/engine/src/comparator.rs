//! Runtime comparator semantics: how one evidence result is compared with a condition's
//! expected value, yielding True, False or Unknown (never an error).

use std::cmp::Ordering;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use serde_json::{Number, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use crate::evidence::{Comparator, EvidenceResult, EvidenceValue};
use crate::ret::TriState;

fn from_bool(value: bool) -> TriState {
    if value {
        TriState::True
    } else {
        TriState::False
    }
}

/// Compares a (normalised, error-free) evidence result against `expected`.
#[must_use]
pub fn evaluate_comparator(comparator: Comparator, expected: Option<&Value>, result: &EvidenceResult) -> TriState {
    match comparator {
        Comparator::Exists => return from_bool(result.value.is_some()),
        Comparator::NotExists => return from_bool(result.value.is_none()),
        _ => {}
    }
    let (Some(value), Some(expected)) = (result.value.as_ref(), expected) else {
        return TriState::Unknown;
    };
    match value {
        EvidenceValue::Json(actual) => compare_json(comparator, actual, expected),
        EvidenceValue::Bytes(bytes) => compare_bytes(comparator, bytes, expected),
    }
}

fn compare_bytes(comparator: Comparator, actual: &[u8], expected: &Value) -> TriState {
    let Some(items) = expected.as_array() else {
        return TriState::Unknown;
    };
    let mut wanted = Vec::with_capacity(items.len());
    for item in items {
        match item.as_u64().and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => wanted.push(byte),
            None => return TriState::Unknown,
        }
    }
    match comparator {
        Comparator::Equals => from_bool(actual == wanted.as_slice()),
        Comparator::NotEquals => from_bool(actual != wanted.as_slice()),
        _ => TriState::Unknown,
    }
}

fn compare_json(comparator: Comparator, actual: &Value, expected: &Value) -> TriState {
    match comparator {
        Comparator::Equals => from_bool(json_equals(actual, expected)),
        Comparator::NotEquals => from_bool(!json_equals(actual, expected)),
        Comparator::GreaterThan => ordered(actual, expected, Ordering::is_gt),
        Comparator::GreaterThanOrEqual => ordered(actual, expected, Ordering::is_ge),
        Comparator::LessThan => ordered(actual, expected, Ordering::is_lt),
        Comparator::LessThanOrEqual => ordered(actual, expected, Ordering::is_le),
        Comparator::LexGreaterThan => lexical(actual, expected, Ordering::is_gt),
        Comparator::LexGreaterThanOrEqual => lexical(actual, expected, Ordering::is_ge),
        Comparator::LexLessThan => lexical(actual, expected, Ordering::is_lt),
        Comparator::LexLessThanOrEqual => lexical(actual, expected, Ordering::is_le),
        Comparator::Contains => contains(actual, expected),
        Comparator::InSet => in_set(actual, expected),
        Comparator::DeepEquals => deep(actual, expected).map_or(TriState::Unknown, from_bool),
        Comparator::DeepNotEquals => deep(actual, expected).map_or(TriState::Unknown, |eq| from_bool(!eq)),
        Comparator::Exists | Comparator::NotExists => TriState::Unknown,
    }
}

/// Numbers compare as exact decimals (`10 == 10.0`); everything else structurally.
fn json_equals(actual: &Value, expected: &Value) -> bool {
    if let (Value::Number(a), Value::Number(b)) = (actual, expected) {
        if let (Some(a), Some(b)) = (decimal(a), decimal(b)) {
            return a == b;
        }
    }
    actual == expected
}

fn decimal(number: &Number) -> Option<BigDecimal> {
    BigDecimal::from_str(&number.to_string()).ok()
}

fn ordered(actual: &Value, expected: &Value, accept: fn(Ordering) -> bool) -> TriState {
    let ordering = match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => match (decimal(a), decimal(b)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        },
        (Value::String(a), Value::String(b)) => temporal_order(a, b),
        _ => None,
    };
    ordering.map_or(TriState::Unknown, |ord| from_bool(accept(ord)))
}

/// RFC 3339 instants first, then calendar dates; anything else is not comparable.
fn temporal_order(a: &str, b: &str) -> Option<Ordering> {
    if let (Ok(a), Ok(b)) = (OffsetDateTime::parse(a, &Rfc3339), OffsetDateTime::parse(b, &Rfc3339)) {
        return Some(a.cmp(&b));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    match (Date::parse(a, &date_format), Date::parse(b, &date_format)) {
        (Ok(a), Ok(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

fn lexical(actual: &Value, expected: &Value, accept: fn(Ordering) -> bool) -> TriState {
    match (actual, expected) {
        (Value::String(a), Value::String(b)) => from_bool(accept(a.as_str().cmp(b.as_str()))),
        _ => TriState::Unknown,
    }
}

fn contains(actual: &Value, expected: &Value) -> TriState {
    match (actual, expected) {
        (Value::String(haystack), Value::String(needle)) => from_bool(haystack.contains(needle.as_str())),
        (Value::Array(haystack), Value::Array(needles)) => {
            from_bool(needles.iter().all(|needle| haystack.contains(needle)))
        }
        _ => TriState::Unknown,
    }
}

fn in_set(actual: &Value, expected: &Value) -> TriState {
    match (actual, expected) {
        (Value::Array(_) | Value::Object(_), _) => TriState::Unknown,
        (scalar, Value::Array(set)) => from_bool(set.contains(scalar)),
        _ => TriState::Unknown,
    }
}

fn deep(actual: &Value, expected: &Value) -> Option<bool> {
    match (actual, expected) {
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => Some(actual == expected),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::TrustLane;
    use serde_json::json;

    fn json_result(value: Value) -> EvidenceResult {
        let mut result = EvidenceResult::empty(TrustLane::Verified);
        result.value = Some(EvidenceValue::Json(value));
        result
    }

    fn eval(comparator: Comparator, actual: Value, expected: Value) -> TriState {
        evaluate_comparator(comparator, Some(&expected), &json_result(actual))
    }

    #[test]
    fn numbers_compare_as_decimals() {
        assert_eq!(eval(Comparator::Equals, json!(10), json!(10.0)), TriState::True);
        assert_eq!(eval(Comparator::GreaterThanOrEqual, json!(92.5), json!(90)), TriState::True);
        assert_eq!(eval(Comparator::LessThan, json!(-1), json!(0.5)), TriState::True);
    }

    #[test]
    fn nested_numbers_compare_structurally() {
        assert_eq!(eval(Comparator::Equals, json!([1]), json!([1.0])), TriState::False);
        assert_eq!(eval(Comparator::InSet, json!(1), json!([1.0])), TriState::False);
    }

    #[test]
    fn mismatched_types_are_false_for_equals_but_unknown_for_ordering() {
        assert_eq!(eval(Comparator::Equals, json!("1"), json!(1)), TriState::False);
        assert_eq!(eval(Comparator::NotEquals, json!("1"), json!(1)), TriState::True);
        assert_eq!(eval(Comparator::GreaterThan, json!("1"), json!(1)), TriState::Unknown);
    }

    #[test]
    fn strings_order_by_time_not_text() {
        assert_eq!(
            eval(Comparator::GreaterThan, json!("2025-01-01T01:00:00+02:00"), json!("2024-12-31T23:30:00Z")),
            TriState::False
        );
        assert_eq!(eval(Comparator::LessThan, json!("2024-01-02"), json!("2024-01-10")), TriState::True);
        assert_eq!(eval(Comparator::LessThan, json!("abc"), json!("abd")), TriState::Unknown);
        assert_eq!(eval(Comparator::LexLessThan, json!("abc"), json!("abd")), TriState::True);
    }

    #[test]
    fn contains_and_sets() {
        assert_eq!(eval(Comparator::Contains, json!("production"), json!("duct")), TriState::True);
        assert_eq!(eval(Comparator::Contains, json!([1, 2, 3]), json!([3, 1, 1])), TriState::True);
        assert_eq!(eval(Comparator::Contains, json!([1, 2]), json!(1)), TriState::Unknown);
        assert_eq!(eval(Comparator::InSet, json!("b"), json!(["a", "b"])), TriState::True);
        assert_eq!(eval(Comparator::InSet, json!(["b"]), json!(["a", "b"])), TriState::Unknown);
        assert_eq!(eval(Comparator::DeepEquals, json!({"a": [1]}), json!({"a": [1]})), TriState::True);
        assert_eq!(eval(Comparator::DeepEquals, json!(1), json!(1)), TriState::Unknown);
    }

    #[test]
    fn presence_counts_json_null_as_present() {
        let result = json_result(Value::Null);
        assert_eq!(evaluate_comparator(Comparator::Exists, None, &result), TriState::True);
        let absent = EvidenceResult::empty(TrustLane::Verified);
        assert_eq!(evaluate_comparator(Comparator::NotExists, None, &absent), TriState::True);
        assert_eq!(evaluate_comparator(Comparator::Equals, Some(&json!(1)), &absent), TriState::Unknown);
        assert_eq!(evaluate_comparator(Comparator::Equals, None, &result), TriState::Unknown);
    }

    #[test]
    fn bytes_only_support_equality() {
        let mut result = EvidenceResult::empty(TrustLane::Verified);
        result.value = Some(EvidenceValue::Bytes(vec![1, 2]));
        assert_eq!(evaluate_comparator(Comparator::Equals, Some(&json!([1, 2])), &result), TriState::True);
        assert_eq!(evaluate_comparator(Comparator::Equals, Some(&json!([1, 256])), &result), TriState::Unknown);
        assert_eq!(evaluate_comparator(Comparator::GreaterThan, Some(&json!([1])), &result), TriState::Unknown);
    }
}
