//! Keeping a reasoning model's thoughts out of what users see and what the window stores.
//!
//! Ollama and llama.cpp put the thinking of DeepSeek-R1, Qwen3 and the like into `content` as
//! `<think>…</think>` (some chat templates open the block in the prompt, so the answer starts
//! mid-thought and only the closing tag arrives). [`strip_reasoning`] removes it from a whole
//! text; [`ThinkFilter`] does the same for a stream of deltas, holding back a few bytes when a
//! delta ends in what may be the start of a tag.

/// Opening and closing tags, lowercase ASCII (matched case-insensitively).
const OPEN_TAGS: [&str; 2] = ["<think>", "<thinking>"];
const CLOSE_TAGS: [&str; 2] = ["</think>", "</thinking>"];

/// A text with its reasoning removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// What may be shown (untrimmed).
    pub visible: String,
    /// Whether any reasoning was removed.
    pub had_reasoning: bool,
    /// Whether the text closed a thought it never opened: the chat template opens the block in
    /// the prompt, so the model's text starts inside it.
    pub opened_implicitly: bool,
}

/// The earliest occurrence of any of `tags` in `lower` at or after `from`: (start, tag length).
fn find_tag(lower: &str, from: usize, tags: &[&str]) -> Option<(usize, usize)> {
    tags.iter()
        .filter_map(|tag| lower[from..].find(tag).map(|at| (from + at, tag.len())))
        .min_by_key(|(at, _)| *at)
}

