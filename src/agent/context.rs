//! What the bot can know about the model's context window without a tokenizer: the numbers a
//! server states when a prompt overflows it, and a conservative token estimate from characters.
//!
//! The estimate is used to judge whether an extra request (the persona guard's rewrite) fits.
//! It errs on the high side — about one token per three ASCII characters and three per two
//! other characters, more than OpenAI's and llama-family tokenizers need for English and
//! Japanese — so a request it lets through is unlikely to overflow, and one that would is
//! skipped rather than sent.

use async_openai::types::chat::ChatCompletionRequestMessage;

/// Tokens a message costs beyond its text (role, separators of the chat template).
const PER_MESSAGE_TOKENS: u32 = 8;

/// Estimated tokens of `text` (conservative, see the module docs).
pub fn estimate_text(text: &str) -> u32 {
    let (ascii, other) = text.chars().fold((0u32, 0u32), |(ascii, other), c| {
        if c.is_ascii() {
            (ascii + 1, other)
        } else {
            (ascii, other + 1)
        }
    });
    ascii.div_ceil(3) + (other * 3).div_ceil(2)
}

/// Estimated prompt tokens of `messages`.
pub fn estimate_messages(messages: &[ChatCompletionRequestMessage]) -> u32 {
    messages
        .iter()
        .map(|message| {
            let text = serde_json::to_string(message).unwrap_or_default();
            estimate_text(&text) + PER_MESSAGE_TOKENS
        })
        .sum()
}

/// The numbers an overflow message states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overflow {
    /// The model's context length, in tokens.
    pub context: Option<u32>,
    /// The tokens of the prompt alone (without the answer asked for).
    pub prompt: Option<u32>,
}

impl Overflow {
    /// Reads the numbers from a lower-cased overflow message:
    /// - llama-cpp-python / OpenAI: "maximum context length is 2048 tokens. however, you
    ///   requested 2100 tokens (1076 in the messages, 1024 in the completion)";
    /// - vLLM: "maximum context length is 2048 tokens and your request has 1500 input tokens";
    /// - llama.cpp's server: "request (4390 tokens) exceeds the available context size (4096
    ///   tokens)";
    /// - older llama-cpp-python: "requested tokens (2285) exceed context window of 2048".
    pub fn parse(message: &str) -> Self {
        let context = number_after(message, "maximum context length is")
            .or_else(|| number_after(message, "available context size ("))
            .or_else(|| number_after(message, "context window of"))
            .or_else(|| number_after(message, "\"n_ctx\":"));
        let prompt = number_before(message, "in the messages")
            .or_else(|| number_after(message, "your request has"))
            .or_else(|| number_after(message, "request ("))
            .or_else(|| number_after(message, "\"n_prompt_tokens\":"));
        Self { context, prompt }
    }

    /// Tokens left for the answer once the prompt is in, when both numbers are stated.
    pub fn room_for_answer(&self) -> Option<u32> {
        let (context, prompt) = (self.context?, self.prompt?);
        // A little slack: the server's count includes template tokens we never see.
        context.checked_sub(prompt)?.checked_sub(16)
    }
}

/// The first number after `marker` (spaces and the start of a parenthesis skipped).
fn number_after(text: &str, marker: &str) -> Option<u32> {
    let start = text.find(marker)? + marker.len();
    let rest = text[start..].trim_start_matches([' ', '(', ':']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The number just before `marker` ("1076 in the messages").
fn number_before(text: &str, marker: &str) -> Option<u32> {
    let end = text.find(marker)?;
    let before = text[..end].trim_end();
    let digits: String = before
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_err_on_the_high_side() {
        assert_eq!(estimate_text(""), 0);
        // English: ~4 characters a token in practice; estimated at 3.
        assert_eq!(estimate_text("Hello, world"), 4);
        // Japanese: about a token a character in practice; estimated at 1.5.
        assert_eq!(estimate_text("ずんだもちなのだ"), 12);
        let messages = vec![super::super::prompt::user("abc".into())];
        assert!(estimate_messages(&messages) > estimate_text("abc"));
    }

    #[test]
    fn overflow_numbers_in_each_wording() {
        let llama_cpp_python = "context_length_exceeded: this model's maximum context length is \
            2048 tokens. however, you requested 2100 tokens (1076 in the messages, 1024 in the \
            completion). please reduce the length of the messages or completion.";
        let numbers = Overflow::parse(llama_cpp_python);
        assert_eq!(
            numbers,
            Overflow {
                context: Some(2048),
                prompt: Some(1076)
            }
        );
        assert_eq!(numbers.room_for_answer(), Some(2048 - 1076 - 16));

        let vllm = "'max_tokens' is too large: 1024. this model's maximum context length is 2048 \
            tokens and your request has 1500 input tokens (1024 > 2048 - 1500).";
        assert_eq!(
            Overflow::parse(vllm),
            Overflow {
                context: Some(2048),
                prompt: Some(1500)
            }
        );

        let server = "exceed_context_size_error: request (4390 tokens) exceeds the available \
            context size (4096 tokens), try increasing it";
        let numbers = Overflow::parse(server);
        assert_eq!(
            numbers,
            Overflow {
                context: Some(4096),
                prompt: Some(4390)
            }
        );
        assert_eq!(numbers.room_for_answer(), None);

        assert_eq!(
            Overflow::parse("requested tokens (2285) exceed context window of 2048").context,
            Some(2048)
        );
        assert_eq!(Overflow::parse("prompt is too long"), Overflow::default());
    }
}
