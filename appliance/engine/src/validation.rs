//! Strict comparator validation (`strict_core_v1`): at define time every condition's
//! comparator must make sense for the JSON type its evidence can have, and its expected
//! value must fit that type. The type comes from a JSON Schema (a provider check's
//! `result_schema`, or a registered data shape), optionally refined by an
//! `x-decision-gate` object (`allowed_comparators`, `dynamic_type`).

use serde_json::Value;

use crate::evidence::Comparator;
use crate::spec::ConditionSpec;

/// Comparator families that need explicit enabling in the server config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StrictValidationConfig {
    /// Allow `lex_*` comparators.
    pub enable_lexicographic: bool,
    /// Allow `deep_*` comparators.
    pub enable_deep_equals: bool,
}

/// How a comparator relates to a type class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Allowance {
    Allowed,
    OptIn,
    Forbidden,
}

/// The type classes of the allowance matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeClass {
    Boolean,
    Ordered,
    String,
    EnumLike,
    ArrayScalar,
    Complex,
    Null,
    Dynamic,
}

fn allowance(class: TypeClass, comparator: Comparator) -> Allowance {
    use Comparator as C;
    use TypeClass as T;
    let presence = matches!(comparator, C::Exists | C::NotExists);
    let equality = matches!(comparator, C::Equals | C::NotEquals);
    let ordering = matches!(comparator, C::GreaterThan | C::GreaterThanOrEqual | C::LessThan | C::LessThanOrEqual);
    let lex =
        matches!(comparator, C::LexGreaterThan | C::LexGreaterThanOrEqual | C::LexLessThan | C::LexLessThanOrEqual);
    let deep = matches!(comparator, C::DeepEquals | C::DeepNotEquals);
    let allowed = match class {
        T::Dynamic => true,
        T::Boolean | T::EnumLike => presence || equality || comparator == C::InSet,
        T::Ordered => presence || equality || ordering || comparator == C::InSet,
        T::String => {
            if lex {
                return Allowance::OptIn;
            }
            presence || equality || matches!(comparator, C::Contains | C::InSet)
        }
        T::ArrayScalar => {
            if deep {
                return Allowance::OptIn;
            }
            presence || comparator == C::Contains
        }
        T::Complex => {
            if deep {
                return Allowance::OptIn;
            }
            presence
        }
        T::Null => presence || equality,
    };
    if allowed {
        Allowance::Allowed
    } else {
        Allowance::Forbidden
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// Classifies a schema into the type classes it admits.
fn classify(schema: &Value) -> Result<Vec<TypeClass>, String> {
    let Some(object) = schema.as_object() else {
        return Err("schema must be an object".to_string());
    };
    if object.get("x-decision-gate").and_then(|x| x.get("dynamic_type")).and_then(Value::as_bool) == Some(true) {
        return Ok(vec![TypeClass::Dynamic]);
    }
    if let Some(values) = object.get("enum").and_then(Value::as_array) {
        if values.is_empty() || !values.iter().all(is_scalar) {
            return Err("enum schemas must list scalar values".to_string());
        }
        if values.iter().all(Value::is_null) {
            return Ok(vec![TypeClass::Null]);
        }
        let kind = |v: &Value| std::mem::discriminant(v);
        if values.iter().any(|v| kind(v) != kind(&values[0])) {
            return Err("enum schemas must not mix value types".to_string());
        }
        return Ok(vec![TypeClass::EnumLike]);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(variants) = object.get(key).and_then(Value::as_array) {
            let mut classes: Vec<Vec<TypeClass>> = variants.iter().map(classify).collect::<Result<_, _>>()?;
            if classes.iter().any(|c| c.as_slice() != [TypeClass::Null]) {
                classes.retain(|c| c.as_slice() != [TypeClass::Null]);
            }
            return Ok(classes.into_iter().flatten().collect());
        }
    }
    let types: Vec<&str> = match object.get("type") {
        Some(Value::String(single)) => vec![single.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => return Err("schema missing type declaration".to_string()),
    };
    let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    let types = if non_null.is_empty() { types } else { non_null };
    types
        .into_iter()
        .map(|t| match t {
            "boolean" => Ok(TypeClass::Boolean),
            "integer" | "number" => Ok(TypeClass::Ordered),
            "string" => Ok(match object.get("format").and_then(Value::as_str) {
                Some("date-time" | "date") => TypeClass::Ordered,
                Some("uuid") => TypeClass::EnumLike,
                _ => TypeClass::String,
            }),
            "array" => {
                let items = object.get("items").map(classify).transpose()?.unwrap_or_default();
                let scalar = !items.is_empty()
                    && items.iter().all(|c| !matches!(c, TypeClass::Complex | TypeClass::ArrayScalar));
                Ok(if scalar { TypeClass::ArrayScalar } else { TypeClass::Complex })
            }
            "object" => Ok(TypeClass::Complex),
            "null" => Ok(TypeClass::Null),
            other => Err(format!("unsupported schema type: {other}")),
        })
        .collect()
}

fn comparator_enabled(comparator: Comparator, config: StrictValidationConfig) -> bool {
    use Comparator as C;
    match comparator {
        C::LexGreaterThan | C::LexGreaterThanOrEqual | C::LexLessThan | C::LexLessThanOrEqual => {
            config.enable_lexicographic
        }
        C::DeepEquals | C::DeepNotEquals => config.enable_deep_equals,
        _ => true,
    }
}

fn parse_allowed(schema: &Value) -> Result<Option<Vec<Comparator>>, String> {
    let Some(list) = schema.get("x-decision-gate").and_then(|x| x.get("allowed_comparators")) else {
        return Ok(None);
    };
    let parsed: Vec<Comparator> =
        serde_json::from_value(list.clone()).map_err(|err| format!("invalid allowed_comparators: {err}"))?;
    if parsed.is_empty() {
        return Err("allowed_comparators must not be empty".to_string());
    }
    Ok(Some(parsed))
}

fn schema_accepts(schema: &Value, value: &Value) -> Result<(), String> {
    let validator = jsonschema::draft202012::new(schema).map_err(|err| format!("invalid schema: {err}"))?;
    let errors: Vec<String> = validator.iter_errors(value).map(|err| err.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks one condition against the schema of its evidence.
///
/// # Errors
/// The contract's message, e.g. `condition c comparator lex_less_than is disabled by config`.
pub fn validate_condition(
    condition: &ConditionSpec,
    schema: &Value,
    config: StrictValidationConfig,
) -> Result<(), String> {
    let id = &condition.condition_id;
    let comparator = condition.comparator;
    let name = comparator.as_str();
    let classes = classify(schema).map_err(|err| format!("condition {id} schema invalid: {err}"))?;
    let allowance_of =
        |c: Comparator| classes.iter().map(|class| allowance(*class, c)).max().unwrap_or(Allowance::Forbidden);
    let allowed_list = parse_allowed(schema).map_err(|err| format!("condition {id} schema invalid: {err}"))?;
    if let Some(list) = &allowed_list {
        for listed in list {
            if !comparator_enabled(*listed, config) {
                return Err(format!("condition {id} comparator {} is disabled by config", listed.as_str()));
            }
            if allowance_of(*listed) == Allowance::Forbidden {
                return Err(format!("condition {id} comparator {} not allowed for schema type", listed.as_str()));
            }
        }
    }
    if !comparator_enabled(comparator, config) {
        return Err(format!("condition {id} comparator {name} is disabled by config"));
    }
    match allowance_of(comparator) {
        Allowance::Forbidden => return Err(format!("condition {id} comparator {name} not allowed for schema type")),
        Allowance::OptIn if !allowed_list.as_ref().is_some_and(|l| l.contains(&comparator)) => {
            return Err(format!("condition {id} comparator {name} requires explicit opt-in"));
        }
        _ => {}
    }
    if let Some(list) = &allowed_list {
        if !list.contains(&comparator) {
            return Err(format!("condition {id} comparator {name} not in allowed_comparators"));
        }
    }
    validate_expected(condition, schema)
}

fn validate_expected(condition: &ConditionSpec, schema: &Value) -> Result<(), String> {
    let id = &condition.condition_id;
    let name = condition.comparator.as_str();
    match (condition.comparator, &condition.expected) {
        (c, Some(_)) if c.is_presence() => {
            Err(format!("condition {id} comparator {name} does not accept expected values"))
        }
        (c, None) if c.is_presence() => Ok(()),
        (_, None) => Err(format!("condition {id} comparator {name} requires an expected value")),
        (Comparator::InSet, Some(Value::Array(items))) => {
            for item in items {
                schema_accepts(schema, item).map_err(|err| format!("condition {id} expected value invalid: {err}"))?;
            }
            Ok(())
        }
        (Comparator::InSet, Some(_)) => Err(format!("condition {id} comparator {name} requires expected array")),
        (c, Some(Value::Null)) if !matches!(c, Comparator::Equals | Comparator::NotEquals) => {
            Err(format!("condition {id} comparator {name} expected value invalid: null is not comparable"))
        }
        (_, Some(expected)) => {
            schema_accepts(schema, expected).map_err(|err| format!("condition {id} expected value invalid: {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::EvidenceQuery;
    use serde_json::json;

    fn condition(comparator: Comparator, expected: Option<Value>) -> ConditionSpec {
        ConditionSpec {
            condition_id: "c".into(),
            query: EvidenceQuery { provider_id: "p".into(), check_id: "k".into(), params: None },
            comparator,
            expected,
            policy_tags: vec![],
            trust: None,
        }
    }

    const OFF: StrictValidationConfig =
        StrictValidationConfig { enable_lexicographic: false, enable_deep_equals: false };
    const ON: StrictValidationConfig = StrictValidationConfig { enable_lexicographic: true, enable_deep_equals: true };

    #[test]
    fn booleans_cannot_be_ordered() {
        let err =
            validate_condition(&condition(Comparator::GreaterThan, Some(json!(true))), &json!({"type":"boolean"}), OFF)
                .unwrap_err();
        assert_eq!(err, "condition c comparator greater_than not allowed for schema type");
    }

    #[test]
    fn lexicographic_needs_config_and_opt_in() {
        let schema = json!({"type": "string"});
        let c = condition(Comparator::LexLessThan, Some(json!("b")));
        assert!(validate_condition(&c, &schema, OFF).unwrap_err().ends_with("is disabled by config"));
        assert!(validate_condition(&c, &schema, ON).unwrap_err().ends_with("requires explicit opt-in"));
        let opted = json!({"type": "string", "x-decision-gate": {"allowed_comparators": ["lex_less_than", "equals"]}});
        validate_condition(&c, &opted, ON).unwrap();
    }

    #[test]
    fn expected_values_must_fit_the_schema() {
        let schema = json!({"type": "integer"});
        assert!(validate_condition(&condition(Comparator::Equals, Some(json!("x"))), &schema, OFF)
            .unwrap_err()
            .contains("expected value invalid"));
        assert!(validate_condition(&condition(Comparator::InSet, Some(json!(1))), &schema, OFF)
            .unwrap_err()
            .ends_with("requires expected array"));
        assert!(validate_condition(&condition(Comparator::Exists, Some(json!(1))), &schema, OFF)
            .unwrap_err()
            .ends_with("does not accept expected values"));
        validate_condition(&condition(Comparator::InSet, Some(json!([1, 2]))), &schema, OFF).unwrap();
    }

    #[test]
    fn env_result_schema_allows_contains_and_dynamic_allows_all() {
        let env = json!({"oneOf": [{"type": "string"}, {"type": "null"}]});
        validate_condition(&condition(Comparator::Contains, Some(json!("prod"))), &env, OFF).unwrap();
        let dynamic = json!({"x-decision-gate": {"dynamic_type": true}});
        validate_condition(&condition(Comparator::GreaterThan, Some(json!(90))), &dynamic, OFF).unwrap();
    }
}
