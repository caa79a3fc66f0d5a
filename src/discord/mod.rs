//! The Discord protocol, both ways: the front ends that bring questions in — the serenity gateway
//! client ([`gateway`]) and the signed HTTP interactions endpoint ([`interactions`]) — hand each
//! event to the event actor ([`crate::question::router`]); answers go back through [`deliver`]
//! (REST calls with retries), shown live by [`live`], split by [`split`]. Nothing here decides a
//! question's fate.

pub mod command;
pub mod deliver;
pub mod edits;
pub mod follow_ups;
pub mod gateway;
pub mod interactions;
pub mod live;
pub mod parents;
pub mod recent;
pub mod registration;
pub mod split;

/// Discord's limit on message content, in UTF-16 code units to be safe with emoji and CJK.
pub const MESSAGE_LIMIT: usize = 2000;

/// The slash command's name and description (the original's text).
pub const COMMAND_NAME: &str = "zunda";
pub const COMMAND_DESCRIPTION: &str = "ずんだもんに質問することができます。何でも聞いてください。";
pub const OPTION_NAME: &str = "question";
pub const OPTION_DESCRIPTION: &str = "ずんだもんに聞きたいこと";
/// Forgets the channel's conversation window (members with Manage Messages by default).
pub const RESET_COMMAND_NAME: &str = "zunda-reset";
pub const RESET_COMMAND_DESCRIPTION: &str =
    "このチャンネルでずんだもんが覚えている会話を忘れさせます。";
/// Shows, only to the asker, what the channel remembers.
pub const MEMORY_COMMAND_NAME: &str = "zunda-memory";
pub const MEMORY_COMMAND_DESCRIPTION: &str =
    "このチャンネルでずんだもんが覚えている会話の数を表示します（自分にだけ見えます）。";

/// Sets the model of the channel or thread (admins and members with Manage Server).
pub const MODEL_COMMAND_NAME: &str = "zunda-model";
pub const MODEL_COMMAND_DESCRIPTION: &str =
    "このチャンネル（スレッド）でずんだもんが使うモデルを選びます（管理者向け）。";
pub const MODEL_OPTION_NAME: &str = "model";
pub const MODEL_OPTION_DESCRIPTION: &str = "モデルの名前（default で設定を外します）";

pub use crate::voice::{ERROR_REPLY, MENTION_REPLY, TRUNCATED_NOTICE, WAIT_REPLY};

/// The most of one reply sent to Discord, in UTF-16 units: five messages' worth, so a model that
/// runs on cannot flood a channel.
pub const MAX_REPLY_UNITS: usize = 5 * MESSAGE_LIMIT - 100;

/// `text` cut at a grapheme boundary (with a notice) if it is longer than [`MAX_REPLY_UNITS`].
pub fn bound_reply(text: &str) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    if text.encode_utf16().count() <= MAX_REPLY_UNITS {
        return text.to_owned();
    }
    let budget = MAX_REPLY_UNITS - TRUNCATED_NOTICE.encode_utf16().count();
    let mut used = 0;
    let mut cut = 0;
    for (at, grapheme) in text.grapheme_indices(true) {
        used += grapheme.encode_utf16().count();
        if used > budget {
            break;
        }
        cut = at + grapheme.len();
    }
    format!("{}{TRUNCATED_NOTICE}", &text[..cut])
}

/// The final message: the question quoted line by line, a newline, then the answer.
pub fn quote_answer(question: &str, answer: &str) -> String {
    let mut message = String::with_capacity(question.len() + answer.len() + 16);
    for line in question.lines() {
        message.push_str("> ");
        message.push_str(line);
        message.push('\n');
    }
    message.push_str(answer);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_line_then_the_answer() {
        assert_eq!(
            quote_answer("一行目\n二行目", "答えなのだ。"),
            "> 一行目\n> 二行目\n答えなのだ。"
        );
        assert_eq!(quote_answer("q", "a"), "> q\na");
    }

    #[test]
    fn replies_are_bounded_without_breaking_graphemes() {
        let short = "短い答えなのだ。";
        assert_eq!(bound_reply(short), short);
        let family = "👨‍👩‍👧‍👦"; // one grapheme, 11 UTF-16 units
        let long = family.repeat(2000);
        let bounded = bound_reply(&long);
        assert!(bounded.encode_utf16().count() <= MAX_REPLY_UNITS);
        assert!(bounded.ends_with(TRUNCATED_NOTICE));
        let kept = bounded.strip_suffix(TRUNCATED_NOTICE).unwrap();
        assert_eq!(kept.len() % family.len(), 0, "cut inside a grapheme");
        assert!(kept.encode_utf16().count() > MAX_REPLY_UNITS - 200);
    }
}
