//! Layering: the built-in defaults, then the TOML file, then the environment, then the persona
//! file; every problem is collected and reported at once.

use std::path::Path;

use super::env::{Kind, ENV};
use super::{Config, ConfigError, Purpose, DEFAULT_PERSONA, DEFAULT_TOML};

impl Config {
    /// Loads the configuration from the process environment.
    pub fn load(file: Option<&Path>, purpose: Purpose) -> Result<Self, ConfigError> {
        Self::load_with(file, purpose, |name| std::env::var(name).ok())
    }

    /// Loads the configuration, reading environment variables through `env`.
    pub fn load_with(
        file: Option<&Path>,
        purpose: Purpose,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut table: toml::Table = DEFAULT_TOML
            .parse()
            .expect("the built-in config/default.toml is valid TOML");

        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            match text.parse::<toml::Table>() {
                Ok(overlay) => merge(&mut table, overlay),
                Err(err) => problems.push(format!("{}: {}", path.display(), err.message())),
            }
        }

        for &(name, section, key, kind) in ENV {
            let Some(raw) = env(name) else { continue };
            let raw = raw.trim().to_owned();
            let value = match kind {
                Kind::Str => Some(toml::Value::String(raw.clone())),
                Kind::Int => raw.parse::<i64>().ok().map(toml::Value::Integer),
                Kind::Float => raw.parse::<f64>().ok().map(toml::Value::Float),
                Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Some(toml::Value::Boolean(true)),
                    "false" | "0" | "no" | "off" => Some(toml::Value::Boolean(false)),
                    _ => {
                        problems.push(format!("{name}={raw:?} is not true or false"));
                        continue;
                    }
                },
            };
            match value {
                Some(value) => {
                    if let Some(toml::Value::Table(section)) = table.get_mut(section) {
                        section.insert(key.to_owned(), value);
                    }
                }
                None => problems.push(format!("{name}={raw:?} is not a number")),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }

        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|err: toml::de::Error| ConfigError::Invalid(vec![err.message().to_owned()]))?;
        config.file = file.map(Path::to_owned);
        config.resolve_persona(&mut problems);
        config.resolve_model_keys(&env, &mut problems);
        config.validate(purpose, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn resolve_persona(&mut self, problems: &mut Vec<String>) {
        let file = self.persona.system_prompt_file.trim();
        self.persona.system_prompt = if file.is_empty() {
            DEFAULT_PERSONA.to_owned()
        } else {
            match std::fs::read_to_string(file) {
                Ok(text) if !text.trim().is_empty() => text,
                Ok(_) => {
                    problems.push(format!("persona file {file} is empty (ZUNDA_PERSONA_FILE)"));
                    String::new()
                }
                Err(err) => {
                    problems.push(format!(
                        "cannot read persona file {file}: {err} (ZUNDA_PERSONA_FILE)"
                    ));
                    String::new()
                }
            }
        };
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serializes to TOML")
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(overlay)) => merge(base, overlay),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
