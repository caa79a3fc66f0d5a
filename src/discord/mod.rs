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
/// `/zunda`'s optional attachments: an image for a vision model, a text file.
pub const IMAGE_OPTION_NAME: &str = "image";
pub const IMAGE_OPTION_DESCRIPTION: &str = "ずんだもんに見せたい画像（png・jpeg・webp・gif）";
pub const FILE_OPTION_NAME: &str = "file";
pub const FILE_OPTION_DESCRIPTION: &str =
    "ずんだもんに読ませたいテキストファイル（ログ、ソースコードなど）";
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

pub use crate::voice::{
    ANSWER_FILE_NOTE, ERROR_REPLY, MENTION_REPLY, TRUNCATED_NOTICE, WAIT_REPLY,
};
use deliver::TextFile;
use split::split_message;

/// The most messages one answer shows: the interaction's response and four follow-ups. Where the
/// bot is not a member of the channel (a group DM, a server that did not install it) only the
/// interaction's webhook can answer, and Discord allows it five follow-ups; a model that runs on
/// cannot flood a channel either.
pub const MAX_REPLY_MESSAGES: usize = 5;

/// The name of the file that carries an answer too long for [`MAX_REPLY_MESSAGES`].
pub const ANSWER_FILE_NAME: &str = "zundamon-answer.txt";

/// The most of one reply the live view shows while it streams, in UTF-16 units: five messages'
/// worth (the final delivery then lays the answer out with [`lay_out_answer`]).
pub const MAX_REPLY_UNITS: usize = MAX_REPLY_MESSAGES * MESSAGE_LIMIT - 100;

/// How an answer is delivered: its messages, and the file the last one carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub parts: Vec<String>,
    /// The whole answer as a text file, on the last part, when it needs more messages than
    /// [`MAX_REPLY_MESSAGES`].
    pub file: Option<TextFile>,
}

impl Reply {
    /// A reply of `text` alone (short texts: errors).
    pub fn text(text: &str) -> Self {
        Self {
            parts: split_message(text, MESSAGE_LIMIT),
            file: None,
        }
    }
}

/// The final answer's messages: the question quoted, then the answer, split into messages. When
/// that needs more than [`MAX_REPLY_MESSAGES`] messages, the first parts that fit in one message
/// fewer, then a short note carrying the whole answer as [`ANSWER_FILE_NAME`]. The same answer is
/// always laid out the same way, so a resumed delivery continues where the last one stopped.
pub fn lay_out_answer(question: &str, answer: &str) -> Reply {
    let mut parts = split_message(&quote_answer(question, answer), MESSAGE_LIMIT);
    if parts.len() <= MAX_REPLY_MESSAGES {
        return Reply { parts, file: None };
    }
    parts.truncate(MAX_REPLY_MESSAGES - 1);
    parts.push(ANSWER_FILE_NOTE.to_owned());
    Reply {
        parts,
        file: Some(TextFile {
            name: ANSWER_FILE_NAME.to_owned(),
            content: answer.to_owned(),
        }),
    }
}

/// `text` cut at a grapheme boundary (with a notice) if it is longer than [`MAX_REPLY_UNITS`]
/// (what the live view shows while it streams).
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
    fn an_answer_past_five_messages_comes_as_a_file() {
        let short = lay_out_answer("q", "答えなのだ。");
        assert_eq!(short.parts, vec!["> q\n答えなのだ。".to_owned()]);
        assert_eq!(short.file, None);

        let fits = "あ".repeat(4 * MESSAGE_LIMIT);
        let laid = lay_out_answer("q", &fits);
        assert!(laid.parts.len() <= MAX_REPLY_MESSAGES && laid.file.is_none());

        let long = "ずんだ餅の話なのだ。\n".repeat(1200);
        let laid = lay_out_answer("長い質問", &long);
        assert_eq!(laid.parts.len(), MAX_REPLY_MESSAGES);
        assert_eq!(laid.parts[4], ANSWER_FILE_NOTE);
        let whole = split_message(&quote_answer("長い質問", &long), MESSAGE_LIMIT);
        assert_eq!(
            laid.parts[..4],
            whole[..4],
            "the first parts as they would be"
        );
        let file = laid.file.unwrap();
        assert_eq!((file.name.as_str(), file.content), (ANSWER_FILE_NAME, long));
        assert!(laid
            .parts
            .iter()
            .all(|part| part.encode_utf16().count() <= MESSAGE_LIMIT));
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