/// Removes `<think>…</think>` blocks; an unterminated block hides the rest of the text, and a
/// closing tag with no opening one hides everything before it.
pub fn strip_reasoning(text: &str) -> Stripped {
    // ASCII lowercasing keeps byte offsets, so indices found in `lower` are valid in `text`.
    let lower = text.to_ascii_lowercase();
    let mut visible = String::with_capacity(text.len());
    let mut had_reasoning = false;
    let mut opened_implicitly = false;
    let mut at = 0;
    let first_open = find_tag(&lower, 0, &OPEN_TAGS).map(|(start, _)| start);
    if let Some((close, len)) = find_tag(&lower, 0, &CLOSE_TAGS) {
        let before_any_open = match first_open {
            Some(open) => close < open,
            None => true,
        };
        if before_any_open {
            had_reasoning = true;
            opened_implicitly = true;
            at = close + len;
        }
    }
    while let Some((open, open_len)) = find_tag(&lower, at, &OPEN_TAGS) {
        had_reasoning = true;
        visible.push_str(&text[at..open]);
        match find_tag(&lower, open + open_len, &CLOSE_TAGS) {
            Some((close, close_len)) => at = close + close_len,
            None => {
                at = text.len();
                break;
            }
        }
    }
    visible.push_str(&text[at..]);
    Stripped {
        visible,
        had_reasoning,
        opened_implicitly,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterState {
    /// Nothing visible yet (leading whitespace is dropped, so `\n<think>` counts as a start).
    Start,
    Visible,
    Thinking,
}

/// What one delta adds to the visible answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilteredDelta {
    /// Text to show (may be empty).
    pub visible: String,
    /// Whether the model is (still) thinking after this delta.
    pub thinking: bool,
}

/// Strips reasoning from a stream of text deltas, so thoughts are never emitted even when a tag
/// is split across deltas.
#[derive(Debug, Clone)]
pub struct ThinkFilter {
    state: FilterState,
    /// Bytes held back: a possible partial tag at the end of the last delta.
    pending: String,
    saw_reasoning: bool,
    /// Started inside a thought the model never opens (see [`ThinkFilter::opened_implicitly`])
    /// and no closing tag has come yet: the text so far is held in `hidden`, shown at the end if
    /// the model did not think this time after all.
    implicit: bool,
    hidden: String,
}

impl Default for ThinkFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl ThinkFilter {
    pub fn new() -> Self {
        Self {
            state: FilterState::Start,
            pending: String::new(),
            saw_reasoning: false,
            implicit: false,
            hidden: String::new(),
        }
    }

    /// A filter for a model whose chat template opens the thought in the prompt (its text starts
    /// inside `<think>` and only `</think>` arrives): everything up to the first closing tag is a
    /// thought. If none comes, the held text is the answer and [`ThinkFilter::finish`] returns it.
    pub fn opened_implicitly() -> Self {
        Self {
            state: FilterState::Thinking,
            implicit: true,
            ..Self::new()
        }
    }

    /// Whether any reasoning went through the filter.
    pub fn saw_reasoning(&self) -> bool {
        self.saw_reasoning
    }

    /// Feeds one delta; returns the visible text it adds.
    pub fn push(&mut self, delta: &str) -> FilteredDelta {
        let mut buf = std::mem::take(&mut self.pending);
        buf.push_str(delta);
        let mut out = String::new();
        loop {
            let lower = buf.to_ascii_lowercase();
            match self.state {
                FilterState::Thinking => match find_tag(&lower, 0, &CLOSE_TAGS) {
                    Some((close, len)) => {
                        buf.drain(..close + len);
                        self.state = FilterState::Start;
                        if std::mem::take(&mut self.implicit) {
                            self.hidden.clear();
                            self.saw_reasoning = true;
                        }
                    }
                    None => {
                        let keep = partial_tag_suffix(&lower, &CLOSE_TAGS);
                        if self.implicit {
                            self.hidden.push_str(&buf[..buf.len() - keep]);
                        }
                        self.pending = buf[buf.len() - keep..].to_owned();
                        break;
                    }
                },
                FilterState::Start | FilterState::Visible => {
                    if self.state == FilterState::Start {
                        let trimmed = buf.trim_start().len();
                        buf.drain(..buf.len() - trimmed);
                        if buf.is_empty() {
                            break;
                        }
                        continue_visible_check(&mut self.state, &buf);
                    }
                    let lower = buf.to_ascii_lowercase();
                    match find_tag(&lower, 0, &OPEN_TAGS) {
                        Some((open, len)) => {
                            out.push_str(&buf[..open]);
                            buf.drain(..open + len);
                            self.state = FilterState::Thinking;
                            self.saw_reasoning = true;
                        }
                        None => {
                            let keep = partial_tag_suffix(&lower, &OPEN_TAGS);
                            out.push_str(&buf[..buf.len() - keep]);
                            self.pending = buf[buf.len() - keep..].to_owned();
                            break;
                        }
                    }
                }
            }
        }
        if !out.is_empty() && self.state == FilterState::Start {
            self.state = FilterState::Visible;
        }
        FilteredDelta {
            visible: out,
            thinking: self.state == FilterState::Thinking,
        }
    }

    /// Ends the stream: a held-back partial tag outside a thought was just text.
    pub fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.implicit) {
            // No closing tag came: the model answered without thinking.
            self.state = FilterState::Visible;
            let held = std::mem::take(&mut self.hidden) + &pending;
            return strip_reasoning(&held).visible.trim_start().to_owned();
        }
        match self.state {
            FilterState::Thinking => String::new(),
            FilterState::Start => pending.trim_start().to_owned(),
            FilterState::Visible => pending,
        }
    }
}

/// Leaves `Start` once something other than a (possible) opening tag begins the text.
fn continue_visible_check(state: &mut FilterState, buf: &str) {
    let lower = buf.to_ascii_lowercase();
    let tag_like = OPEN_TAGS
        .iter()
        .any(|tag| lower.starts_with(tag) || tag.starts_with(lower.as_str()));
    if !tag_like {
        *state = FilterState::Visible;
    }
}

