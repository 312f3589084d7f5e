//! `${VAR}` interpolation over the parsed YAML tree.
//!
//! Interpolation runs on values, not on the raw text, so a variable holding
//! YAML syntax (`:`, `#`, quotes) cannot change the document's structure, and
//! a missing variable is reported with the key path that referenced it.

use crate::ConfigError;
use serde_yaml_ng::Value;

/// Expands `${VAR}` and `${VAR:-default}` in every string of `value`.
/// `$$` is a literal `$`.
pub(crate) fn interpolate(
    value: &mut Value,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    walk(value, &mut String::new(), lookup_env)
}

fn walk(
    value: &mut Value,
    path: &mut String,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = expand(s, path, lookup_env)?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, lookup_env)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match key {
                    Value::String(k) => path.push_str(k),
                    other => path.push_str(&format!("{other:?}")),
                }
                walk(item, path, lookup_env)?;
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup_env)?,
        _ => {}
    }
    Ok(())
}

fn expand(
    input: &str,
    path: &str,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(ConfigError::validation(
                    path,
                    format!("unterminated ${{...}} reference in {input:?}"),
                ));
            };
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::validation(
                    path,
                    format!("invalid environment variable name {name:?}"),
                ));
            }
            match (lookup_env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(ConfigError::MissingEnv {
                        path: path.to_string(),
                        var: name.to_string(),
                    })
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1".into()),
            "HOST" => Some("h:1".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        assert_eq!(expand("${KEY}", "p", &env).unwrap(), "sk-1");
        assert_eq!(
            expand("http://${HOST}/v1", "p", &env).unwrap(),
            "http://h:1/v1"
        );
        assert_eq!(expand("${NOPE:-x}", "p", &env).unwrap(), "x");
        assert_eq!(expand("$$5 and $x", "p", &env).unwrap(), "$5 and $x");
    }

    #[test]
    fn missing_variable_names_path_and_variable() {
        let err = expand("${NOPE}", "upstreams.a.api_key", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "upstreams.a.api_key: environment variable NOPE is not set (referenced as ${NOPE})"
        );
    }

    #[test]
    fn walks_nested_paths() {
        let mut v: Value = serde_yaml_ng::from_str("a:\n  b:\n    - x\n    - ${NOPE}\n").unwrap();
        let err = interpolate(&mut v, &env).unwrap_err();
        assert!(err.to_string().starts_with("a.b[1]: "), "{err}");
    }

    #[test]
    fn variable_values_cannot_inject_structure() {
        let mut v: Value = serde_yaml_ng::from_str("a: ${HOST}\n").unwrap();
        interpolate(&mut v, &env).unwrap();
        assert_eq!(v["a"], Value::String("h:1".into()));
    }
}
