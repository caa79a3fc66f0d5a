//! Splitting a long answer into Discord-sized messages.
//!
//! Discord caps message `content` at 2000 characters, counted so that an emoji or other
//! character outside the Basic Multilingual Plane may count twice; counting UTF-16 code units is
//! the safe reading, so `limit` here is in UTF-16 code units.
//!
//! A cut is placed, in order of preference, after a newline, after a sentence end
//! (`。！？．` anywhere, `.!?` only when followed by whitespace), after whitespace, or between any
//! two grapheme clusters, so a flag, a ZWJ emoji sequence or a letter with its accents is never torn
//! apart. A preferred break that would leave the part less than half full is passed over for a
//! lesser one, so a stray early newline does not double the number of messages.
//!
//! Markdown code fences (lines starting with three or more backticks) stay balanced: a part cut
//! inside a fence ends with a closing fence line and the next part reopens it with the same
//! backticks and info string (` ```rust `). Those extra lines count against the limit.
//!
//! Only whitespace at a cut may be dropped (trailing whitespace of a part, and outside code blocks
//! the blank lines or spaces that would start the next part); no other text is lost.

use unicode_segmentation::UnicodeSegmentation;

/// Splits `text` into parts of at most `limit` UTF-16 code units each (see the module docs for
/// where it cuts).
///
/// A text that already fits is returned unchanged as the only part. An empty text (or one made
/// only of whitespace that must be split) yields no parts at all, so callers never send an empty
/// message. The limit is exceeded in a single case: a lone character longer than `limit` (an
/// astral character with `limit` < 2) is put in a part of its own, so that splitting always makes
/// progress. A grapheme cluster longer than the limit (e.g. hundreds of stacked combining marks)
/// is cut between its characters, since the size limit is Discord's hard rule.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    plan(text, limit)
        .into_iter()
        .map(|piece| piece.render(text))
        .collect()
}

/// A run of backticks that opened a code block, with its info string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fence<'a> {
    ticks: &'a str,
    info: &'a str,
}

impl Fence<'_> {
    /// UTF-16 length of the line that reopens the block at the start of a part.
    fn open_units(&self) -> usize {
        utf16_len(self.ticks) + utf16_len(self.info) + 1
    }

    /// UTF-16 length of the line that closes the block at the end of a part.
    fn close_units(&self) -> usize {
        1 + utf16_len(self.ticks)
    }
}

/// One part to send: the original text `start..end`, plus fence lines added around it.
#[derive(Clone, Copy, Debug)]
struct Piece<'a> {
    start: usize,
    end: usize,
    reopen: Option<Fence<'a>>,
    close: Option<Fence<'a>>,
}

impl Piece<'_> {
    fn render(&self, text: &str) -> String {
        let mut out = String::new();
        if let Some(fence) = self.reopen {
            out.push_str(fence.ticks);
            out.push_str(fence.info);
            out.push('\n');
        }
        out.push_str(&text[self.start..self.end]);
        if let Some(fence) = self.close {
            out.push('\n');
            out.push_str(fence.ticks);
        }
        out
    }
}

/// The kinds of break, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    Grapheme = 0,
    Whitespace = 1,
    Sentence = 2,
    Newline = 3,
}

/// A line of the text and the code-fence state it starts in.
#[derive(Debug)]
struct Line<'a> {
    start: usize,
    /// The fence open when this line starts.
    fence_before: Option<Fence<'a>>,
    /// Whether this line opens (`Some(true)`) or closes (`Some(false)`) a fence.
    marker: Option<bool>,
}

/// Where each code fence opens and closes, line by line.
struct Fences<'a> {
    lines: Vec<Line<'a>>,
}

impl<'a> Fences<'a> {
    fn scan(text: &'a str) -> Self {
        let mut lines = Vec::new();
        let mut open: Option<Fence<'a>> = None;
        let mut start = 0;
        for raw in text.split_inclusive('\n') {
            let content = raw.trim_end_matches(['\n', '\r']);
            let indented = content.trim_start_matches(' ');
            let tick_count = indented.bytes().take_while(|&b| b == b'`').count();
            let after = indented[tick_count..].trim();
            let marker = match open {
                None if tick_count >= 3 && !after.contains('`') => Some(true),
                Some(fence) if tick_count >= fence.ticks.len() && after.is_empty() => Some(false),
                _ => None,
            };
            lines.push(Line {
                start,
                fence_before: open,
                marker,
            });
            match marker {
                Some(true) => {
                    open = Some(Fence {
                        ticks: &indented[..tick_count],
                        info: after,
                    });
                }
                Some(false) => open = None,
                None => {}
            }
            start += raw.len();
        }
        Self { lines }
    }

