//! The 「参考」 line that ends an answer which used web search: at most three links, each in
//! `<…>` so Discord shows no preview, taken only from the URLs the search tool returned in this
//! turn. The model cannot put a link there: a line of its own in that place is removed first.
//! The line is for the reader only; the channel's window keeps the answer without it.

/// How the sources line starts.
pub const SOURCES_PREFIX: &str = "参考:";
/// Links in the line at most.
const MAX_SOURCES: usize = 3;

/// The sources line for an answer, citing first the returned URLs the answer mentions, then the
/// others in the order the search returned them; `None` without usable URLs.
pub fn sources_line(returned: &[String], answer: &str) -> Option<String> {
    let usable: Vec<&str> = returned
        .iter()
        .map(String::as_str)
        .filter(|url| is_citable(url))
        .collect();
    let mut chosen: Vec<&str> = Vec::new();
    let mentioned = usable.iter().filter(|url| answer.contains(**url));
    for url in mentioned.chain(usable.iter()) {
        if chosen.len() == MAX_SOURCES {
            break;
        }
        if !chosen.contains(url) {
            chosen.push(url);
        }
    }
    if chosen.is_empty() {
        return None;
    }
    let links: Vec<String> = chosen.iter().map(|url| format!("<{url}>")).collect();
    Some(format!("{SOURCES_PREFIX} {}", links.join(" ")))
}

/// An http(s) URL that cannot break out of `<…>` or the line.
fn is_citable(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 300
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '`'))
}

/// `text` without a trailing sources line (and the blank lines before it).
pub fn strip_sources(text: &str) -> &str {
    let trimmed = text.trim_end();
    match trimmed.rsplit_once('\n') {
        Some((before, last)) if last.trim_start().starts_with(SOURCES_PREFIX) => before.trim_end(),
        None if trimmed.trim_start().starts_with(SOURCES_PREFIX) => "",
        _ => text,
    }
}

/// The answer as users see it: the model's text (without a sources line of its own) and ours.
pub fn with_sources(answer: &str, line: Option<&str>) -> String {
    match line {
        Some(line) => format!("{}\n\n{line}", strip_sources(answer)),
        None => strip_sources(answer).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn at_most_three_links_mentioned_ones_first() {
        let returned = urls(&[
            "https://a.example/",
            "https://b.example/",
            "https://c.example/",
            "https://d.example/",
        ]);
        let line = sources_line(&returned, "詳しくは https://d.example/ を見るのだ").unwrap();
        assert_eq!(
            line,
            "参考: <https://d.example/> <https://a.example/> <https://b.example/>"
        );
        assert_eq!(sources_line(&[], "x"), None);
    }

    #[test]
    fn only_safe_urls_are_cited() {
        let returned = urls(&[
            "javascript:alert(1)",
            "https://x.example/a b",
            "https://x.example/>evil",
            "https://ok.example/",
        ]);
        assert_eq!(
            sources_line(&returned, "").unwrap(),
            "参考: <https://ok.example/>"
        );
    }

    #[test]
    fn the_models_own_sources_line_is_replaced() {
        let answer = "答えなのだ。\n\n参考: <https://invented.example/>";
        assert_eq!(
            with_sources(answer, Some("参考: <https://real.example/>")),
            "答えなのだ。\n\n参考: <https://real.example/>"
        );
        assert_eq!(with_sources(answer, None), "答えなのだ。");
        assert_eq!(strip_sources("答えなのだ。"), "答えなのだ。");
        assert_eq!(strip_sources("参考: <https://x/>"), "");
    }
}
