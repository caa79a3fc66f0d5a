//! The Discord front end: the serenity gateway client ([`gateway`]) hands every event to the
//! event actor ([`router`]), which acknowledges interactions at once and routes questions to the
//! channel actors; answers go back through [`deliver`], split by [`split`].

pub mod deliver;
pub mod gateway;
pub mod router;
pub mod split;

/// Discord's limit on message content, in UTF-16 code units to be safe with emoji and CJK.
pub const MESSAGE_LIMIT: usize = 2000;

/// The slash command's name and description (the original's text).
pub const COMMAND_NAME: &str = "zunda";
pub const COMMAND_DESCRIPTION: &str = "ずんだもんに質問することができます。何でも聞いてください。";
pub const OPTION_NAME: &str = "question";
pub const OPTION_DESCRIPTION: &str = "ずんだもんに聞きたいこと";

/// The reply to a message that mentions the bot (the original's text).
pub const MENTION_REPLY: &str =
    "ずんだもんだよ。何でも聞いてくださいなのだ。質問するときは`/zunda`を使ってね。";
/// The reply when a question could not be answered (the original's text).
pub const ERROR_REPLY: &str = "問題が生じたのだ。また、後で質問してほしいのだ。";

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
}