    fn line_at(&self, pos: usize) -> Option<(usize, &Line<'a>)> {
        let index = self.lines.partition_point(|line| line.start <= pos);
        index.checked_sub(1).map(|i| (i, &self.lines[i]))
    }

    /// The fence a part starting (or ending) at `pos` is inside of.
    fn at(&self, pos: usize) -> Option<Fence<'a>> {
        self.line_at(pos).and_then(|(_, line)| line.fence_before)
    }

    /// Whether cutting at `pos` is tolerable: never inside a fence line itself, and preferably
    /// neither right after an opening fence nor right before a closing one (that would leave an
    /// empty code block behind).
    fn cut_allowed(&self, pos: usize) -> bool {
        let Some((index, line)) = self.line_at(pos) else {
            return true;
        };
        if pos > line.start {
            return line.marker.is_none();
        }
        let after_opener = index > 0 && self.lines[index - 1].marker == Some(true);
        let before_closer = line.marker == Some(false);
        !(after_opener || before_closer)
    }

    /// Where the text after a cut at `pos` should resume: outside code blocks, blank lines (and,
    /// for a mid-line cut, spaces) would only start the next message with whitespace.
    fn resume_at(&self, text: &str, pos: usize) -> usize {
        if self.at(pos).is_some() {
            return pos;
        }
        let rest = &text[pos..];
        let blank = rest.len() - rest.trim_start().len();
        let mid_line = pos > 0 && !text[..pos].ends_with('\n');
        let skip = if mid_line {
            blank
        } else {
            rest[..blank].rfind('\n').map_or(0, |i| i + 1)
        };
        let next = pos + skip;
        // A grapheme may begin with whitespace (a space carrying a combining mark): never resume
        // inside one.
        let mut resume = pos;
        for (offset, grapheme) in text[pos..].grapheme_indices(true) {
            let end = pos + offset + grapheme.len();
            if end > next {
                break;
            }
            resume = end;
        }
        resume
    }
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

fn is_full_width_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '．' | '｡')
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?') || is_full_width_terminator(c)
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '」' | '』' | '）' | ')' | '】' | '〕' | '〉' | '》' | '"' | '\'' | '”' | '’' | '］' | ']'
    )
}

/// What kind of break a cut at `pos` (just after the grapheme `prev`) would be.
fn classify(text: &str, pos: usize, prev: &str) -> Break {
    if prev.ends_with('\n') {
        return Break::Newline;
    }
    let before = &text[..pos];
    if prev.chars().all(char::is_whitespace) {
        let sentence = before
            .trim_end_matches(|c: char| c.is_whitespace() && c != '\n')
            .trim_end_matches(is_closer);
        return if sentence.ends_with(is_terminator) {
            Break::Sentence
        } else {
            Break::Whitespace
        };
    }
    // Full-width sentence ends need no space after them, but do not cut inside `！？」`.
    let next = text[pos..].chars().next();
    if next.is_some_and(|c| is_closer(c) || is_terminator(c)) {
        return Break::Grapheme;
    }
    if before
        .trim_end_matches(is_closer)
        .ends_with(is_full_width_terminator)
    {
        Break::Sentence
    } else {
        Break::Grapheme
    }
}

