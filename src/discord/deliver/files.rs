//! Messages that carry a text file: an answer too long for the five messages an interaction can
//! show goes, whole, as a `.txt` attachment of its last message. Discord takes a file only in a
//! `multipart/form-data` body: the message as JSON in a `payload_json` part, the file in
//! `files[0]`, named in the message's `attachments` (id 0).

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

/// A UTF-8 text file attached to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextFile {
    /// The file name users see (and download as).
    pub name: String,
    pub content: String,
}

/// The MIME type the file is sent with.
pub const TEXT_FILE_TYPE: &str = "text/plain; charset=utf-8";

impl TextFile {
    /// The message `body` (content, `allowed_mentions`…) naming this file as attachment 0. On an
    /// edit this replaces the message's attachments with exactly this file, so sending it again
    /// never shows the file twice.
    pub(in crate::discord) fn payload(&self, body: &Value) -> Value {
        let mut payload = body.clone();
        payload["attachments"] = json!([{"id": 0, "filename": self.name}]);
        payload
    }

    /// The multipart body of a message `body` carrying this file (built anew for each attempt:
    /// a form is consumed by sending it).
    pub(in crate::discord) fn form(&self, body: &Value) -> Form {
        let payload = Part::text(self.payload(body).to_string())
            .mime_str("application/json")
            .expect("a valid MIME type");
        let file = Part::bytes(self.content.clone().into_bytes())
            .file_name(self.name.clone())
            .mime_str(TEXT_FILE_TYPE)
            .expect("a valid MIME type");
        Form::new()
            .part("payload_json", payload)
            .part("files[0]", file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_names_the_file_and_keeps_mentions_off() {
        let file = TextFile {
            name: "zundamon-answer.txt".into(),
            content: "全文なのだ".into(),
        };
        let body = json!({"content": "note", "allowed_mentions": {"parse": []}});
        let payload = file.payload(&body);
        assert_eq!(payload["allowed_mentions"], json!({"parse": []}));
        assert_eq!(
            payload["attachments"],
            json!([{"id": 0, "filename": "zundamon-answer.txt"}])
        );
        assert!(file.form(&body).boundary().len() > 10);
    }
}
