//! Structural OpenAPI v3 schemas of CustomResourceDefinitions: pruning of unknown fields,
//! defaulting, and validation with the causes and messages of the real API server.

use serde_json::{Map, Value};

/// A cause of a 422 Invalid: `{reason, message, field}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cause {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

/// Shared, because every resource type handed out by the registry carries it.
#[derive(Clone, Debug)]
pub struct Schema(std::sync::Arc<Value>);

impl Schema {
    pub fn new(schema: &Value) -> Self {
        Self(std::sync::Arc::new(schema.clone()))
    }

    /// The keys of the list at `path` if the schema makes it a map (`x-kubernetes-list-type:
    /// map` with `x-kubernetes-list-map-keys`), or none for a set (`x-kubernetes-list-type:
    /// set`, whose items are their own keys). Item segments of the path (`k:{...}`, `v:...`)
    /// step into the list's items.
    pub fn list_map_keys(&self, path: &[String]) -> Option<Vec<String>> {
        let node = self.node_at(path)?;
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = node.get("x-kubernetes-list-map-keys")?.as_array()?;
                Some(keys.iter().filter_map(Value::as_str).map(str::to_string).collect())
            }
            Some("set") => Some(Vec::new()),
            _ => None,
        }
    }

    /// Whether the object at `path` is one value (`x-kubernetes-map-type: atomic`): owned and
    /// replaced whole by server-side apply.
    pub fn map_is_atomic(&self, path: &[String]) -> bool {
        self.node_at(path)
            .is_some_and(|node| node.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"))
    }

    /// The schema of the value at `path`; item segments (`k:{...}`, `v:...`) step into a list's
    /// items.
    fn node_at(&self, path: &[String]) -> Option<&Value> {
        let mut node = &*self.0;
        for segment in path {
            node = match segment.starts_with("k:") || segment.starts_with("v:") {
                true => node.get("items")?,
                false => property(node, segment)?,
            };
        }
        Some(node)
    }

    /// Drops fields the schema does not declare, returning their paths (for `fieldValidation`).
    /// `metadata`, `apiVersion` and `kind` at the root are the server's, never pruned here.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        if let Value::Object(map) = object {
            for (key, value) in map.iter_mut() {
                if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(child) = property(&self.0, key) {
                    prune(child, value, key, &mut unknown);
                }
            }
            let root = &self.0;
            map.retain(|key, _| {
                let keep = matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                    || property(root, key).is_some()
                    || preserves_unknown(root);
                if !keep {
                    unknown.push(key.clone());
                }
                keep
            });
        }
        unknown
    }

    /// Fills `default` values of absent fields, top-down, like the API server does on every read
    /// and write.
    pub fn default(&self, object: &mut Value) {
        apply_defaults(&self.0, object);
    }

    /// Every violation, sorted by field.
    pub fn validate(&self, object: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let (Value::Object(map), Some(properties)) = (object, self.0.get("properties").and_then(Value::as_object)) {
            for (key, child) in properties {
                if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match map.get(key) {
                    Some(value) => validate(child, value, key, &mut causes),
                    None if required(&self.0).contains(&key.as_str()) => causes.push(Cause {
                        field: key.clone(),
                        reason: "FieldValueRequired",
                        message: "Required value".into(),
                    }),
                    None => {}
                }
            }
        }
        causes.sort();
        causes
    }
}

impl Schema {
    /// The CEL rules of `x-kubernetes-validations`, evaluated as the API server does: `self` is
    /// the value at the rule's node, `oldSelf` the stored one; a transition rule (one that reads
    /// `oldSelf`) runs only on an update where the old value exists. A false rule is an Invalid
    /// cause at the node (or at its `fieldPath`), with the rule's `message` or
    /// `failed rule: <rule>`, and the node's type as the value, like
    /// `spec.mountPath: Invalid value: "object": field is immutable`.
    ///
    /// Not modelled: rules under array items and additionalProperties, `messageExpression`,
    /// `reason`, `optionalOldSelf`, cost limits.
    pub fn validate_rules(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        rules(&self.0, object, old, "", &mut causes);
        causes.sort();
        causes
    }
}

