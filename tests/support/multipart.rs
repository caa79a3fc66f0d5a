//! Reading a `multipart/form-data` body as Discord does for messages with files: the message as
//! JSON in `payload_json`, each file in a `files[N]` part.

use serde_json::Value;

/// A file part of a multipart request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFile {
    /// The form field, e.g. `files[0]`.
    pub field: String,
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

impl RecordedFile {
    /// The content as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.content).into_owned()
    }
}

/// The `payload_json` part (as JSON; `Value::Null` if absent or invalid) and the file parts of a
/// body sent with `content_type`; `None` if it is not `multipart/form-data`.
pub fn parse(content_type: &str, body: &[u8]) -> Option<(Value, Vec<RecordedFile>)> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params
        .split(';')
        .filter_map(|param| param.trim().split_once('='))
        .find(|(key, _)| key.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim_matches('"').to_owned())?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut payload = Value::Null;
    let mut files = Vec::new();
    for part in split(body, &delimiter).into_iter().skip(1) {
        if part.starts_with(b"--") {
            break; // the closing delimiter
        }
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(at) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let (head, content) = (&part[..at], &part[at + 4..]);
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let head = String::from_utf8_lossy(head);
        let mut field = String::new();
        let mut filename = None;
        let mut part_type = String::new();
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').filter_map(|p| p.trim().split_once('=')) {
                    match param.0 {
                        "name" => field = param.1.trim_matches('"').to_owned(),
                        "filename" => filename = Some(param.1.trim_matches('"').to_owned()),
                        _ => {}
                    }
                }
            } else if name.trim().eq_ignore_ascii_case("content-type") {
                part_type = value.trim().to_owned();
            }
        }
        match filename {
            None if field == "payload_json" => {
                payload = serde_json::from_slice(content).unwrap_or(Value::Null)
            }
            None => {}
            Some(filename) => files.push(RecordedFile {
                field,
                filename,
                content_type: part_type,
                content: content.to_vec(),
            }),
        }
    }
    Some((payload, files))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn split<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(body, delimiter) {
        parts.push(&body[..at]);
        body = &body[at + delimiter.len()..];
    }
    parts.push(body);
    parts
}
