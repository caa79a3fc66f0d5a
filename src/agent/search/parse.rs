//! The DuckDuckGo results page parser: organic results, their real links (unwrapped from
//! DuckDuckGo's redirects), and the ads and other engines' pages to skip.

use scraper::{ElementRef, Html, Selector};

use super::SearchResult;

/// Extracts up to `max` organic results from a DuckDuckGo HTML results page, skipping ads.
pub fn parse_results(html: &str, max: usize) -> Vec<SearchResult> {
    let document = Html::parse_document(html);
    let bodies = selector(".result__body");
    let results = selector(".result");
    let title_link = selector("a.result__a");
    let snippet = selector(".result__snippet");

    let mut blocks: Vec<ElementRef> = document.select(&bodies).collect();
    if blocks.is_empty() {
        blocks = document.select(&results).collect();
    }
    let mut found: Vec<SearchResult> = Vec::new();
    for block in blocks {
        if found.len() >= max {
            break;
        }
        if is_ad(block) || is_no_result(block) {
            continue;
        }
        let Some(link) = block.select(&title_link).next() else {
            continue;
        };
        let Some(url) = link.attr("href").and_then(unwrap_link) else {
            continue;
        };
        let title = clean_text(link);
        if title.is_empty() || found.iter().any(|seen| seen.url == url) {
            continue;
        }
        let snippet = block
            .select(&snippet)
            .next()
            .map(clean_text)
            .unwrap_or_default();
        found.push(SearchResult {
            title,
            url,
            snippet,
        });
    }
    found
}

/// The target of a result link: DuckDuckGo redirects (`//duckduckgo.com/l/?uddg=…`, absolute or
/// relative) are unwrapped; ads (judged by the target, see [`is_ad_target`]), another engine's
/// search page (DuckDuckGo's "no results" page links to a Google search for the query) and
/// non-web schemes give `None`.
pub fn unwrap_link(href: &str) -> Option<String> {
    let base = url::Url::parse("https://duckduckgo.com/").expect("static URL");
    let url = base.join(href.trim()).ok()?;
    let target = if is_on(&url, "duckduckgo.com") && url.path() == "/l/" {
        let (_, target) = url.query_pairs().find(|(key, _)| key == "uddg")?;
        url::Url::parse(&target).ok()?
    } else {
        url
    };
    let usable = matches!(target.scheme(), "http" | "https")
        && !is_ad_target(&target)
        && !is_other_engines_search(&target);
    usable.then(|| target.to_string())
}

/// Whether `url` is on `domain` or one of its subdomains.
fn is_on(url: &url::Url, domain: &str) -> bool {
    url.host_str().is_some_and(|host| {
        host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// Whether a link's (unwrapped) target is an ad: DuckDuckGo's ad click URL (`/y.js`), Bing's
/// (`/aclick`, which DuckDuckGo's ads go through), or any URL carrying DuckDuckGo's ad
/// parameters.
fn is_ad_target(target: &url::Url) -> bool {
    (is_on(target, "duckduckgo.com") && target.path() == "/y.js")
        || (is_on(target, "bing.com") && target.path().starts_with("/aclick"))
        || target
            .query_pairs()
            .any(|(key, _)| matches!(&*key, "ad_domain" | "ad_provider" | "ad_type"))
}

/// Whether a link's target is another search engine's results page: what DuckDuckGo's "no
/// results" page shows as its only "result".
fn is_other_engines_search(target: &url::Url) -> bool {
    let host = target.host_str().unwrap_or_default();
    let google =
        host == "google.com" || host.starts_with("google.") || host.starts_with("www.google.");
    google && target.path().starts_with("/search")
}

/// Whether a block is DuckDuckGo's "no results" notice dressed as a result.
fn is_no_result(block: ElementRef) -> bool {
    let marked = std::iter::once(*block)
        .chain(block.ancestors())
        .filter_map(ElementRef::wrap)
        .any(|element| {
            element
                .value()
                .classes()
                .any(|class| class == "result--no-result")
        });
    marked || block.select(&selector(".no-results")).next().is_some()
}

fn is_ad(block: ElementRef) -> bool {
    std::iter::once(*block)
        .chain(block.ancestors())
        .filter_map(ElementRef::wrap)
        .any(|element| {
            element
                .value()
                .classes()
                .any(|class| class == "result--ad" || class == "badge--ad")
        })
}

/// The element's text with whitespace runs collapsed. Text nodes are joined as they are, so
/// `<b>ずんだ</b>餅` stays one word.
fn clean_text(element: ElementRef) -> String {
    let text: String = element.text().collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("static CSS selector")
}
