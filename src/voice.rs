//! Every text a user can see, in one place: the original bot's replies, the explanations for
//! questions the bot turns away (empty, too long, too fast, busy, restarting), the channel memory
//! commands and the live view's status lines. All in Zundamon's voice (the waiting message
//! 「ちょっと待ってね。」 is the original's, kept as it was).

use std::time::Duration;

/// The reply to a message that mentions the bot (the original's text).
pub const MENTION_REPLY: &str =
    "ずんだもんだよ。何でも聞いてくださいなのだ。質問するときは`/zunda`を使ってね。";
/// The first response to a command received over the HTTP interactions endpoint (the original
/// serverless variant's text); the answer replaces it.
pub const WAIT_REPLY: &str = "ちょっと待ってね。";
/// The reply when a question could not be answered (the original's text).
pub const ERROR_REPLY: &str = "問題が生じたのだ。また、後で質問してほしいのだ。";
/// Appended where an over-long reply was cut.
pub const TRUNCATED_NOTICE: &str = "\n…（長すぎるので、ここまでにしておくのだ）";

/// The reply to an empty question.
pub const EMPTY_QUESTION_REPLY: &str =
    "質問が空っぽなのだ。`/zunda question:聞きたいこと` みたいに、聞きたいことを書いてほしいのだ！";

/// The reply to a question that arrives while the bot is shutting down.
pub const SHUTTING_DOWN_REPLY: &str =
    "ずんだもんは今、再起動の準備中なのだ。少し待ってからもう一度聞いてほしいのだ！";

/// The reply when the channel's queue or the bot as a whole is full, or a question could not be
/// answered before its interaction expires: ask again shortly.
pub const BUSY_REPLY: &str =
    "いまとても混んでいるのだ。少し待ってから、もう一度質問してほしいのだ。";

/// The reply to a question longer than `limit` characters.
pub fn too_long_reply(chars: usize, limit: usize) -> String {
    format!(
        "質問が長すぎるのだ！{chars}文字もあると、ずんだもんには読みきれないのだ。\
         {limit}文字以内にまとめてから、もう一度聞いてほしいのだ。"
    )
}

/// The reply to a user over the rate limit, who may ask again after `retry_after`.
pub fn rate_limited_reply(retry_after: Duration) -> String {
    format!(
        "ちょっと待ってほしいのだ！質問が続きすぎて、ずんだもんの頭がいっぱいなのだ。\
         {}くらいしてから、また聞いてほしいのだ。",
        wait_in_words(retry_after)
    )
}

/// A wait rounded up, so the user who waits as told is never refused again.
fn wait_in_words(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match secs.max(1) {
        secs @ ..=90 => format!("{secs}秒"),
        secs => format!("{}分", secs.div_ceil(60)),
    }
}

/// The status line while the model searches the web for `query`.
pub fn searching_status(query: &str) -> String {
    let query: String = query
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '`' | '*' | '_' | '~' | '|'))
        .take(60)
        .collect();
    format!("🔍『{}』を調べているのだ…", query.trim())
}

/// The status line while a reasoning model thinks (its thoughts are never shown).
pub const THINKING_STATUS: &str = "🤔 考えているのだ…";

/// The status line while an answer is rewritten in Zundamon's voice, shown after the answer
/// being rewritten (which stays visible).
pub const REWRITING_STATUS: &str = "✏️ ずんだもんの言葉で書き直しているのだ…";

/// Appended to an answer the model stopped at its token limit (`finish_reason: "length"`), so
/// nobody takes a sentence that breaks off for the whole answer.
pub const ANSWER_CUT_NOTE: &str =
    "⚠️ 答えが長くなりすぎて、途中で切れてしまったのだ。続きが知りたいときは、もっと短く答えられる聞き方で聞いてほしいのだ。";

/// The reply to `/zunda-reset` from a member without Manage Messages (and not an admin).
pub const RESET_FORBIDDEN_REPLY: &str =
    "ごめんなのだ。記憶のリセットは「メッセージの管理」ができる人だけが使えるのだ。";

