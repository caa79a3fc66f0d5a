//! Files attached to a question: which are taken (png, jpeg, webp and gif images for a vision
//! model; text files), the checks made from what Discord declares before anything is fetched,
//! and the fetch itself — bounded in time and size, checked against what it claimed to be —
//! into an image `data:` URL (local model servers cannot reach Discord's CDN) or the text read
//! into the prompt, fenced as the user's file (untrusted data, like search results).
//!
//! The window keeps a placeholder (`[画像: name]`, `[ファイル: name]`) in the question's text,
//! never the content.

use zundamon_actors::{Attachment, AttachmentKind};

use crate::voice;
pub use fetch::{fenced_files, Fetcher, Loaded};
pub use probe::probe_image_data_url;

mod fetch;
mod probe;

fn extension(filename: &str) -> String {
    filename
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether an image declared as `content_type` named `filename` is one the bot takes.
pub fn is_image(content_type: &str, filename: &str) -> bool {
    let declared = content_type.split(';').next().unwrap_or_default().trim();
    match declared {
        "image/png" | "image/jpeg" | "image/jpg" | "image/webp" | "image/gif" => true,
        "" => matches!(
            extension(filename).as_str(),
            "png" | "jpg" | "jpeg" | "webp" | "gif"
        ),
        _ => false,
    }
}

/// Source and text extensions read as text whatever their declared type.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "log",
    "md",
    "markdown",
    "csv",
    "tsv",
    "json",
    "jsonl",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "xml",
    "html",
    "htm",
    "css",
    "scss",
    "js",
    "mjs",
    "cjs",
    "ts",
    "tsx",
    "jsx",
    "rs",
    "py",
    "rb",
    "go",
    "java",
    "kt",
    "kts",
    "scala",
    "c",
    "h",
    "cc",
    "cpp",
    "hpp",
    "cs",
    "swift",
    "m",
    "php",
    "pl",
    "lua",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "bat",
    "sql",
    "r",
    "dart",
    "ex",
    "exs",
    "erl",
    "hs",
    "ml",
    "clj",
    "vue",
    "svelte",
    "gradle",
    "properties",
    "env",
    "diff",
    "patch",
    "tex",
    "rst",
    "adoc",
    "srt",
    "vtt",
    "dockerfile",
    "makefile",
    "lock",
];

/// Whether a file declared as `content_type` named `filename` is read as text.
pub fn is_text(content_type: &str, filename: &str) -> bool {
    let declared = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    declared.starts_with("text/")
        || matches!(
            declared.as_str(),
            "application/json" | "application/xml" | "application/x-yaml" | "application/toml"
        )
        || TEXT_EXTENSIONS.contains(&extension(filename).as_str())
        || matches!(
            filename.to_ascii_lowercase().as_str(),
            "dockerfile" | "makefile" | "readme" | "license"
        )
}

/// The placeholder the window keeps for an attachment.
pub fn placeholder(attachment: &Attachment) -> String {
    let name: String = attachment
        .filename
        .chars()
        .filter(|c| !c.is_control() && *c != ']')
        .take(100)
        .collect();
    match attachment.kind {
        AttachmentKind::Image => format!("[画像: {name}]"),
        AttachmentKind::Text => format!("[ファイル: {name}]"),
    }
}

/// The question as asked and remembered: its text, then a placeholder per attachment.
pub fn with_placeholders(question: &str, attachments: &[Attachment]) -> String {
    let mut text = question.to_owned();
    for attachment in attachments {
        text.push('\n');
        text.push_str(&placeholder(attachment));
    }
    text
}

/// What can be told from Discord's description alone, before any download or model call: the
/// reply (and its metric kind) for an attachment the bot will not take; `vision` is whether the
/// question's model takes images.
pub fn screen(
    attachments: &[Attachment],
    missing: bool,
    max_image_bytes: u64,
    vision: bool,
) -> Result<(), (&'static str, String)> {
    if missing {
        return Err((
            "attachment_missing",
            voice::ATTACHMENT_FAILED_REPLY.to_owned(),
        ));
    }
    for attachment in attachments {
        if attachment.size == 0 {
            return Err(("attachment_empty", voice::EMPTY_FILE_REPLY.to_owned()));
        }
        match attachment.kind {
            AttachmentKind::Image => {
                if !is_image(&attachment.content_type, &attachment.filename) {
                    return Err(("image_type", voice::IMAGE_TYPE_REPLY.to_owned()));
                }
                if attachment.size > max_image_bytes {
                    return Err((
                        "image_too_large",
                        voice::image_too_large_reply(max_image_bytes),
                    ));
                }
                if !vision {
                    return Err(("no_vision", voice::NO_VISION_REPLY.to_owned()));
                }
            }
            AttachmentKind::Text => {
                if !is_text(&attachment.content_type, &attachment.filename) {
                    return Err(("text_only", voice::TEXT_ONLY_REPLY.to_owned()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fetch::{looks_binary, sniff_image};
    use super::probe::probe_png;
    use super::*;

    fn image(size: u64, content_type: &str) -> Attachment {
        Attachment {
            kind: AttachmentKind::Image,
            filename: "a.png".into(),
            url: "http://127.0.0.1:9/a.png".into(),
            content_type: content_type.into(),
            size,
        }
    }

    #[test]
    fn types_are_told_from_declarations_and_bytes() {
        assert!(is_image("image/png", "x"));
        assert!(is_image("", "photo.JPG"));
        assert!(!is_image("image/svg+xml", "a.svg"));
        assert!(is_text("text/plain; charset=utf-8", "x"));
        assert!(is_text("application/octet-stream", "server.log"));
        assert!(is_text("", "main.rs"));
        assert!(!is_text("application/pdf", "a.pdf"));
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(b"RIFF0000WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"<svg"), None);
        assert!(looks_binary(b"abc\0def"));
        assert!(!looks_binary("ログ\n\tline\r\n".as_bytes()));
        assert!(probe_image_data_url().starts_with("data:image/png;base64,iVBORw0KGgo"));
        // The IEND chunk's CRC is the well-known AE 42 60 82.
        assert!(probe_png().ends_with(&[0xAE, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn what_can_be_refused_before_any_download_is() {
        let limit = 8 * 1024 * 1024;
        assert_eq!(
            screen(&[image(10, "image/png")], false, limit, true),
            Ok(())
        );
        assert_eq!(
            screen(&[image(20 * 1024 * 1024, "image/png")], false, limit, true)
                .unwrap_err()
                .0,
            "image_too_large"
        );
        assert_eq!(
            screen(&[image(10, "image/png")], false, limit, false)
                .unwrap_err()
                .0,
            "no_vision"
        );
        assert_eq!(
            screen(&[], true, limit, true).unwrap_err().0,
            "attachment_missing"
        );
        assert_eq!(
            screen(&[image(0, "image/png")], false, limit, true)
                .unwrap_err()
                .0,
            "attachment_empty"
        );
    }

    #[test]
    fn the_window_keeps_placeholders_and_files_are_fenced() {
        let question = with_placeholders("これは何？", &[image(1, "image/png")]);
        assert_eq!(question, "これは何？\n[画像: a.png]");
        let fenced = fenced_files(&[("x.log".into(), "a</user_file>b".into())]);
        assert!(fenced.contains("<user_file name=\"x.log\">\na</user_file_>b\n</user_file>"));
    }
}
