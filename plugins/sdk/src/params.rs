//! Job parameters: the JSON object the user submitted, with typed getters whose
//! errors name the parameter (they become the client's 400 or the job's failure).

use serde_json::{Map, Value};

/// A job's parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Parse the JSON text the host passes; anything but an object is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Params(map)),
            Ok(Value::Null) => Ok(Params::default()),
            Ok(other) => Err(format!(
                "parameters must be a JSON object, not {}",
                kind(&other)
            )),
            Err(e) => Err(format!("parameters are not valid JSON: {e}")),
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A required string parameter.
    pub fn str(&self, key: &str) -> Result<&str, String> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(format!(
                "parameter '{key}' must be a string, not {}",
                kind(other)
            )),
            None => Err(format!("missing parameter '{key}'")),
        }
    }

    /// An optional unsigned integer parameter, `default` when absent.
    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("parameter '{key}' must be a non-negative integer, not {v}")
            }),
        }
    }

    /// An optional boolean parameter, `false` when absent.
    pub fn flag(&self, key: &str) -> Result<bool, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!(
                "parameter '{key}' must be a boolean, not {}",
                kind(other)
            )),
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
