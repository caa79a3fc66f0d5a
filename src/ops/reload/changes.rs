//! What a reload changes: every setting that differs between two configurations (secrets shown
//! as `[redacted]`), and the effective configuration annotated section by section.

use super::{is_live, LIVE_SECTIONS, RESTART_SECTIONS};
use crate::config::Config;

/// One setting that differs between two configurations. Secret values show as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub setting: String,
    pub from: String,
    pub to: String,
}

impl Change {
    pub fn is_live(&self) -> bool {
        is_live(&self.setting)
    }
}

/// Every setting that differs from `old` to `new`, sections and keys in alphabetical order
/// (secrets and the persona text last).
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let flat = |config: &Config| -> std::collections::BTreeMap<String, String> {
        let value = toml::Value::try_from(config).expect("the configuration serializes");
        let mut out = std::collections::BTreeMap::new();
        if let toml::Value::Table(sections) = value {
            for (section, table) in sections {
                match table {
                    toml::Value::Table(table) => {
                        for (key, value) in table {
                            out.insert(format!("{section}.{key}"), value.to_string());
                        }
                    }
                    // `places` is an array of tables: compared whole.
                    other => {
                        out.insert(format!("{section}.all"), other.to_string());
                    }
                }
            }
        }
        out
    };
    let before = flat(old);
    let after = flat(new);
    let absent = String::from("(none)");
    let mut settings: Vec<&String> = before.keys().chain(after.keys()).collect();
    settings.sort();
    settings.dedup();
    let mut changed: Vec<Change> = settings
        .into_iter()
        .filter_map(|setting| {
            let from = before.get(setting).unwrap_or(&absent);
            let to = after.get(setting).unwrap_or(&absent);
            (from != to).then(|| Change {
                setting: setting.clone(),
                from: from.clone(),
                to: to.clone(),
            })
        })
        .collect();
    // Secrets serialize as `[redacted]` and the persona text is not serialized at all.
    let redacted = |setting: &str| Change {
        setting: setting.to_owned(),
        from: "[redacted]".into(),
        to: "[redacted]".into(),
    };
    if old.discord.bot_token != new.discord.bot_token {
        changed.push(redacted("discord.bot_token"));
    }
    if old.openai.api_key != new.openai.api_key {
        changed.push(redacted("openai.api_key"));
    }
    for (name, model) in &new.models {
        if old
            .models
            .get(name)
            .is_some_and(|old| old.api_key != model.api_key)
        {
            changed.push(redacted(&format!("models.{name}.api_key")));
        }
    }
    if old.persona.system_prompt != new.persona.system_prompt {
        changed.push(Change {
            setting: "persona.system_prompt (file contents)".into(),
            from: format!("{} chars", old.persona.system_prompt.chars().count()),
            to: format!("{} chars", new.persona.system_prompt.chars().count()),
        });
    }
    changed
}

/// The effective configuration as `check-config` prints it: each section header says whether a
/// reload applies it.
pub fn annotate(redacted_toml: &str) -> String {
    let mut out = String::from(
        "# Sections marked \"live\" are applied by SIGHUP (kill -HUP <pid>) without a restart;\n\
         # \"restart\" ones need the process restarted.\n",
    );
    let mut top_level = true;
    for line in redacted_toml.lines() {
        out.push_str(line);
        top_level &= !line.starts_with('[');
        let header = line.trim_start_matches('[').trim_end_matches(']');
        // A section's header (`[access]`, `[models.fast]`, `[[places]]`), or a whole section
        // written as one value (`places = []`).
        let section = if line.starts_with('[') && line.ends_with(']') {
            Some(header.split('.').next().unwrap_or(header))
        } else {
            line.split_once(" = ")
                .filter(|_| top_level)
                .map(|(key, _)| key.trim())
                .filter(|key| LIVE_SECTIONS.contains(key) || RESTART_SECTIONS.contains(key))
        };
        if let Some(section) = section {
            if LIVE_SECTIONS.contains(&section) {
                out.push_str(" # live");
            } else if RESTART_SECTIONS.contains(&section) {
                out.push_str(" # restart");
            }
        }
        out.push('\n');
    }
    out
}