/// Length of the longest suffix of `lower` that is a proper prefix of one of `tags`.
fn partial_tag_suffix(lower: &str, tags: &[&str]) -> usize {
    let longest = tags.iter().map(|tag| tag.len() - 1).max().unwrap_or(0);
    (1..=longest.min(lower.len()))
        .rev()
        .find(|&len| {
            let start = lower.len() - len;
            lower.is_char_boundary(start) && tags.iter().any(|tag| tag.starts_with(&lower[start..]))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(text: &str) -> (String, bool) {
        let stripped = strip_reasoning(text);
        (stripped.visible, stripped.had_reasoning)
    }

    #[test]
    fn whole_texts() {
        assert_eq!(strip("答えなのだ"), ("答えなのだ".into(), false));
        assert_eq!(
            strip("<think>考える</think>\n答えなのだ"),
            ("\n答えなのだ".into(), true)
        );
        assert_eq!(
            strip("<THINK>a</Think>b<think>c</think>d"),
            ("bd".into(), true)
        );
        assert_eq!(strip("<thinking>a</thinking>答え"), ("答え".into(), true));
        assert_eq!(strip("<think>終わらない考え"), (String::new(), true));
        assert_eq!(strip("前置き<think>考え"), ("前置き".into(), true));
        // The template opened the block: only the closing tag arrives.
        assert_eq!(
            strip("考えている…</think>答えなのだ"),
            ("答えなのだ".into(), true)
        );
        assert_eq!(strip("</think>"), (String::new(), true));
        assert_eq!(strip("a < think > b"), ("a < think > b".into(), false));
        assert_eq!(strip(""), (String::new(), false));
    }

    /// Feeds `text` to a filter in pieces of `size` bytes (on char boundaries).
    fn stream(text: &str, size: usize) -> (String, bool) {
        stream_with(ThinkFilter::new(), text, size).0
    }

    /// `text` through `filter` in pieces of `size` bytes: (visible, saw reasoning), and the
    /// visible text shown before the stream ended.
    fn stream_with(mut filter: ThinkFilter, text: &str, size: usize) -> ((String, bool), String) {
        let mut out = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = size.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            out.push_str(&filter.push(&rest[..cut]).visible);
            rest = &rest[cut..];
        }
        let before_end = out.clone();
        out.push_str(&filter.finish());
        ((out, filter.saw_reasoning()), before_end)
    }

    #[test]
    fn a_template_opened_thought_is_never_shown_and_a_plain_answer_still_is() {
        let cases = [
            // The model's text starts inside the thought; only the closing tag arrives.
            (
                "秘密の考え</think>\n\n答えなのだ",
                "答えなのだ",
                "答えなのだ",
                true,
            ),
            (
                "秘密</THINK>答え<think>また秘密</think>なのだ",
                "答えなのだ",
                "答えなのだ",
                true,
            ),
            // This time it did not think: nothing is shown until the end, then all of it.
            ("普通の答えなのだ", "普通の答えなのだ", "", false),
        ];
        for (text, visible, streamed, reasoning) in cases {
            for size in 1..=text.len() {
                let ((out, saw), before_end) =
                    stream_with(ThinkFilter::opened_implicitly(), text, size);
                assert_eq!(out, visible, "{text:?} in pieces of {size}");
                assert_eq!(before_end, streamed, "{text:?} in pieces of {size}");
                assert!(!out.contains("秘密"), "{text:?} in pieces of {size}");
                assert_eq!(saw, reasoning, "{text:?} in pieces of {size}");
            }
        }
        assert!(strip_reasoning("考え</think>答え").opened_implicitly);
        assert!(!strip_reasoning("<think>考え</think>答え").opened_implicitly);
        assert!(!strip_reasoning("答え").opened_implicitly);
    }

    #[test]
    fn streams_in_any_split_hide_thoughts() {
        let cases = [
            (
                "<think>秘密の考え</think>\n\n答えなのだ",
                "答えなのだ",
                true,
            ),
            (
                "\n<think>秘密</think>答え<think>また秘密</think>なのだ",
                "答えなのだ",
                true,
            ),
            ("普通の答えなのだ", "普通の答えなのだ", false),
            ("<think>終わらない秘密", "", true),
            ("a <b> <thin c", "a <b> <thin c", false),
            ("<", "<", false),
            ("<THINKING>秘密</THINKING>のだ", "のだ", true),
        ];
        for (text, visible, reasoning) in cases {
            for size in 1..=text.len() {
                let (out, saw) = stream(text, size);
                assert_eq!(out, visible, "{text:?} in pieces of {size}");
                assert!(!out.contains("秘密"), "{text:?} in pieces of {size}");
                assert_eq!(saw, reasoning, "{text:?} in pieces of {size}");
            }
        }
    }

    #[test]
    fn the_filter_says_when_it_is_thinking() {
        let mut filter = ThinkFilter::new();
        assert!(filter.push("<think>").thinking);
        let delta = filter.push("まだ考え中");
        assert!(delta.thinking);
        assert!(delta.visible.is_empty());
        let delta = filter.push("</think>答え");
        assert!(!delta.thinking);
        assert_eq!(delta.visible, "答え");
    }
}