/// The reply to `/zunda-reset` over HTTP when several instances share the bot (the HTTP fleet):
/// the instance answering the channel keeps its window in memory, so a reset taken by another
/// instance would not reach it.
pub const RESET_UNAVAILABLE_REPLY: &str =
    "ごめんなのだ。複数のずんだもんで動いているときは、記憶のリセットはできないのだ。";

/// The reply (only the asker sees it) to a `/zunda` the access lists exclude.
pub const ACCESS_REFUSED_REPLY: &str =
    "ごめんなのだ。ここでは、ずんだもんに質問できないことになっているのだ。";

/// The reply (only the asker sees it) to a `/zunda` outside a guild when `[access] allow_dms` is
/// off.
pub const DMS_REFUSED_REPLY: &str =
    "ごめんなのだ。ダイレクトメッセージでは、ずんだもんに質問できないことになっているのだ。";

/// The last message of an answer too long for five messages: the whole answer comes with it as
/// a text file.
pub const ANSWER_FILE_NOTE: &str =
    "…長くなったので、続きも含めた答えの全文をファイルにしたのだ。開いて読んでほしいのだ！";

/// The reply to a `/zunda` from a user past the daily token budget.
pub const BUDGET_SPENT_REPLY: &str =
    "今日はもうたくさん答えたのだ。また明日、聞きに来てほしいのだ！";

/// The reply to `/zunda-model` from someone who is neither an admin nor has Manage Server.
pub const MODEL_FORBIDDEN_REPLY: &str =
    "ごめんなのだ。モデルの切り替えは管理者か「サーバー管理」ができる人だけが使えるのだ。";

/// The reply when a `/zunda-model` choice could not be kept (the store failed).
pub const MODEL_FAILED_REPLY: &str =
    "モデルの設定をうまく保存できなかったのだ……。少し待ってから、もう一度試してほしいのだ。";

/// The reply to `/zunda-model` naming a model nobody configured.
pub fn unknown_model_reply(name: &str, known: &[String]) -> String {
    format!(
        "「{name}」というモデルは知らないのだ。使えるのは {} なのだ。",
        known.join("、")
    )
}

/// The reply to a successful `/zunda-model`.
pub fn model_chosen_reply(name: &str, is_default: bool) -> String {
    if is_default {
        "このチャンネルのモデルの指定を外したのだ。これからは設定どおりのモデルで答えるのだ。"
            .to_owned()
    } else {
        format!("このチャンネルでは、これから「{name}」で答えるのだ！")
    }
}

/// The lines `/zunda-memory` adds: the place's effective settings.
pub fn settings_lines(model: &str, search: bool, persona: bool, chosen: bool) -> String {
    let model_line = if chosen {
        format!("モデル: {model}（/zunda-model で指定）")
    } else {
        format!("モデル: {model}")
    };
    format!(
        "\n{model_line}\nWeb検索: {}\n追加の人格設定: {}",
        if search { "使う" } else { "使わない" },
        if persona { "あり" } else { "なし" }
    )
}

/// The reply to an image for a model that does not take images.
pub const NO_VISION_REPLY: &str =
    "ごめんなのだ。いまのモデルは画像を見られないのだ。文字で説明してほしいのだ。";

/// The reply to an `image:` that is not a png, jpeg, webp or gif.
pub const IMAGE_TYPE_REPLY: &str = "ごめんなのだ。見られる画像は png・jpeg・webp・gif だけなのだ。";

