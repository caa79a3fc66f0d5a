//! Asking with anything, end to end: `/zunda` with an `image:` for a vision model or a `file:` to
//! read, against the built binary and the loopback fakes (the fake Discord serves the attachment
//! URLs, as Discord's CDN does), each in its hardest case.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_discord::{interaction_payload, SentInteraction};
use support::fake_openai::Step;
use support::world::{wait_until, World, USER};

const CHANNEL: u64 = 7_200_000_000_000_000_001;
const NO_VISION: &str =
    "ごめんなのだ。いまのモデルは画像を見られないのだ。文字で説明してほしいのだ。";
const TEXT_ONLY: &str =
    "ごめんなのだ。読めるのはテキストファイルだけなのだ（ログやソースコードなど）。";
const FAILED: &str =
    "添付されたファイルをうまく受け取れなかったのだ……。もう一度付けて質問してほしいのだ。";

/// A tiny valid PNG header and some bytes (the bot checks the magic bytes, not the pixels).
fn png(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(len.max(8), 7);
    bytes
}

/// One attachment of a `/zunda` use: the option, and what `resolved` says of it.
struct Attached<'a> {
    option: &'a str,
    filename: &'a str,
    content_type: &'a str,
    /// The declared size (what Discord says), and the URL it is served at.
    size: usize,
    url: String,
}

