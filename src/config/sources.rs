//! Where a node's configuration comes from, and how it is shown back.
//!
//! The file is `--config`, else `RUNGS_CONFIG`, else [`DEFAULT_PATH`] when
//! it exists, else none (the built-in defaults). Over it, every field can be
//! set by an environment variable named after its key: `RUNGS_` then the
//! section and field in capitals, joined by two underscores
//! (`RUNGS_PUBLIC_URL`, `RUNGS_HLS__PART_TARGET_S`,
//! `RUNGS_INGEST__LIMITS__MAX_WIDTH`). A value is read as TOML when the field
//! takes that (`0.3`, `true`, `["192.0.2.1"]`, `{ max_width = 1920 }`), and
//! as plain text otherwise (`https://edge.example`, `0.0.0.0:8080`, `on`).
//! Only a variable whose first part names a top-level field is an
//! override: `RUNGS_SOAK_MINUTES` or `RUNGS_CONFIG` are someone else's.
//!
//! Each override is checked on its own before the whole is, so that an
//! error names the variable (or the file) that caused it. Nothing here
//! reads the process environment: the caller hands the variables over.
//!
//! A printed configuration ([`Config::to_toml`]) hides every secret (see
//! [`super::redacted`]) and otherwise loads back to the same configuration.

use super::{Config, ConfigError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The file read when neither `--config` nor `RUNGS_CONFIG` names one, if
/// it exists.
pub const DEFAULT_PATH: &str = "/etc/rungs/rungs.toml";

/// Every override's name starts with this.
pub const ENV_PREFIX: &str = "RUNGS_";

/// Between a section and its field in a variable's name: field names have
/// single underscores of their own.
const NESTING: &str = "__";

/// Keys whose values are secrets: an error about one says which key, never
/// what was found there.
const SECRET_KEYS: [&str; 4] = [
    "api.admin_token",
    "recording.s3_access_key_id",
    "recording.s3_secret_access_key",
    "registry.url",
];

/// The config file a command reads: `flag` (`--config`), else `from_env`
/// (`RUNGS_CONFIG`) unless empty, else `default` when it exists.
pub fn config_path(
    flag: Option<&Path>,
    from_env: Option<OsString>,
    default: &Path,
) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = from_env.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    default.exists().then(|| default.to_path_buf())
}

/// A configuration and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file read; `None`: the built-in defaults.
    pub file: Option<PathBuf>,
    /// The environment variables that set fields, in the order applied.
    pub overrides: Vec<Override>,
    /// `RUNGS_*` variables that look like a mistyped override, each with
    /// what was probably meant. Not errors: the name may be another tool's.
    pub warnings: Vec<String>,
}

/// One environment variable that set a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub var: String,
    /// The key it set, dotted (`hls.part_target_s`).
    pub key: String,
}

impl Loaded {
    /// The file read (or "built-in defaults") and the variables over it.
    pub fn describe(&self) -> String {
        let mut s = match &self.file {
            Some(p) => p.display().to_string(),
            None => "built-in defaults".into(),
        };
        if !self.overrides.is_empty() {
            let vars: Vec<&str> = self.overrides.iter().map(|o| o.var.as_str()).collect();
            s.push_str(" with ");
            s.push_str(&vars.join(", "));
        }
        s
    }
}

impl Config {
    /// Reads `path` (if given, else starts from the defaults), applies the
    /// `RUNGS_*` overrides among `vars`, and validates the result.
    pub fn load_with_env<I>(path: Option<&Path>, vars: I) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        let (mut config, mut table) = match path {
            None => (Config::default(), toml::Table::new()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                // Straight from the text, so that a wrong value is reported
                // at its line.
                let config = toml::from_str(&text).map_err(|e| file_error(p, &text, e))?;
                let table = text.parse().map_err(|e| file_error(p, &text, e))?;
                (config, table)
            }
        };
        let (overrides, warnings) = apply_env(&mut table, vars)?;
        if !overrides.is_empty() {
            config = toml::Value::Table(table).try_into().map_err(|e| {
                let vars: Vec<&str> = overrides.iter().map(|o| o.var.as_str()).collect();
                let reason = if overrides.iter().any(|o| is_secret(&o.key)) {
                    "the file and these variables do not combine".to_string()
                } else {
                    first_line(&e)
                };
                ConfigError::Env {
                    var: vars.join(", "),
                    reason,
                }
            })?;
        }
        config.validate().map_err(|e| locate(e, path, &overrides))?;
        Ok(Loaded {
            config,
            file: path.map(Path::to_path_buf),
            overrides,
            warnings,
        })
    }

    /// The configuration as TOML, secrets replaced by
    /// [`super::REDACTED`]; without secrets it loads back to the same
    /// configuration.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// Applies the overrides among `vars` to `table` (the file's keys).
fn apply_env<I>(
    table: &mut toml::Table,
    vars: I,
) -> Result<(Vec<Override>, Vec<String>), ConfigError>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let fields = field_names::<Config>();
    // Sorted: the same variables give the same result, whatever order the
    // environment lists them in.
    let mut vars: Vec<(String, OsString)> = vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    let mut overrides: Vec<Override> = Vec::new();
    let mut warnings = Vec::new();
    for (var, value) in vars {
        let key: Vec<String> = var[ENV_PREFIX.len()..]
            .split(NESTING)
            .map(str::to_ascii_lowercase)
            .collect();
        if !fields.contains(&key[0].as_str()) {
            warnings.extend(lookalike(&var, &key[0]));
            continue;
        }
        let fail = |reason: String| ConfigError::Env {
            var: var.clone(),
            reason,
        };
        if key.iter().any(String::is_empty) {
            return Err(fail(format!(
                "an empty name between underscores; a section and its field are joined by \
                 exactly {NESTING:?}"
            )));
        }
        let dotted = key.join(".");
        if let Some(o) = overrides.iter().find(|o| o.key == dotted) {
            return Err(fail(format!("sets {dotted}, as {} does", o.var)));
        }
        let raw = value
            .into_string()
            .map_err(|_| fail("the value is not UTF-8".into()))?;
        let value = typed(&key, &raw).map_err(|reason| {
            fail(if is_secret(&dotted) {
                format!("not a valid {dotted} (the value is a secret: not shown)")
            } else {
                reason
            })
        })?;
        insert(table, &key, value);
        overrides.push(Override { var, key: dotted });
    }
    Ok((overrides, warnings))
}

