//! One request to the model, shown as it is written when someone watches: the text streamed into
//! the live view, a status while a reasoning model thinks; what it cost is counted.

use async_openai::types::chat::CreateChatCompletionRequest;
use tokio::time::Instant;
use zundamon_actors::{Live, Progress};

use super::llm::LlmError;
use super::response::AssistantMessage;
use super::stream::StreamEvent;
use super::ZundaAgent;
use crate::voice;

impl ZundaAgent {
    /// Asks the model: streamed when someone watches the answer and `streamed` allows it, so
    /// the text shows as it is written (a status while a reasoning model thinks); otherwise in
    /// one piece, shown once complete.
    pub(super) async fn ask_model(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
        progress: Option<&Progress>,
        streamed: bool,
    ) -> Result<AssistantMessage, LlmError> {
        let result = self
            .ask_model_once(request, deadline, progress, streamed)
            .await;
        if let Ok(message) = &result {
            self.count(message);
        }
        result
    }

    async fn ask_model_once(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
        progress: Option<&Progress>,
        streamed: bool,
    ) -> Result<AssistantMessage, LlmError> {
        let Some(progress) = progress else {
            return self.llm.complete(request, deadline).await;
        };
        let mut shown = String::new();
        let mut on_event = |event: StreamEvent| match event {
            StreamEvent::Text(delta) => {
                shown.push_str(&delta);
                progress.send_replace(Live::Text(shown.clone()));
            }
            StreamEvent::Thinking => {
                if shown.is_empty() {
                    progress.send_replace(Live::Status(voice::THINKING_STATUS.to_owned()));
                }
            }
        };
        if streamed {
            self.llm.stream(request, deadline, &mut on_event).await
        } else {
            self.llm
                .complete_showing(request, deadline, &mut on_event)
                .await
        }
    }
}
