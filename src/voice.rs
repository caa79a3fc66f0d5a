//! Texts users see from the channel memory commands and the live view of an answer, in
//! Zundamon's voice.

use std::time::Duration;

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

/// The status line while an answer is rewritten in Zundamon's voice.
pub const REWRITING_STATUS: &str = "✏️ ずんだもんの言葉で書き直しているのだ…";

/// The reply to `/zunda-reset` from a member without Manage Messages.
pub const RESET_FORBIDDEN_REPLY: &str =
    "ごめんなのだ。記憶のリセットは「メッセージの管理」ができる人だけが使えるのだ。";

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
            RESET_FAILED_REPLY.to_owned(),
            reset_reply(0),
            reset_reply(3),
            memory_reply(2, 5, true, Duration::from_secs(600)),
            memory_reply(2, 5, false, Duration::from_secs(600)),
            searching_status("ずんだ餅"),
            THINKING_STATUS.to_owned(),
            REWRITING_STATUS.to_owned(),
        ] {
            assert!(text.contains("のだ"), "{text}");
        }
        assert!(memory_reply(2, 5, true, Duration::from_secs(600)).contains("10分"));
    }
}
