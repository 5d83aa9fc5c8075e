//! Emails and job keys wrap where a reader expects: an email after its `@`
//! only; a key before a `.` and after a `:`, `-`, `_` or `/`, keeping a
//! rehearsal's `dry-run` whole; never in the middle of a word
//! (`operator@example.co|m`). The text is cut at those places with `<wbr>`;
//! the CSS (`.wrap`) breaks inside a part only when one part alone is
//! wider than its box.

use leptos::prelude::*;

/// `text` cut where a line may break, in order; joined, the parts are `text`.
pub fn break_parts(text: &str) -> Vec<&str> {
    let email = text.contains('@');
    let mut parts = Vec::new();
    let mut start = 0;
    for (index, c) in text.char_indices() {
        // A key breaks before a dot (`backfill|.2024`) and after the others
        // (`users:|`); an email only after its `@`.
        let cut = match c {
            '@' => Some(index + 1),
            _ if email => None,
            '.' if index > start => Some(index),
            '-' if text[..index].ends_with(":dry") => None,
            ':' | '-' | '_' | '/' => Some(index + c.len_utf8()),
            _ => None,
        };
        if let Some(cut) = cut.filter(|&cut| cut > start && cut < text.len()) {
            parts.push(&text[start..cut]);
            start = cut;
        }
    }
    if start < text.len() || parts.is_empty() {
        parts.push(&text[start..]);
    }
    parts
}

/// `text` with a line-break opportunity at each sensible place.
#[component]
pub fn Wrapped(#[prop(into)] text: String) -> impl IntoView {
    let parts: Vec<String> = break_parts(&text).into_iter().map(str::to_string).collect();
    view! {
        <span class="wrap">
            {parts
                .into_iter()
                .enumerate()
                .map(|(index, part)| view! { {(index > 0).then(|| view! { <wbr /> })} {part} })
                .collect_view()}
        </span>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_keys_break_between_words_only() {
        assert_eq!(
            break_parts("operator@example.com"),
            ["operator@", "example.com"]
        );
        assert_eq!(
            break_parts("first.last-name@example.co.uk"),
            ["first.last-name@", "example.co.uk"]
        );
        assert_eq!(
            break_parts("identity-graph-users:dry-run"),
            ["identity-", "graph-", "users:", "dry-run"]
        );
        assert_eq!(break_parts("backfill.2024"), ["backfill", ".2024"]);
        assert_eq!(break_parts("plain"), ["plain"]);
        assert_eq!(break_parts(""), [""]);
        assert_eq!(break_parts(".hidden"), [".hidden"]);
        assert_eq!(break_parts("trailing-"), ["trailing-"]);
        for text in ["a@b.c", "x:y-z_w/v.u", "ünï@cödé.de"] {
            assert_eq!(break_parts(text).concat(), text);
        }
    }
}
