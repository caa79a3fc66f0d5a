//! The bot's slash commands as Discord registers them, and where: in one guild, globally, or
//! globally for both installs (a guild's and a user's: `ZUNDA_INSTALL=guild+user`).
//!
//! Each registration is one bulk overwrite, so the set of commands is exactly these, whatever was
//! there before. With the user install, the guild's own commands are cleared too: a command
//! registered both in the guild and globally would show twice there.

use serenity::all::{
    Command, CommandOptionType, CreateCommand, CreateCommandOption, GuildId, InstallationContext,
    InteractionContext, Permissions,
};
use serenity::http::Http;
use tracing::info;

use super::{
    COMMAND_DESCRIPTION, COMMAND_NAME, FILE_OPTION_DESCRIPTION, FILE_OPTION_NAME,
    IMAGE_OPTION_DESCRIPTION, IMAGE_OPTION_NAME, MEMORY_COMMAND_DESCRIPTION, MEMORY_COMMAND_NAME,
    MODEL_COMMAND_DESCRIPTION, MODEL_COMMAND_NAME, MODEL_OPTION_DESCRIPTION, MODEL_OPTION_NAME,
    OPTION_DESCRIPTION, OPTION_NAME, RESET_COMMAND_DESCRIPTION, RESET_COMMAND_NAME,
};
use crate::config::{CommandScope, Install};

/// Where the commands go.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub scope: CommandScope,
    pub install: Install,
    /// The configured guild (0: none).
    pub guild_id: u64,
    pub max_question_chars: usize,
}

impl Registration {
    /// The commands, as sent. With the user install, `/zunda` and `/zunda-memory` can be
    /// installed by a guild or a user and used in guilds, the bot's DMs and other private
    /// channels; the admin commands stay with guild installs, in guilds. `contexts` replaces
    /// the deprecated `dm_permission`, which is sent only without it.
    pub fn commands(&self) -> Vec<CreateCommand> {
        let question = CreateCommand::new(COMMAND_NAME)
            .description(COMMAND_DESCRIPTION)
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::String,
                    OPTION_NAME,
                    OPTION_DESCRIPTION,
                )
                .required(true)
                .max_length(self.max_question_chars.clamp(1, 6000) as u16),
            )
            .add_option(CreateCommandOption::new(
                CommandOptionType::Attachment,
                IMAGE_OPTION_NAME,
                IMAGE_OPTION_DESCRIPTION,
            ))
            .add_option(CreateCommandOption::new(
                CommandOptionType::Attachment,
                FILE_OPTION_NAME,
                FILE_OPTION_DESCRIPTION,
            ));
        let reset = CreateCommand::new(RESET_COMMAND_NAME)
            .description(RESET_COMMAND_DESCRIPTION)
            .default_member_permissions(Permissions::MANAGE_MESSAGES);
        let memory =
            CreateCommand::new(MEMORY_COMMAND_NAME).description(MEMORY_COMMAND_DESCRIPTION);
        // Shown to members with Manage Server; admins listed in [access] are let through too
        // (the permission is checked again when it is used).
        let model = CreateCommand::new(MODEL_COMMAND_NAME)
            .description(MODEL_COMMAND_DESCRIPTION)
            .default_member_permissions(Permissions::MANAGE_GUILD)
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::String,
                    MODEL_OPTION_NAME,
                    MODEL_OPTION_DESCRIPTION,
                )
                .required(true)
                .set_autocomplete(true)
                .max_length(100),
            );
        match self.install {
            Install::Guild => vec![
                question,
                reset.dm_permission(false),
                memory.dm_permission(false),
                model.dm_permission(false),
            ],
            Install::GuildAndUser => {
                let anywhere = |command: CreateCommand| {
                    command
                        .integration_types(vec![
                            InstallationContext::Guild,
                            InstallationContext::User,
                        ])
                        .contexts(vec![
                            InteractionContext::Guild,
                            InteractionContext::BotDm,
                            InteractionContext::PrivateChannel,
                        ])
                };
                let in_guilds = |command: CreateCommand| {
                    command
                        .integration_types(vec![InstallationContext::Guild])
                        .contexts(vec![InteractionContext::Guild])
                };
                vec![
                    anywhere(question),
                    in_guilds(reset),
                    anywhere(memory),
                    in_guilds(model),
                ]
            }
        }
    }

    /// Registers the commands (one bulk overwrite), and with the user install clears the
    /// configured guild's own commands.
    pub async fn register(&self, http: &Http) -> Result<(), serenity::Error> {
        let commands = self.commands();
        let names = commands_named();
        match (self.install, self.scope) {
            (Install::GuildAndUser, _) => {
                Command::set_global_commands(http, commands).await?;
                info!(
                    install = "guild+user",
                    "registered {names} globally: /{COMMAND_NAME} and /{MEMORY_COMMAND_NAME} for \
                     guild and user installs in guilds, DMs and private channels; \
                     /{RESET_COMMAND_NAME} and /{MODEL_COMMAND_NAME} in guilds only"
                );
                if self.guild_id != 0 {
                    GuildId::new(self.guild_id)
                        .set_commands(http, Vec::new())
                        .await?;
                    info!(
                        guild_id = self.guild_id,
                        "cleared the guild's own commands (the global ones show there)"
                    );
                }
            }
            (Install::Guild, CommandScope::Guild) => {
                GuildId::new(self.guild_id)
                    .set_commands(http, commands)
                    .await?;
                info!(guild_id = self.guild_id, "registered {names} in the guild");
            }
            (Install::Guild, CommandScope::Global) => {
                Command::set_global_commands(http, commands).await?;
                info!("registered {names} globally");
            }
        }
        Ok(())
    }
}

fn commands_named() -> String {
    format!(
        "/{COMMAND_NAME}, /{RESET_COMMAND_NAME}, /{MEMORY_COMMAND_NAME} and /{MODEL_COMMAND_NAME}"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn sent(install: Install) -> Vec<Value> {
        let registration = Registration {
            scope: CommandScope::Guild,
            install,
            guild_id: 1,
            max_question_chars: 1000,
        };
        registration
            .commands()
            .iter()
            .map(|command| serde_json::to_value(command).unwrap())
            .collect()
    }

    #[test]
    fn the_user_install_reaches_dms_with_the_question_and_memory_only() {
        let commands = sent(Install::GuildAndUser);
        for command in &commands {
            let anywhere = matches!(command["name"].as_str(), Some("zunda" | "zunda-memory"));
            let (types, contexts) = if anywhere {
                (json!([0, 1]), json!([0, 1, 2]))
            } else {
                (json!([0]), json!([0]))
            };
            assert_eq!(command["integration_types"], types, "{command}");
            assert_eq!(command["contexts"], contexts, "{command}");
            assert!(command.get("dm_permission").is_none(), "{command}");
        }
        assert_eq!(commands[0]["options"][0]["max_length"], 1000);
    }

    #[test]
    fn the_guild_install_is_as_before() {
        for command in sent(Install::Guild) {
            assert!(command.get("contexts").is_none(), "{command}");
            assert!(command.get("integration_types").is_none(), "{command}");
            let admin_or_memory = command["name"] != "zunda";
            assert_eq!(
                command.get("dm_permission") == Some(&json!(false)),
                admin_or_memory,
                "{command}"
            );
        }
    }
}
