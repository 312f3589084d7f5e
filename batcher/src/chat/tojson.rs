//! `tojson` as `transformers` defines it for chat templates: Python's
//! `json.dumps(value, ensure_ascii=False, indent=indent)`. Tool schemas reach
//! the model exactly as it saw them in training: `", "` and `": "` between
//! items (newlines and `indent` spaces when an indent is given), non-ASCII
//! kept, no HTML escaping (minijinja's own filter escapes `<`, `>`, `&`, `'`).

use std::io;

use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind};
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// The `tojson` filter: `value | tojson` or `value | tojson(indent=2)`.
/// Python's other keyword arguments (`ensure_ascii`, `sort_keys`,
/// `separators`) are accepted and ignored.
pub(crate) fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        Some(n) if !n.is_none() && !n.is_undefined() => Some(usize::try_from(n)?),
        _ => None,
    };
    let mut out = Vec::new();
    let written = match indent {
        Some(width) => {
            let pad = vec![b' '; width];
            let formatter = PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        )),
    };
    let invalid = |e: String| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"));
    written.map_err(|e| invalid(e.to_string()))?;
    let text = String::from_utf8(out).map_err(|e| invalid(e.to_string()))?;
    Ok(Value::from_safe_string(text))
}

/// `json.dumps`'s default separators: `", "` and `": "`, on one line.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}
