//! Structured output: the answer's schema from the invocation, made strict the way the
//! upstream runtime's OpenAI agent does it, and a light check of the answer against it.

use serde_json::{Map, Value};

/// The answer's JSON Schema from `output_format_json_schema_str`: the `schema` of a
/// `{"type": "json_schema", "schema": {...}}` wrapper (what the Python client sends), or the
/// whole value when it is a bare schema.
///
/// # Errors
///
/// When the string is not JSON, or not a JSON object.
pub(crate) fn answer_schema(format: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(format)
        .map_err(|e| format!("output_format_json_schema_str is not valid JSON: {e}"))?;
    if !v.is_object() {
        return Err("output_format_json_schema_str is not a JSON object".to_owned());
    }
    let wrapped = v.get("type").and_then(Value::as_str) == Some("json_schema");
    match v.get("schema") {
        Some(schema) if wrapped && schema.is_object() => Ok(schema.clone()),
        _ => Ok(v),
    }
}

/// The answer's schema of `invocation`, when it asks for structured output.
///
/// # Errors
///
/// As [`answer_schema`], as an agent's error.
pub(crate) fn of_invocation(
    invocation: &runtimeuse_proto::Invocation,
) -> Result<Option<Value>, crate::handler::AgentError> {
    (invocation.output_format_json_schema.as_deref())
        .map(answer_schema)
        .transpose()
        .map_err(crate::handler::AgentError::new)
}

/// The schema in the strict form that OpenAI's structured outputs require: every object
/// closed (`additionalProperties: false`) with every property required, recursively
/// (properties, items, `anyOf`/`oneOf`/`allOf`, `$defs`/`definitions`), and no `title`.
pub(crate) fn strict(schema: &Value) -> Value {
    let Some(o) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        let v = match k.as_str() {
            "title" => continue,
            "properties" | "$defs" | "definitions" => match v.as_object() {
                Some(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), strict(s)))
                        .collect(),
                ),
                None => v.clone(),
            },
            "items" => strict(v),
            "anyOf" | "oneOf" | "allOf" => match v.as_array() {
                Some(list) => Value::Array(list.iter().map(strict).collect()),
                None => v.clone(),
            },
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    let is_object =
        out.get("type").and_then(Value::as_str) == Some("object") || out.contains_key("properties");
    if is_object {
        out.insert("additionalProperties".into(), Value::Bool(false));
        let names: Vec<Value> = out
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().map(Value::String).collect())
            .unwrap_or_default();
        out.insert("required".into(), Value::Array(names));
    }
    Value::Object(out)
}

/// Checks `value` against the parts of `schema` that decide its shape: `type`, `required`,
/// `properties`, `items` and `enum`. Other keywords are not checked.
///
/// # Errors
///
/// The first mismatch, with its JSON pointer.
pub(crate) fn check(value: &Value, schema: &Value) -> Result<(), String> {
    check_at(value, schema, &mut String::new())
}

fn check_at(value: &Value, schema: &Value, path: &mut String) -> Result<(), String> {
    let at = |p: &str| {
        if p.is_empty() {
            "/".to_owned()
        } else {
            p.to_owned()
        }
    };
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
            return Err(format!(
                "{}: expected {}, found {}",
                at(path),
                types.join(" or "),
                type_name(value)
            ));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{}: not one of the allowed values", at(path)));
    }
    if let Some(o) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !o.contains_key(name) {
                return Err(format!("{}: missing required property {name:?}", at(path)));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                if let Some(v) = o.get(name) {
                    let len = path.len();
                    path.push('/');
                    path.push_str(name);
                    check_at(v, sub, path)?;
                    path.truncate(len);
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("/{i}"));
            check_at(v, items, path)?;
            path.truncate(len);
        }
    }
    Ok(())
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wrapper_and_a_bare_schema_give_the_same_schema() {
        let bare = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let wrapped = json!({"type": "json_schema", "schema": bare});
        assert_eq!(answer_schema(&wrapped.to_string()).unwrap(), bare);
        assert_eq!(answer_schema(&bare.to_string()).unwrap(), bare);
        assert!(answer_schema("not json").is_err());
        assert!(answer_schema("[1]").is_err());
    }

    #[test]
    fn strict_closes_every_object_and_requires_every_property() {
        let s = json!({
            "title": "Answer",
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}},
                "n": {"anyOf": [{"type": "object", "properties": {"y": {"type": "number"}}}, {"type": "null"}]}
            },
            "required": ["items"]
        });
        assert_eq!(
            strict(&s),
            json!({
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": false, "required": ["x"]}},
                    "n": {"anyOf": [{"type": "object", "properties": {"y": {"type": "number"}}, "additionalProperties": false, "required": ["y"]}, {"type": "null"}]}
                },
                "required": ["items", "n"],
                "additionalProperties": false
            })
        );
    }

    #[test]
    fn check_finds_the_first_mismatch() {
        let s = json!({"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["n"]});
        assert!(check(&json!({"n": 3, "tags": ["a"]}), &s).is_ok());
        assert_eq!(
            check(&json!({"tags": []}), &s).unwrap_err(),
            "/: missing required property \"n\""
        );
        assert_eq!(
            check(&json!({"n": 1, "tags": ["a", 2]}), &s).unwrap_err(),
            "/tags/1: expected string, found number"
        );
        assert_eq!(
            check(&json!("x"), &s).unwrap_err(),
            "/: expected object, found string"
        );
    }
}