fn rules(schema: &Value, value: &Value, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let Some(expression) = rule.get("rule").and_then(Value::as_str) else { continue };
        let transition = expression.contains("oldSelf");
        if transition && old.is_none() {
            continue;
        }
        let mut variables = vec![("self", value)];
        if transition {
            variables.push(("oldSelf", old.unwrap_or(&Value::Null)));
        }
        // A value CEL cannot represent leaves the rule unevaluated, as before it was bound.
        let Ok(context) = super::cel::context(&variables) else { continue };
        let outcome = super::cel::evaluate(expression, &context);
        let field = {
            let mut field = path.to_string();
            if let Some(extra) = rule.get("fieldPath").and_then(Value::as_str) {
                field.push_str(extra);
            }
            let field = field.trim_start_matches('.').to_string();
            if field.is_empty() { "<nil>".to_string() } else { field }
        };
        let node_type = schema.get("type").and_then(Value::as_str).unwrap_or("object");
        match outcome {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let message = rule
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("failed rule: {expression}"));
                causes.push(Cause {
                    field,
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {node_type:?}: {message}"),
                });
            }
            Ok(other) => causes.push(Cause {
                field,
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {node_type:?}: rule {expression:?} did not evaluate to a boolean: {other:?}"
                ),
            }),
            Err(e) => causes.push(Cause {
                field,
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {node_type:?}: rule {expression:?} cannot be evaluated: {e}"),
            }),
        }
    }
    if let (Value::Object(map), Some(properties)) = (value, schema.get("properties").and_then(Value::as_object)) {
        for (key, child) in properties {
            if let Some(child_value) = map.get(key) {
                let child_old = old.and_then(|o| o.get(key));
                rules(child, child_value, child_old, &format!("{path}.{key}"), causes);
            }
        }
    }
}

fn property<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema
        .get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        || matches!(schema.get("additionalProperties"), Some(Value::Bool(true)))
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            if schema.get("properties").is_none() && schema.get("additionalProperties").is_none() {
                if !preserves_unknown(schema) && schema.get("type").and_then(Value::as_str) == Some("object") {
                    unknown.extend(map.keys().map(|k| join(path, k)));
                    map.clear();
                }
                return;
            }
            let keep_unknown = preserves_unknown(schema);
            let mut dropped = Vec::new();
            for (key, child_value) in map.iter_mut() {
                match property(schema, key) {
                    Some(child) => prune(child, child_value, &join(path, key), unknown),
                    None if keep_unknown => {}
                    None => dropped.push(key.clone()),
                }
            }
            for key in dropped {
                map.remove(&key);
                unknown.push(join(path, &key));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in properties {
                    if !map.contains_key(key)
                        && let Some(default) = child.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if let (Some(child), Some(child_value)) = (property(schema, &key), map.get_mut(&key)) {
                    apply_defaults(child, child_value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// The JSON type name the API server's messages use.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value, schema: &Value) -> bool {
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return matches!(type_name(value), "integer" | "string");
    }
    match (expected, value) {
        (_, Value::Null) => schema.get("nullable").and_then(Value::as_bool) == Some(true),
        ("number", Value::Number(_)) => true,
        (expected, value) => expected == type_name(value),
    }
}

/// `in body` messages name the field from `spec`/`status` down; the real server names status fields
/// from below `status` (its status strategy validates the status object alone).
fn body_name(path: &str) -> &str {
    path.strip_prefix("status.").unwrap_or(path)
}

fn quoted(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn validate(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value, schema)
    {
        let actual = type_name(value);
        causes.push(Cause {
            field: path.to_string(),
            reason: "FieldValueTypeInvalid",
            message: format!(
                "Invalid value: {actual:?}: {} in body must be of type {expected}: {actual:?}",
                body_name(path)
            ),
        });
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(quoted).collect();
        causes.push(Cause {
            field: path.to_string(),
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {}: supported values: {}", quoted(value), supported.join(", ")),
        });
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
            && number < minimum
        {
            causes.push(Cause {
                field: path.to_string(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {value}: {} in body should be greater than or equal to {}",
                    body_name(path),
                    schema["minimum"]
                ),
            });
        }
        if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
            && number > maximum
        {
            causes.push(Cause {
                field: path.to_string(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {value}: {} in body should be less than or equal to {}",
                    body_name(path),
                    schema["maximum"]
                ),
            });
        }
    }
    match value {
        Value::Object(map) => validate_object(schema, map, path, causes),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    for key in required(schema) {
        if !map.contains_key(key) {
            causes.push(Cause {
                field: join(path, key),
                reason: "FieldValueRequired",
                message: "Required value".into(),
            });
        }
    }
    for (key, child_value) in map {
        if let Some(child) = property(schema, key) {
            validate(child, child_value, &join(path, key), causes);
        }
    }
}
