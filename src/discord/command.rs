//! A slash command as serenity reads it, whichever front end received it (the gateway's
//! INTERACTION_CREATE or the HTTP interactions endpoint), turned into the event actor's message.

use std::time::SystemTime;

use serenity::all::{CommandDataOptionValue, CommandInteraction};
use tokio::time::Instant;
use zundamon_actors::{Attachment, AttachmentKind};

use super::{
    COMMAND_NAME, FILE_OPTION_NAME, IMAGE_OPTION_NAME, MEMORY_COMMAND_NAME, MODEL_COMMAND_NAME,
    MODEL_OPTION_NAME, OPTION_NAME, RESET_COMMAND_NAME,
};
use crate::config::Secret;
use crate::question::router::{CommandEvent, ControlEvent, ControlKind};

/// One use of the bot's commands.
#[derive(Debug)]
pub enum CommandUse {
    /// `/zunda question:…`
    Question(CommandEvent),
    /// `/zunda-reset`, `/zunda-memory` or `/zunda-model`.
    Control(ControlEvent),
}

/// The use of one of the bot's commands that `command` carries, received at `received`; the
/// command's name when it is not one of them.
pub fn command_use(command: CommandInteraction, received: Instant) -> Result<CommandUse, String> {
    let option = |name: &str| {
        command
            .data
            .options
            .iter()
            .find(|option| option.name == name)
            .and_then(|option| option.value.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let control = match command.data.name.as_str() {
        COMMAND_NAME => None,
        RESET_COMMAND_NAME => Some(ControlKind::Reset),
        MEMORY_COMMAND_NAME => Some(ControlKind::Memory),
        MODEL_COMMAND_NAME => Some(ControlKind::Model(option(MODEL_OPTION_NAME))),
        _ => return Err(command.data.name),
    };
    // The member's roles in a guild (`None` outside one, where roles do not apply).
    let roles = command.member.as_ref().map(|member| {
        member
            .roles
            .iter()
            .map(|role| role.get())
            .collect::<Vec<_>>()
    });
    if let Some(kind) = control {
        return Ok(CommandUse::Control(ControlEvent {
            kind,
            interaction_id: command.id.get(),
            application_id: command.application_id.get(),
            token: Secret::new(command.token),
            channel_id: command.channel_id.get(),
            guild_id: command.guild_id.map(|guild| guild.get()),
            user_id: command.user.id.get(),
            roles,
            // The member's permissions in the channel (absent in DMs).
            permissions: command
                .member
                .as_ref()
                .and_then(|member| member.permissions)
                .map(|permissions| permissions.bits()),
            received,
        }));
    }
    let question = option(OPTION_NAME);
    let (attachments, missing_attachment) = attachments(&command);
    // The member's nickname in a guild, else the user's display name.
    let user_name = command
        .member
        .as_ref()
        .map(|member| member.display_name().to_owned())
        .unwrap_or_else(|| command.user.display_name().to_owned());
    Ok(CommandUse::Question(CommandEvent {
        interaction_id: command.id.get(),
        application_id: command.application_id.get(),
        token: Secret::new(command.token),
        channel_id: command.channel_id.get(),
        guild_id: command.guild_id.map(|guild| guild.get()),
        user_id: command.user.id.get(),
        roles,
        user_name,
        question,
        attachments,
        missing_attachment,
        places: Vec::new(),
        looked_up: false,
        received,
        received_at: SystemTime::now(),
    }))
}

/// The files attached with the `image` and `file` options, as `resolved` describes them; true if
/// an option named an attachment `resolved` does not have.
fn attachments(command: &CommandInteraction) -> (Vec<Attachment>, bool) {
    let mut found = Vec::new();
    let mut missing = false;
    for option in &command.data.options {
        let kind = match option.name.as_str() {
            IMAGE_OPTION_NAME => AttachmentKind::Image,
            FILE_OPTION_NAME => AttachmentKind::Text,
            _ => continue,
        };
        let CommandDataOptionValue::Attachment(id) = &option.value else {
            missing = true;
            continue;
        };
        match command.data.resolved.attachments.get(id) {
            Some(attachment) => found.push(Attachment {
                kind,
                filename: attachment.filename.clone(),
                url: attachment.url.clone(),
                content_type: attachment.content_type.clone().unwrap_or_default(),
                size: u64::from(attachment.size),
            }),
            None => missing = true,
        }
    }
    (found, missing)
}

/// The model names offered for what was typed so far: those starting with it first, then those
/// containing it (at most 25, as Discord allows).
pub fn autocomplete_choices(names: &[String], typed: &str) -> Vec<String> {
    let typed = typed.trim().to_lowercase();
    let (mut first, mut then): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for name in names {
        let lower = name.to_lowercase();
        if lower.starts_with(&typed) {
            first.push(name.clone());
        } else if lower.contains(&typed) {
            then.push(name.clone());
        }
    }
    first.extend(then);
    first.truncate(25);
    first
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What Discord sends for a command, with every field serenity requires.
    fn payload(name: &str, options: serde_json::Value) -> serde_json::Value {
        json!({
            "id": "11", "application_id": "22", "type": 2, "token": "tok", "version": 1,
            "data": {"id": "5", "name": name, "type": 1, "options": options},
            "guild_id": "7", "channel_id": "33",
            "member": {"user": {"id": "44", "username": "zun", "global_name": "Zun",
                    "discriminator": "0", "avatar": null},
                "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false,
                "mute": false, "flags": 0, "nick": "ずんだ", "permissions": "8192"},
            "locale": "ja", "entitlements": [], "attachment_size_limit": 26_214_400u64,
        })
    }

    fn read(payload: serde_json::Value) -> Result<CommandUse, String> {
        let command: CommandInteraction = serde_json::from_value(payload).expect("complete");
        command_use(command, Instant::now())
    }

    #[test]
    fn reads_a_question_in_a_guild() {
        let options = json!([{"name": "question", "type": 3, "value": "なに？"}]);
        let Ok(CommandUse::Question(event)) = read(payload("zunda", options)) else {
            panic!("a question");
        };
        assert_eq!(
            (
                event.interaction_id,
                event.application_id,
                event.channel_id,
                event.guild_id,
                event.user_id
            ),
            (11, 22, 33, Some(7), 44)
        );
        assert_eq!(event.user_name, "ずんだ");
        assert_eq!(event.question, "なに？");
    }

    #[test]
    fn reads_a_question_in_a_dm() {
        let mut dm = payload("zunda", json!([]));
        let object = dm.as_object_mut().unwrap();
        object.remove("member");
        object.remove("guild_id");
        object.insert(
            "user".into(),
            json!({"id": "45", "username": "zun", "global_name": "Zun", "discriminator": "0",
                "avatar": null}),
        );
        let Ok(CommandUse::Question(event)) = read(dm) else {
            panic!("a question");
        };
        assert_eq!((event.user_id, event.guild_id), (45, None));
        assert_eq!(event.user_name, "Zun");
        assert_eq!(event.question, "");
    }

    #[test]
    fn reads_the_channel_memory_commands_with_permissions() {
        let Ok(CommandUse::Control(event)) = read(payload("zunda-reset", json!([]))) else {
            panic!("a control command");
        };
        assert!(matches!(event.kind, ControlKind::Reset));
        assert_eq!((event.user_id, event.permissions), (44, Some(8192)));
        let Ok(CommandUse::Control(event)) = read(payload("zunda-memory", json!([]))) else {
            panic!("a control command");
        };
        assert!(matches!(event.kind, ControlKind::Memory));
    }

    #[test]
    fn other_commands_are_named() {
        assert_eq!(
            read(payload("other", json!([]))).unwrap_err(),
            "other".to_owned()
        );
    }
}