/// Keeps fence decoration only when it leaves most of the part for text.
fn decorated(fence: Option<Fence<'_>>, limit: usize) -> Option<Fence<'_>> {
    fence.filter(|f| (f.open_units() + f.close_units()) * 2 <= limit)
}

/// Decides the parts as ranges of `text` plus fence lines.
fn plan(text: &str, limit: usize) -> Vec<Piece<'_>> {
    if text.is_empty() {
        return Vec::new();
    }
    if utf16_len(text) <= limit {
        return vec![Piece {
            start: 0,
            end: text.len(),
            reopen: None,
            close: None,
        }];
    }

    let fences = Fences::scan(text);
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let reopen = decorated(fences.at(pos), limit);
        let budget = limit.saturating_sub(reopen.map_or(0, |f| f.open_units()));
        let rest = &text[pos..];
        if utf16_len(rest) <= budget {
            if !rest.trim().is_empty() {
                pieces.push(Piece {
                    start: pos,
                    end: pos + rest.trim_end().len(),
                    reopen,
                    close: None,
                });
            }
            break;
        }

        let (cut, close) = choose_cut(text, pos, budget, limit, &fences);
        let body_end = pos + text[pos..cut].trim_end().len();
        if body_end > pos {
            pieces.push(Piece {
                start: pos,
                end: body_end,
                reopen,
                close,
            });
        }
        pos = fences.resume_at(text, cut);
    }
    pieces
}

