//! InfluxDB line protocol, written (docs.influxdata.com, "Line protocol"):
//!
//! ```text
//! measurement,tag=value,tag=value field=1.5,count=3i,text="a \"quote\"" 1732262400000
//! ```
//!
//! Escaping follows the spec: commas and spaces in the measurement; commas,
//! `=` and spaces in tag keys, tag values and field keys; `"` and `\` in
//! string field values. The spec has no escape for a line break, and
//! parsers disagree on a backslash in a name, so control characters become
//! spaces and a backslash in a name becomes `/`: the only change a value
//! ever sees (docs/influxdb.md). Timestamps are milliseconds (`precision=ms`).

use std::fmt::Write as _;

/// A field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Float(f64),
    Int(i64),
    Str(&'a str),
}

/// One point, borrowing its names and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<'a> {
    pub measurement: &'a str,
    /// Written in this order; an empty value leaves its tag out (the
    /// protocol has no empty tag).
    pub tags: Vec<(&'a str, &'a str)>,
    /// A non-finite float is left out; a point with no field left is not written.
    pub fields: Vec<(&'a str, Value<'a>)>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// Appends `point` and a newline to `out`; returns whether it wrote it
/// (not when no field has a value the protocol can carry).
pub fn write(out: &mut String, point: &Point<'_>) -> bool {
    let has_field = point.fields.iter().any(|(_, v)| writable(v));
    if !has_field {
        return false;
    }
    escape_name(out, point.measurement, &[',', ' ']);
    for (key, value) in &point.tags {
        if value.is_empty() {
            continue;
        }
        out.push(',');
        escape_name(out, key, &[',', '=', ' ']);
        out.push('=');
        escape_name(out, value, &[',', '=', ' ']);
    }
    let mut first = true;
    for (key, value) in point.fields.iter().filter(|(_, v)| writable(v)) {
        out.push(if first { ' ' } else { ',' });
        first = false;
        escape_name(out, key, &[',', '=', ' ']);
        out.push('=');
        match value {
            // `{:?}` keeps a decimal point or exponent, so 3.0 stays a float.
            Value::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            Value::Int(i) => {
                let _ = write!(out, "{i}i");
            }
            Value::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        c if c.is_control() => out.push(' '),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
        }
    }
    let _ = writeln!(out, " {}", point.time_ms);
    true
}

fn writable(value: &Value<'_>) -> bool {
    match value {
        Value::Float(f) => f.is_finite(),
        Value::Int(_) | Value::Str(_) => true,
    }
}

/// A measurement, tag or field name: `special` characters escaped,
/// control characters as spaces (escaped too), a backslash as `/`.
fn escape_name(out: &mut String, name: &str, special: &[char]) {
    for c in name.chars() {
        let c = match c {
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        };
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// What a name becomes after [`write`]: for comparing with what a parser reads back.
pub fn written_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use influxdb_line_protocol::{FieldValue, parse_lines};
    use proptest::prelude::*;

    use super::*;

    fn line(point: &Point<'_>) -> String {
        let mut out = String::new();
        assert!(write(&mut out, point));
        out
    }

    #[test]
    fn a_point_is_written_as_the_spec_shows() {
        let point = Point {
            measurement: "labhours_power",
            tags: vec![
                ("instrument", "nmr-600"),
                ("unit", "Chemistry/NMR Centre"),
                ("agent", ""),
            ],
            fields: vec![
                ("avg_w", Value::Float(1512.5)),
                ("energy_wh", Value::Float(25.0)),
                ("samples", Value::Int(60)),
                ("note", Value::Str("say \"hi\"\\")),
                ("bad", Value::Float(f64::NAN)),
            ],
            time_ms: 1_732_262_400_000,
        };
        assert_eq!(
            line(&point),
            "labhours_power,instrument=nmr-600,unit=Chemistry/NMR\\ Centre \
             avg_w=1512.5,energy_wh=25.0,samples=60i,note=\"say \\\"hi\\\"\\\\\" 1732262400000\n"
        );
    }

    #[test]
    fn a_point_without_a_writable_field_is_not_written() {
        let mut out = String::new();
        let point = Point {
            measurement: "m",
            tags: vec![],
            fields: vec![("x", Value::Float(f64::INFINITY))],
            time_ms: 0,
        };
        assert!(!write(&mut out, &point));
        assert!(out.is_empty());
    }

    fn text() -> impl Strategy<Value = String> {
        // Printable ASCII with every special character, some CJK, and
        // control characters, as unit names and fault messages may hold.
        proptest::string::string_regex("[ -~\\t\\n\\r实验室核磁共振]{1,24}").expect("regex")
    }

    proptest! {
        /// What InfluxData's own parser reads back is what was written
        /// (names after the documented replacement of `\` and control characters).
        #[test]
        fn influxdatas_parser_reads_back_every_point(
            measurement in text(),
            tag_key in text(),
            tag_value in text(),
            field_key in text(),
            float in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            int in any::<i64>(),
            string in text(),
            time_ms in any::<i64>(),
        ) {
            // A line starting with `#` is a comment; the sink's measurements
            // are fixed names that never do.
            prop_assume!(!written_name(&measurement).starts_with('#'));
            // Keys must differ for the parser to keep both fields.
            prop_assume!(written_name(&field_key) != "i" && written_name(&field_key) != "s");
            let point = Point {
                measurement: &measurement,
                tags: vec![(&tag_key, &tag_value)],
                fields: vec![
                    (&field_key, Value::Float(float)),
                    ("i", Value::Int(int)),
                    ("s", Value::Str(&string)),
                ],
                time_ms,
            };
            let text = line(&point);
            let parsed: Vec<_> = parse_lines(&text).collect();
            prop_assert_eq!(parsed.len(), 1, "{}", text);
            let parsed = parsed.into_iter().next().unwrap().map_err(|e| {
                TestCaseError::fail(format!("{e}: {text}"))
            })?;
            prop_assert_eq!(parsed.series.measurement.as_str(), written_name(&measurement));
            let tags = parsed.series.tag_set.expect("one tag");
            prop_assert_eq!(tags.len(), 1);
            prop_assert_eq!(tags[0].0.as_str(), written_name(&tag_key));
            prop_assert_eq!(tags[0].1.as_str(), written_name(&tag_value));
            let fields = &parsed.field_set;
            prop_assert_eq!(fields.len(), 3);
            prop_assert_eq!(fields[0].0.as_str(), written_name(&field_key));
            prop_assert_eq!(&fields[0].1, &FieldValue::F64(float));
            prop_assert_eq!(&fields[1].1, &FieldValue::I64(int));
            let expected: String = string.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            match &fields[2].1 {
                FieldValue::String(s) => prop_assert_eq!(s.as_str(), expected.as_str()),
                other => prop_assert!(false, "not a string: {:?}", other),
            }
            prop_assert_eq!(parsed.timestamp, Some(time_ms));
        }
    }
}
