//! Tables of custom objects: the definition's additional printer columns, each cell
//! read with its JSONPath (jsonpath-rust, kube's simple paths given a `$` root), or
//! Name and Age when it has none — as kube-apiserver's table convertor for custom
//! resources.

use jsonpath_rust::JsonPath;
use serde_json::{json, Value};

use super::human_duration;
use crate::crd::custom::Custom;

/// Why a column's JSONPath is not one (None: it is).
pub fn json_path_error(path: &str) -> Option<String> {
    let path = path.trim();
    if !path.starts_with('.') && !path.starts_with('[') {
        return Some("must be a simple json path starting with a dot (.spec.replicas)".into());
    }
    match jsonpath_rust::parser::parse_json_path(&format!("${path}")) {
        Ok(_) => None,
        Err(e) => Some(format!("must be a simple json path: {e}")),
    }
}

/// The column definitions of a custom resource.
pub fn column_definitions(c: &Custom) -> Value {
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    if c.columns.is_empty() {
        cols.push(json!({"name": "Age", "type": "date", "format": "",
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
            "priority": 0}));
    }
    for col in &c.columns {
        cols.push(
            json!({"name": col.name, "type": col.kind, "format": col.format,
            "description": col.description, "priority": col.priority}),
        );
    }
    Value::Array(cols)
}

fn age(ts: Option<&str>) -> Value {
    match ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        None => json!("<unknown>"),
    }
}

/// One object's cells.
pub fn row(c: &Custom, o: &Value) -> Vec<Value> {
    let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let mut cells = vec![name];
    if c.columns.is_empty() {
        cells.push(age(o
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)));
    }
    for col in &c.columns {
        let found = o
            .query(&format!("${}", col.json_path.trim()))
            .unwrap_or_default();
        let cell = match found.as_slice() {
            [] => Value::Null,
            [v] if col.kind == "date" => age(v.as_str()),
            [v] => match (col.kind.as_str(), v) {
                ("string", Value::String(_))
                | ("integer" | "number", Value::Number(_))
                | ("boolean", Value::Bool(_)) => (*v).clone(),
                (_, Value::String(s)) => json!(s),
                (_, other) => json!(other.to_string()),
            },
            many => json!(many
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")),
        };
        cells.push(cell);
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::custom::Column;

    fn custom(columns: Vec<Column>) -> Custom {
        Custom {
            definition: "crontabs.stable.example.com".into(),
            definition_uid: "u1".into(),
            singular: "crontab".into(),
            list_kind: "CronTabList".into(),
            schema: None,
            defaults: false,
            rules: false,
            columns,
            scale: None,
            storage: true,
            terminating: false,
        }
    }

    fn col(name: &str, kind: &str, path: &str) -> Column {
        Column {
            name: name.into(),
            kind: kind.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: path.into(),
        }
    }

    #[test]
    fn cells_come_from_the_columns_paths() {
        let c = custom(vec![
            col("Spec", "string", ".spec.cronSpec"),
            col("Replicas", "integer", ".spec.replicas"),
            col(
                "Ready",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status",
            ),
            col("Missing", "string", ".spec.nothing"),
        ]);
        let o = json!({"metadata": {"name": "a"}, "spec": {"cronSpec": "* * * * */5", "replicas": 3},
                       "status": {"conditions": [{"type": "Synced", "status": "False"},
                                                 {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            row(&c, &o),
            vec![
                json!("a"),
                json!("* * * * */5"),
                json!(3),
                json!("True"),
                Value::Null
            ]
        );
        let defs = column_definitions(&c);
        assert_eq!(defs.as_array().unwrap().len(), 5);
        let plain = custom(vec![]);
        assert_eq!(column_definitions(&plain)[1]["name"], "Age");
        assert_eq!(json_path_error(".spec.replicas"), None);
        assert!(json_path_error("spec.replicas").is_some());
        assert!(json_path_error(".spec[").is_some());
    }
}
