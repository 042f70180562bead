//! Credentials out of text: a broker URL's user info, and anything that looks like one inside a
//! message that quotes the config (a TOML parse error shows the offending line; serde quotes the
//! value it refused). One place, so every message and log line redacts the same way.

/// `url` with any user info (`user:password@`) replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    // The last '@' ends the user info; a password may hold '/', so do not stop at a path.
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// `text` with whatever precedes each `@` of a line, back to the line's last `://` before it (a
/// password may hold quotes and spaces) or else to the start of its word, replaced by `***`.
/// Over-redacts (an e-mail address loses its local part) rather than miss a password.
pub fn redact_userinfo_in(text: &str) -> String {
    text.split_inclusive('\n').map(redact_line).collect()
}

fn redact_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut done = 0;
    for (at, _) in line.match_indices('@') {
        let start = userinfo_start(&line[..at]).max(done);
        out.push_str(&line[done..start]);
        // Two '@' of one user info (`mqtt://a@b@host`) give one `***`.
        if start < at && !(start == done && out.ends_with("***")) {
            out.push_str("***");
        }
        done = at;
    }
    out.push_str(&line[done..]);
    out
}

/// Where the user info ending at the end of `before` starts.
fn userinfo_start(before: &str) -> usize {
    match before.rfind("://") {
        Some(i) => i + 3,
        None => before.rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '=' | '`' | '(' | '[')).map_or(0, |i| i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_user_info_and_keeps_the_rest() {
        assert_eq!(redact_url("mqtt://user:secret@host:1883"), "mqtt://***@host:1883");
        assert_eq!(redact_url("mqtts://u:se/cr@et@broker"), "mqtts://***@broker");
        assert_eq!(redact_url("user:secret@host"), "***@host");
        assert_eq!(redact_url("mqtt://host:1883"), "mqtt://host:1883");
    }

    #[test]
    fn a_quoted_config_line_loses_the_password_even_with_quotes_and_spaces_in_it() {
        let toml_error = "TOML parse error at line 5, column 30\n  |\n5 | url = \"mqtt://u:se cr\\\"et@host\" x\n  |          ^\n";
        let redacted = redact_userinfo_in(toml_error);
        assert_eq!(redacted, toml_error.replace("u:se cr\\\"et", "***"));
    }

    #[test]
    fn user_info_without_a_scheme_is_redacted_to_the_start_of_its_word() {
        assert_eq!(redact_userinfo_in("invalid type: string \"u:pw@h\", expected u8"), "invalid type: string \"***@h\", expected u8");
        assert_eq!(redact_userinfo_in("a = u:pw@h, b = mqtt://x:y@z@w"), "a = ***@h, b = mqtt://***@w");
        assert_eq!(redact_userinfo_in("x = \"u:pw@h\" y = \"mqtt://a@b\""), "x = \"***@h\" y = \"mqtt://***@b\"");
    }

    #[test]
    fn text_without_an_at_sign_is_unchanged_line_by_line() {
        let text = "line one\nmqtt://host:1883\n\nlast";
        assert_eq!(redact_userinfo_in(text), text);
    }
}
