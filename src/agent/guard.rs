//! The persona guard: an answer with none of Zundamon's voice markers is sent back to the model
//! once, to be rewritten in her voice with its content unchanged.

use async_openai::types::chat::CreateChatCompletionRequest;

use super::prompt::{system, user};

/// Zundamon's sentence endings; 「なのだ」 contains 「のだ」.
const VOICE_MARKER: &str = "のだ";

/// Whether `answer` already speaks in Zundamon's voice.
pub fn has_voice(answer: &str) -> bool {
    answer.contains(VOICE_MARKER)
}

/// The answer length a rewrite of `answer` is given: the answer's estimated length with room
/// for the voice's longer endings, never more than the configured limit.
pub fn rewrite_allowance(answer: &str, max_answer_tokens: Option<u32>) -> u32 {
    let estimate = super::context::estimate_text(answer);
    let wanted = estimate + estimate / 4 + 64;
    max_answer_tokens.map_or(wanted, |max| wanted.min(max))
}

/// The request that asks for `answer` rewritten in Zundamon's voice (no tools).
pub fn rewrite_request(
    model: &str,
    temperature: f32,
    persona: &str,
    answer: &str,
) -> CreateChatCompletionRequest {
    let instruction = format!(
        "次の文章を、ずんだもんの口調に書き直してほしいのだ。文末は「のだ」「なのだ」にして、\
         「です」「ます」は使わないこと。意味、情報、数字、URL、コードは一切変えないこと。\
         書き直した文章だけを出力すること。\n\n---\n{answer}"
    );
    CreateChatCompletionRequest {
        model: model.to_owned(),
        messages: vec![system(persona), user(instruction)],
        temperature: Some(temperature),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_voice_is_recognised() {
        assert!(has_voice("ぼくはずんだもんなのだ！"));
        assert!(has_voice("それは大事なのだ。"));
        assert!(!has_voice("それは大事です。"));
        assert!(!has_voice(""));
    }

    #[test]
    fn the_rewrite_allowance_follows_the_answer_within_the_limit() {
        let short = rewrite_allowance("大事です。", Some(1024));
        assert!((64..200).contains(&short), "{short}");
        assert_eq!(
            rewrite_allowance(&"大事です。".repeat(500), Some(1024)),
            1024
        );
        assert!(rewrite_allowance(&"大事です。".repeat(500), None) > 1024);
    }

    #[test]
    fn the_rewrite_asks_for_the_answer_only_and_offers_no_tools() {
        let request = rewrite_request("m", 0.0, "persona", "大事です。");
        assert!(request.tools.is_none());
        let body = serde_json::to_string(&request).unwrap();
        assert!(body.contains("大事です。") && body.contains("persona"));
    }
}
