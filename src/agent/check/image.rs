//! The image check: whether the model takes an image (an `image_url` part with a tiny PNG drawn
//! by the bot), told against what the configuration says (`vision`).

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestMessageContentPartImage,
    ChatCompletionRequestMessageContentPartText, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionRequestUserMessageContentPart, ImageUrl,
};

use super::user_request;
use crate::agent::attachments::probe_image_data_url;
use crate::agent::llm::ChatClient;
use crate::config::Config;

/// The `images:` line.
pub(super) async fn check_image(
    config: &Config,
    client: &ChatClient,
    deadline: tokio::time::Instant,
) -> String {
    let mut request = user_request(config, "");
    request.messages = vec![ChatCompletionRequestMessage::User(
        ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Array(vec![
                ChatCompletionRequestUserMessageContentPart::Text(
                    ChatCompletionRequestMessageContentPartText {
                        text: "What colour is this image? Answer in one word.".into(),
                        ..Default::default()
                    },
                ),
                ChatCompletionRequestUserMessageContentPart::ImageUrl(
                    ChatCompletionRequestMessageContentPartImage {
                        image_url: ImageUrl {
                            url: probe_image_data_url(),
                            detail: None,
                        },
                        ..Default::default()
                    },
                ),
            ]),
            name: None,
        },
    )];
    let vision = config.openai.vision;
    match client.complete(&request, deadline).await {
        Ok(_) if vision => "  images:     accepted (vision = true)".into(),
        Ok(_) => "  images:     accepted, but ZUNDA_VISION is false: set it to true to let users \
                  send images (or the server may ignore images it cannot see)"
            .into(),
        Err(err) if err.rejects_images() && vision => format!(
            "  images:     REFUSED ({err}), but ZUNDA_VISION is true: set it to false, or \
             questions with images fail"
        ),
        Err(err) if err.rejects_images() => {
            format!("  images:     not accepted ({err}); ZUNDA_VISION is false, as it should be")
        }
        Err(err) => format!("  images:     check failed: {err}"),
    }
}