/// Dispatches `/zunda question:<question>` with `attached`; `resolved: false` leaves the
/// attachment out of `resolved`.
async fn ask_with(
    world: &World,
    question: &str,
    attached: &[Attached<'_>],
    resolved: bool,
) -> SentInteraction {
    let sent = world.discord.register_interaction(CHANNEL);
    let mut d = interaction_payload(sent.id, &sent.token, CHANNEL, USER, "member", question);
    let mut files = serde_json::Map::new();
    for (n, attachment) in attached.iter().enumerate() {
        let id = (900 + n).to_string();
        d["data"]["options"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": attachment.option, "type": 11, "value": id}));
        files.insert(
            id.clone(),
            json!({"id": id, "filename": attachment.filename, "size": attachment.size,
                "url": attachment.url, "proxy_url": attachment.url,
                "content_type": attachment.content_type}),
        );
    }
    if resolved {
        d["data"]["resolved"] = json!({"attachments": files});
    }
    world.discord.dispatch("INTERACTION_CREATE", d).await;
    sent
}

async fn shown(world: &World, sent: &SentInteraction) -> String {
    world.wait_final(sent).await;
    world.discord.shown(&sent.token).concat()
}

/// The model request for `question` (its last user message contains it).
fn request_for(world: &World, question: &str) -> Value {
    let requests = world.model_requests_for(question);
    requests.first().cloned().expect("the model was asked")
}

/// The immediate reply (the interaction's callback) of a question refused at once.
async fn refused_at_once(world: &World, sent: &SentInteraction) -> String {
    let callback = world
        .wait_taken_callback(sent, Duration::from_secs(10))
        .await;
    assert_eq!(
        callback.body["type"], 4,
        "an immediate reply: {:?}",
        callback.body
    );
    callback.body["data"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn attachment_downloads(world: &World) -> usize {
    world
        .discord
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/attachments/"))
        .count()
}

#[tokio::test]
async fn an_image_reaches_a_vision_model_once_and_the_window_keeps_a_placeholder() {
    let world = World::builder("attach-image")
        .env("ZUNDA_VISION", "true")
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    let url = world
        .discord
        .serve_file("screen.png", "image/png", png(300));
    let image = Attached {
        option: "image",
        filename: "screen.png",
        content_type: "image/png",
        size: 300,
        url,
    };
    let sent = ask_with(&world, "このエラーは何？", &[image], true).await;
    let answer = shown(&world, &sent).await;
    assert!(
        answer.contains("> このエラーは何？\n> [画像: screen.png]"),
        "{answer}"
    );
    let request = request_for(&world, "このエラーは何？");
    let question = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    let parts = question["content"]
        .as_array()
        .expect("text and image parts");
    assert_eq!(parts[0]["type"], "text");
    let url = parts[1]["image_url"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("data:image/png;base64,iVBORw0KGgo"),
        "{url}"
    );
    // The next question carries the placeholder, never the image again.
    let _ = shown(&world, &ask_with(&world, "次の質問", &[], true).await).await;
    let next = request_for(&world, "次の質問").to_string();
    assert!(next.contains("[画像: screen.png]"), "{next}");
    assert!(!next.contains("data:image"), "the image was sent again");
    assert!(
        !world.bot.logs().contains("iVBORw0KGgo"),
        "image data in the logs"
    );
}

#[tokio::test]
async fn images_are_refused_before_any_model_call_or_download_where_they_cannot_be_taken() {
    let world = World::builder("attach-refusals")
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    let url = world.discord.serve_file("a.png", "image/png", png(300));
    // The default model does not take images.
    let sent = ask_with(
        &world,
        "見えない質問",
        &[Attached {
            option: "image",
            filename: "a.png",
            content_type: "image/png",
            size: 300,
            url: url.clone(),
        }],
        true,
    )
    .await;
    assert_eq!(refused_at_once(&world, &sent).await, NO_VISION);
    // An attachment id missing from `resolved`.
    let sent = ask_with(
        &world,
        "解決されない質問",
        &[Attached {
            option: "file",
            filename: "a.txt",
            content_type: "text/plain",
            size: 10,
            url: url.clone(),
        }],
        false,
    )
    .await;
    assert_eq!(refused_at_once(&world, &sent).await, FAILED);
    // A PDF is not text.
    let sent = ask_with(
        &world,
        "PDFの質問",
        &[Attached {
            option: "file",
            filename: "a.pdf",
            content_type: "application/pdf",
            size: 10,
            url,
        }],
        true,
    )
    .await;
    assert_eq!(refused_at_once(&world, &sent).await, TEXT_ONLY);
    assert!(world.asked().is_empty(), "{:?}", world.asked());
    assert_eq!(attachment_downloads(&world), 0);
}

#[tokio::test]
async fn a_huge_image_is_refused_from_its_declared_size_and_a_lying_one_during_the_download() {
    let world = World::builder("attach-huge")
        .env("ZUNDA_VISION", "true")
        .env("ZUNDA_STREAM", "false")
        .env("ZUNDA_MAX_IMAGE_BYTES", "100000")
        .start()
        .await;
    let big = world
        .discord
        .serve_file("big.png", "image/png", png(20 * 1024 * 1024));
    let sent = ask_with(
        &world,
        "大きな画像",
        &[Attached {
            option: "image",
            filename: "big.png",
            content_type: "image/png",
            size: 20 * 1024 * 1024,
            url: big.clone(),
        }],
        true,
    )
    .await;
    let reply = refused_at_once(&world, &sent).await;
    assert!(reply.contains("画像が大きすぎる"), "{reply}");
    assert_eq!(
        attachment_downloads(&world),
        0,
        "refused before any download"
    );
    // Declared small, served large: the download stops at the cap.
    let sent = ask_with(
        &world,
        "嘘の大きさ",
        &[Attached {
            option: "image",
            filename: "big.png",
            content_type: "image/png",
            size: 500,
            url: big,
        }],
        true,
    )
    .await;
    let reply = shown(&world, &sent).await;
    assert!(reply.contains("画像が大きすぎる"), "{reply}");
    assert!(world.asked().is_empty());
    // A file that is not what it claims: binary under a text name.
    let binary = world
        .discord
        .serve_file("data.txt", "text/plain", vec![0, 1, 2, 3, 0, 9]);
    let sent = ask_with(
        &world,
        "バイナリ",
        &[Attached {
            option: "file",
            filename: "data.txt",
            content_type: "text/plain",
            size: 6,
            url: binary,
        }],
        true,
    )
    .await;
    assert_eq!(shown(&world, &sent).await, TEXT_ONLY);
    assert!(world.asked().is_empty());
    // The bot keeps serving.
    let sent = ask_with(&world, "ふつうの質問", &[], true).await;
    assert!(shown(&world, &sent).await.contains("ふつうの質問"));
}

#[tokio::test]
async fn a_long_log_file_is_read_up_to_the_limit_with_a_note_and_not_remembered() {
    let world = World::builder("attach-file")
        .env("ZUNDA_STREAM", "false")
        .start()
        .await;
    // 50 KB of numbered lines: the first 20000 characters are read.
    let log: String = (0..5000).map(|n| format!("line {n:05}\n")).collect();
    assert!(log.len() > 50_000);
    world.openai.script(
        "このログを見て",
        vec![Step::Answer("ログは順番どおりなのだ。".into())],
    );
    let url = world.discord.serve_file(
        "app.log",
        "text/plain; charset=utf-8",
        log.clone().into_bytes(),
    );
    let sent = ask_with(
        &world,
        "このログを見て",
        &[Attached {
            option: "file",
            filename: "app.log",
            content_type: "text/plain; charset=utf-8",
            size: log.len(),
            url,
        }],
        true,
    )
    .await;
    let answer = shown(&world, &sent).await;
    assert!(
        answer.contains("⚠️ ファイルが長すぎたので、最初の20000文字だけ読んだのだ。"),
        "{answer}"
    );
    let request = request_for(&world, "このログを見て").to_string();
    let first: String = log.chars().take(20_000).collect();
    let request_json: Value = serde_json::from_str(&request).unwrap();
    let question = support::fake_openai::last_user_text(&request_json).unwrap();
    assert!(
        question.contains(&first),
        "the first 20000 characters are in the request"
    );
    assert!(!question.contains(&log.chars().take(20_001).collect::<String>()));
    assert!(question.contains("<user_file name=\"app.log\">"));
    // The window keeps the placeholder, not the file.
    let _ = shown(&world, &ask_with(&world, "続きの質問", &[], true).await).await;
    let next = request_for(&world, "続きの質問").to_string();
    assert!(next.contains("[ファイル: app.log]"), "{next}");
    assert!(!next.contains("line 00001"), "the file was sent again");
    wait_until("the window stored", Duration::from_secs(5), || {
        world.stored_answers().len() == 2
    })
    .await;
}