/// Picks where the part starting at `pos` ends, and the fence to close there (if any).
fn choose_cut<'a>(
    text: &'a str,
    pos: usize,
    budget: usize,
    limit: usize,
    fences: &Fences<'a>,
) -> (usize, Option<Fence<'a>>) {
    // Latest acceptable cut for each kind of break: (position, units used, fence to close).
    let mut best: [Option<(usize, usize, Option<Fence<'a>>)>; 4] = [None; 4];
    let mut latest_any = None;
    let mut used = 0;
    for (offset, grapheme) in text[pos..].grapheme_indices(true) {
        used += utf16_len(grapheme);
        if used > budget {
            break;
        }
        let cut = pos + offset + grapheme.len();
        if cut >= text.len() {
            break;
        }
        let close = decorated(fences.at(cut), limit);
        if used + close.map_or(0, |f| f.close_units()) > budget {
            continue;
        }
        latest_any = Some((cut, close));
        if fences.cut_allowed(cut) {
            let kind = classify(text, cut, grapheme);
            best[kind as usize] = Some((cut, used, close));
        }
    }

    for kind in [Break::Newline, Break::Sentence, Break::Whitespace] {
        if let Some((cut, used, close)) = best[kind as usize] {
            if used * 2 >= budget {
                return (cut, close);
            }
        }
    }
    if let Some((cut, _, close)) = best[Break::Grapheme as usize] {
        return (cut, close);
    }
    // Only early breaks are allowed: take the latest.
    if let Some((cut, _, close)) = best.iter().flatten().max_by_key(|(cut, ..)| *cut) {
        return (*cut, *close);
    }
    if let Some(found) = latest_any {
        return found;
    }
    // Not even one grapheme fits: cut between characters, taking at least one.
    let mut cut = pos;
    let mut units = 0;
    for c in text[pos..].chars() {
        units += c.len_utf16();
        if units > budget && cut > pos {
            break;
        }
        cut += c.len_utf8();
    }
    (cut, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISCORD: usize = 2000;

    fn units(s: &str) -> usize {
        s.encode_utf16().count()
    }

    fn open_at_end(s: &str) -> bool {
        Fences::scan(s)
            .lines
            .last()
            .is_some_and(|line| match line.marker {
                Some(opens) => opens,
                None => line.fence_before.is_some(),
            })
    }

    fn strip_ws(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// Checks every guarantee of `split_message` for one input.
    fn check(text: &str, limit: usize) -> Vec<String> {
        let pieces = plan(text, limit);
        let parts = split_message(text, limit);
        assert_eq!(pieces.len(), parts.len());

        for part in &parts {
            assert!(
                units(part) <= limit,
                "part of {} units > {limit}: {part:?}",
                units(part)
            );
            assert!(!part.trim().is_empty(), "empty part");
        }

        // Nothing but whitespace is dropped between the pieces.
        let mut last = 0;
        for piece in &pieces {
            assert!(piece.start >= last, "pieces overlap");
            assert!(
                text[last..piece.start].trim().is_empty(),
                "text dropped: {:?}",
                &text[last..piece.start]
            );
            last = piece.end;
        }
        assert!(text[last..].trim().is_empty(), "tail dropped");
        let bodies: String = pieces.iter().map(|p| &text[p.start..p.end]).collect();
        assert_eq!(strip_ws(&bodies), strip_ws(text));

        // Never inside a grapheme cluster (all clusters here fit in the limit).
        let boundaries: Vec<usize> = text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        for piece in &pieces {
            assert!(
                boundaries.binary_search(&piece.start).is_ok(),
                "split grapheme"
            );
            assert!(
                boundaries.binary_search(&piece.end).is_ok(),
                "split grapheme"
            );
        }

        // Code fences stay balanced: only the last part may end inside a block, and only if the
        // text itself does.
        for (i, part) in parts.iter().enumerate() {
            let expected = i + 1 == parts.len() && open_at_end(text);
            assert_eq!(open_at_end(part), expected, "fence left open: {part:?}");
        }
        parts
    }

    #[test]
    fn empty_text_gives_no_parts() {
        assert!(split_message("", DISCORD).is_empty());
    }

    #[test]
    fn short_text_is_returned_unchanged() {
        let text = "  ずんだもんなのだ！\n\n```rust\nfn main() {}\n";
        assert_eq!(split_message(text, DISCORD), vec![text.to_string()]);
    }

    #[test]
    fn exact_limit_text_is_one_part() {
        // 1998 units of ASCII plus one astral emoji (2 units) = exactly 2000.
        let text = format!("{}😀", "a".repeat(1998));
        assert_eq!(units(&text), DISCORD);
        assert_eq!(split_message(&text, DISCORD), vec![text.clone()]);

        let over = format!("{text}b");
        let parts = check(&over, DISCORD);
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn five_thousand_japanese_characters_cut_at_sentence_ends() {
        let sentence = "ずんだもんはずんだ餅の妖精で、とても元気に質問へ答えるのだ。";
        let mut text = String::new();
        while text.chars().count() < 5000 {
            text.push_str(sentence);
        }
        let parts = check(&text, DISCORD);
        assert_eq!(parts.len(), 3);
        for part in &parts {
            assert!(part.ends_with('。'), "not cut at a sentence end: …{}", {
                let tail: String = part.chars().rev().take(10).collect();
                tail.chars().rev().collect::<String>()
            });
            assert!(part.starts_with("ずんだもん"));
        }
    }

    #[test]
    fn prefers_newline_then_sentence_then_whitespace() {
        let limit = 100;
        let para = format!(
            "{}\n{}",
            "x".repeat(60),
            "Hello there. General Kenobi. ".repeat(5)
        );
        let parts = check(&para, limit);
        assert_eq!(parts[0], "x".repeat(60));

        let sentences = "The bot answers. It can search the web too. ".repeat(5);
        let parts = check(&sentences, limit);
        assert!(parts[0].ends_with('.'), "{:?}", parts[0]);

        let words = "word ".repeat(40);
        let parts = check(&words, limit);
        assert!(
            parts.iter().all(|p| p.split(' ').all(|w| w == "word")),
            "{parts:?}"
        );

        // A decimal point is not a sentence end.
        let numbers = "pi is 3.14159 and e is 2.71828 ".repeat(6);
        let parts = check(&numbers, limit);
        assert!(parts
            .iter()
            .all(|p| !p.ends_with("3.") && !p.ends_with("2.")));
    }

    #[test]
    fn an_early_break_is_passed_over_for_a_fuller_part() {
        let text = format!("ok\n{}", "word ".repeat(60));
        let parts = check(&text, 100);
        assert!(units(&parts[0]) > 50, "{:?}", parts[0]);
    }

    #[test]
    fn emoji_sequences_and_flags_are_never_split() {
        let family = "👨\u{200d}👩\u{200d}👧\u{200d}👦"; // 11 units
        let flag = "🇯🇵"; // 4 units
        let thumbs = "👍🏽"; // 4 units
        for pad in 1985..2000 {
            let text = format!(
                "{}{family}{flag}{thumbs}{}",
                "a".repeat(pad),
                "b".repeat(100)
            );
            let parts = check(&text, DISCORD);
            let joined: String = parts.concat();
            assert!(joined.contains(family));
            assert!(joined.contains(flag));
            assert!(joined.contains(thumbs));
        }
        // Emoji only, no spaces at all.
        let text = format!("{family}{flag}").repeat(200);
        let parts = check(&text, DISCORD);
        for part in &parts {
            let graphemes: Vec<&str> = part.graphemes(true).collect();
            assert!(graphemes.iter().all(|g| *g == family || *g == flag));
        }
    }

    #[test]
    fn single_line_without_breaks_is_cut_at_the_limit() {
        let text = "a".repeat(4500);
        let parts = check(&text, DISCORD);
        let lens: Vec<usize> = parts.iter().map(|p| units(p)).collect();
        assert_eq!(lens, vec![2000, 2000, 500]);
    }

    #[test]
    fn long_code_block_is_closed_and_reopened() {
        let mut text = String::from("Here is the code:\n\n```rust\n");
        for i in 0..300 {
            text.push_str(&format!("    let value_{i} = compute({i}); // step {i}\n"));
        }
        text.push_str("```\nThat is all.");
        let parts = check(&text, DISCORD);
        assert!(parts.len() >= 6, "{}", parts.len());
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if i > 0 {
                assert!(part.starts_with("```rust\n    let value_"), "{part:.40}");
            }
            if !last {
                assert!(part.ends_with("\n```"), "part {i} does not close");
            }
            assert_eq!(part.matches("```").count() % 2, 0, "part {i} unbalanced");
            // Indentation inside the block survives the cut.
            for line in part.lines().filter(|l| l.contains("let value_")) {
                assert!(line.starts_with("    let"), "{line:?}");
            }
        }
        assert!(parts.last().unwrap().ends_with("That is all."));
    }

    #[test]
    fn fence_with_more_backticks_and_no_info_is_reopened_identically() {
        let mut text = String::from("````\n");
        text.push_str(&"line ```not a fence```\n".repeat(20));
        text.push_str("````\n");
        let parts = check(&text, 120);
        assert!(parts.len() > 1);
        for part in &parts[1..] {
            assert!(part.starts_with("````\n"), "{part:?}");
        }
        for part in &parts[..parts.len() - 1] {
            assert!(part.ends_with("\n````"), "{part:?}");
        }
    }

    #[test]
    fn no_empty_code_block_is_left_at_a_cut() {
        // The last newline that fits follows the opening fence: cut before the fence instead.
        let text = format!("{}\n```rust\nlet a = 1;\n```\n", "x".repeat(80));
        let parts = check(&text, 100);
        assert_eq!(parts[0], "x".repeat(80));
        assert!(parts[1].starts_with("```rust\nlet a = 1;"));

        // Nor does a part reopen a block only to close it at once.
        let text = format!("```\n{}\n```\nafter the block", "y".repeat(88));
        let parts = check(&text, 100);
        assert!(parts.iter().all(|p| !p.contains("```\n```")), "{parts:?}");
    }

    #[test]
    fn oversized_grapheme_is_cut_between_characters() {
        let zalgo = format!("a{}", "\u{301}".repeat(50));
        let parts = split_message(&zalgo, 20);
        assert!(parts.iter().all(|p| units(p) <= 20));
        assert_eq!(parts.concat(), zalgo);
    }

    #[test]
    fn whitespace_only_text_that_must_be_split_gives_no_parts() {
        assert!(split_message(&" ".repeat(30), 10).is_empty());
    }

    /// Pseudo-random mixes of everything above, over many limits.
    #[test]
    fn mixed_text_keeps_every_guarantee() {
        let pieces = [
            "ずんだもんなのだ。",
            "Hello world. ",
            "word ",
            "\n",
            "\n\n",
            "👨\u{200d}👩\u{200d}👧",
            "🇯🇵",
            "「本当？」",
            "e\u{301}",
            "\n```py\nprint('hi')\n",
            "    indented code\n",
            "\n```\n",
            "x",
        ];
        let mut seed: u64 = 0x5eed;
        let mut reopened = 0;
        for round in 0..300 {
            let mut text = String::new();
            let len = 20 + round % 200;
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            for limit in [40, 64, 100, 333] {
                reopened += check(&text, limit)
                    .iter()
                    .skip(1)
                    .filter(|part| part.starts_with("```py\n"))
                    .count();
            }
        }
        assert!(reopened > 100, "fences were rarely cut: {reopened}");
    }
}