/// The reply to an image over `ZUNDA_MAX_IMAGE_BYTES`.
pub fn image_too_large_reply(limit_bytes: u64) -> String {
    format!(
        "ごめんなのだ。画像が大きすぎるのだ。{}MBまでにしてほしいのだ。",
        (limit_bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
    )
}

/// The reply to a `file:` that is not a text file.
pub const TEXT_ONLY_REPLY: &str =
    "ごめんなのだ。読めるのはテキストファイルだけなのだ（ログやソースコードなど）。";

/// The reply to an attachment with nothing in it.
pub const EMPTY_FILE_REPLY: &str =
    "添付されたファイルが空っぽなのだ。中身のあるファイルを付けてほしいのだ。";

/// The reply when an attachment could not be fetched or read (gone, too slow, not what it said
/// it was).
pub const ATTACHMENT_FAILED_REPLY: &str =
    "添付されたファイルをうまく受け取れなかったのだ……。もう一度付けて質問してほしいのだ。";

/// The note after an answer whose text file was cut at `ZUNDA_MAX_FILE_CHARS`.
pub fn file_cut_note(chars: usize) -> String {
    format!("⚠️ ファイルが長すぎたので、最初の{chars}文字だけ読んだのだ。")
}

/// The reply when the reset could not be done (the store failed).
pub const RESET_FAILED_REPLY: &str =
    "記憶をうまく消せなかったのだ……。少し待ってから、もう一度試してほしいのだ。";

/// The reply to a successful `/zunda-reset`.
pub fn reset_reply(forgotten: usize) -> String {
    if forgotten == 0 {
        "このチャンネルで覚えていることは、もともと何もなかったのだ。まっさらなのだ！".to_owned()
    } else {
        format!(
            "このチャンネルの記憶をリセットしたのだ！{forgotten}件の会話を忘れて、まっさらな気持ちなのだ。"
        )
    }
}

/// The reply to `/zunda-memory`: how much the channel remembers and when an idle channel's
/// memory leaves RAM (it stays stored).
pub fn memory_reply(remembered: usize, window: usize, in_ram: bool, idle: Duration) -> String {
    let idle = duration_in_words(idle);
    let place = if in_ram {
        format!(
            "いまはすぐ思い出せるところにあって、{idle}話しかけられないと保存場所にしまうのだ。"
        )
    } else {
        "いまは保存場所にしまってあって、次に質問されたら思い出すのだ。".to_owned()
    };
    format!(
        "このチャンネルでは、最近の会話を{remembered}件覚えているのだ（最大{window}件）。{place}しまっても忘れはしないのだ。"
    )
}

/// "10分", "1時間30分", "45秒".
fn duration_in_words(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut words = String::new();
    if hours > 0 {
        words.push_str(&format!("{hours}時間"));
    }
    if minutes > 0 {
        words.push_str(&format!("{minutes}分"));
    }
    if seconds > 0 || words.is_empty() {
        words.push_str(&format!("{seconds}秒"));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_status_shows_a_clean_query() {
        assert_eq!(
            searching_status("ずんだ `餅`\n**レシピ**"),
            "🔍『ずんだ 餅レシピ』を調べているのだ…"
        );
        assert!(searching_status(&"あ".repeat(500)).chars().count() < 80);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_in_words(Duration::from_secs(600)), "10分");
        assert_eq!(duration_in_words(Duration::from_secs(5400)), "1時間30分");
        assert_eq!(duration_in_words(Duration::from_secs(45)), "45秒");
        assert_eq!(duration_in_words(Duration::ZERO), "0秒");
    }

    #[test]
    fn every_text_is_in_zundamons_voice() {
        for text in [
            RESET_FORBIDDEN_REPLY.to_owned(),
            RESET_UNAVAILABLE_REPLY.to_owned(),
            RESET_FAILED_REPLY.to_owned(),
            reset_reply(0),
            reset_reply(3),
            memory_reply(2, 5, true, Duration::from_secs(600)),
            memory_reply(2, 5, false, Duration::from_secs(600)),
            searching_status("ずんだ餅"),
            THINKING_STATUS.to_owned(),
            REWRITING_STATUS.to_owned(),
            ANSWER_CUT_NOTE.to_owned(),
            DMS_REFUSED_REPLY.to_owned(),
            ANSWER_FILE_NOTE.to_owned(),
        ] {
            assert!(text.contains("のだ"), "{text}");
        }
        assert!(memory_reply(2, 5, true, Duration::from_secs(600)).contains("10分"));
    }
}