/// `raw` as the value of `key`: as TOML if the field takes that, else as
/// text; or why neither works, from a configuration holding this value
/// alone (so the reason is this variable's).
fn typed(key: &[String], raw: &str) -> Result<toml::Value, String> {
    let alone = |v: &toml::Value| {
        toml::Value::Table(nest(key, v.clone()))
            .try_into::<Config>()
            .map(drop)
            .map_err(|e| first_line(&e))
    };
    let mut as_toml_error = None;
    if let Some(v) = toml_value(raw) {
        match alone(&v) {
            Ok(()) => return Ok(v),
            Err(e) => as_toml_error = Some(e),
        }
    }
    let text = toml::Value::String(raw.to_string());
    match alone(&text) {
        Ok(()) => Ok(text),
        // A value that is TOML was most likely meant as TOML.
        Err(e) => Err(as_toml_error.unwrap_or(e)),
    }
}

/// `raw` parsed as one TOML value, if it is one.
fn toml_value(raw: &str) -> Option<toml::Value> {
    let mut t: toml::Table = format!("v = {raw}").parse().ok()?;
    // More than one key: the value smuggled in a line of its own.
    if t.len() != 1 {
        return None;
    }
    t.remove("v")
}

/// `{ key[0] = { key[1] = ... value } }`.
fn nest(key: &[String], value: toml::Value) -> toml::Table {
    let mut value = value;
    for k in key[1..].iter().rev() {
        value = toml::Value::Table(toml::Table::from_iter([(k.clone(), value)]));
    }
    toml::Table::from_iter([(key[0].clone(), value)])
}

/// Sets `key` in `table`; a table merges into a table already there, so
/// that `RUNGS_INGEST__LIMITS = "{ max_width = 1920 }"` keeps the file's
/// other limits.
fn insert(table: &mut toml::Table, key: &[String], value: toml::Value) {
    merge(table, nest(key, value));
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// A warning for `var` if it is a field's override written with one
/// underscore where two belong (`RUNGS_HLS_PART_TARGET_S`).
fn lookalike(var: &str, first: &str) -> Option<String> {
    let defaults = toml::Table::try_from(Config::default()).ok()?;
    defaults.iter().find_map(|(section, v)| {
        let fields = v.as_table()?;
        let field = first.strip_prefix(section.as_str())?.strip_prefix('_')?;
        fields.contains_key(field).then(|| {
            format!(
                "{var} is not a config override (it would be {ENV_PREFIX}{}{NESTING}{}); ignored",
                section.to_ascii_uppercase(),
                field.to_ascii_uppercase()
            )
        })
    })
}

fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

/// A validation error, said of the variable that set a key it names, else
/// of the file.
fn locate(e: ConfigError, file: Option<&Path>, overrides: &[Override]) -> ConfigError {
    let ConfigError::Invalid(reason) = e else {
        return e;
    };
    let named = overrides.iter().rev().find(|o| {
        // The key, or the map it is an entry of (`transcode.ladders` for
        // `transcode.ladders.mobile`).
        let parts: Vec<&str> = o.key.split('.').collect();
        (2..=parts.len())
            .rev()
            .any(|n| mentions(&reason, &parts[..n].join(".")))
            || mentions(&reason, &o.key)
    });
    match (named, file) {
        (Some(o), _) => ConfigError::Env {
            var: o.var.clone(),
            reason,
        },
        (None, Some(p)) => ConfigError::Value {
            path: p.to_path_buf(),
            reason,
        },
        (None, None) => ConfigError::Invalid(reason),
    }
}

/// Whether `text` names `key` as a whole (not `public_url` in
/// `public_url_x`).
fn mentions(text: &str, key: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    text.match_indices(key).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + key.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(|c| part(c) && c != '.')
    })
}

/// A file's parse or type error; on a line holding a secret, without the
/// line or the value.
fn file_error(path: &Path, text: &str, e: toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| {
        let start = span.start.min(text.len());
        let number = text[..start].matches('\n').count() + 1;
        let content = text.lines().nth(number - 1).unwrap_or("");
        (number, content)
    });
    if let Some((number, content)) = line {
        let leaf = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
        if let Some(key) = SECRET_KEYS
            .iter()
            .map(|k| leaf(k))
            .find(|k| content.contains(k))
        {
            return ConfigError::Value {
                path: path.to_path_buf(),
                reason: format!(
                    "line {number}: {key} is not valid (the value is a secret: not shown)"
                ),
            };
        }
    }
    ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// The message of a deserialization error, on one line.
fn first_line(e: &toml::de::Error) -> String {
    let mut s = e.message().trim().replace('\n', " ");
    if s.is_empty() {
        s = e.to_string().trim().replace('\n', " ");
    }
    s
}

/// The field names of `T` as serde reads them (renames applied), from the
/// list a derived `Deserialize` hands its deserializer: options that are
/// unset by default would be missing from a serialized default.
fn field_names<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the probe stops at the field list.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests;
