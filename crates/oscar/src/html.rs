//! AIM message HTML: reduced to safe plain text on the way in (tags dropped, entities decoded,
//! controls removed), escaped on the way out.

/// Reduces AIM HTML (`<HTML><BODY>…</BODY></HTML>`, `<FONT>`, `<BR>`…) to plain text. Text that
/// only looks like markup (`a < b`, a lone `&`) is kept as written.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                if let Some((tag, after)) = take_tag(rest) {
                    let name = tag_name(tag);
                    let breaks = name == "br" || name == "/p" || (name == "p" && !out.is_empty());
                    if breaks {
                        out.push('\n');
                    }
                    rest = after;
                } else {
                    out.push('<');
                    rest = &rest[1..];
                }
            }
            '&' => {
                if let Some((ch, after)) = take_entity(rest) {
                    push_clean(&mut out, ch);
                    rest = after;
                } else {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
            _ => {
                push_clean(&mut out, c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out.trim_end_matches('\n').to_string()
}

fn push_clean(out: &mut String, c: char) {
    if c == '\n' || c == '\t' || !c.is_control() {
        if c == '\u{a0}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

/// A tag is `<` followed by a letter, `/` or `!`, up to the next `>`.
fn take_tag(s: &str) -> Option<(&str, &str)> {
    let second = s[1..].chars().next()?;
    if !(second.is_ascii_alphabetic() || second == '/' || second == '!') {
        return None;
    }
    let end = s.find('>')?;
    Some((&s[1..end], &s[end + 1..]))
}

fn tag_name(tag: &str) -> String {
    tag.split(|c: char| c.is_whitespace() || c == '>')
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

fn take_entity(s: &str) -> Option<(char, &str)> {
    let end = s
        .char_indices()
        .take(12)
        .find(|(_, c)| *c == ';')
        .map(|(i, _)| i)?;
    let name = &s[1..end];
    let ch = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = if let Some(hex) = num.strip_prefix(['x', 'X']) {
                u32::from_str_radix(hex, 16).ok()?
            } else {
                num.parse::<u32>().ok()?
            };
            char::from_u32(code)?
        }
    };
    Some((ch, &s[end + 1..]))
}

/// Escapes plain text for an AIM client: `& < > "` as entities, newlines as `<BR>`.
pub fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<BR>"),
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aim_html_becomes_plain_text() {
        assert_eq!(
            html_to_text(
                "<HTML><BODY><FONT COLOR=\"#000000\">Tom & Jerry &lt;3</FONT></BODY></HTML>"
            ),
            "Tom & Jerry <3"
        );
        assert_eq!(html_to_text("one<BR>two<br/>three"), "one\ntwo\nthree");
        assert_eq!(html_to_text("a < b &amp;&#65;&#x42;"), "a < b &AB");
        assert_eq!(html_to_text("<b>x</b>\u{0}\u{7}y"), "xy");
        assert_eq!(html_to_text("&bogus; &#xD800; &"), "&bogus; &#xD800; &");
    }

    #[test]
    fn text_is_escaped_for_clients() {
        assert_eq!(
            text_to_html("a<b & \"c\"\nd"),
            "a&lt;b &amp; &quot;c&quot;<BR>d"
        );
        let t = "x <y> & z\nw";
        assert_eq!(html_to_text(&text_to_html(t)), t);
    }

    proptest::proptest! {
        #[test]
        fn html_never_panics_and_escape_round_trips(s in "\\PC{0,60}") {
            let _ = html_to_text(&s);
            let clean: String = s.chars().filter(|c| !c.is_control() && *c != '\u{a0}').collect();
            let clean = clean.trim_end_matches('\n').to_string();
            proptest::prop_assert_eq!(html_to_text(&text_to_html(&clean)), clean);
        }
    }
}
