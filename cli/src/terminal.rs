//! What fleetctl prints comes partly from machines it does not trust: agents' logs and health
//! reasons, names in records any agent token may write. A terminal obeys escape sequences in what
//! it is given (move the cursor, retitle the window, rewrite lines already shown, on some
//! terminals far worse), so every line fleetctl prints goes through [`printable`] first.

/// `s` with terminal control sequences removed and any other control character shown as `�`;
/// newlines and tabs are kept.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            // ESC: drop the whole sequence it starts.
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // A two-character sequence (ESC c resets the terminal, ESC 7 …): both go.
                Some(_) | None => {}
            },
            // C1 CSI and OSC introducers: some terminals honour them as ESC [ and ESC ].
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_control_characters_never_reach_the_terminal() {
        assert_eq!(printable("plain line\twith tab\n"), "plain line\twith tab\n");
        assert_eq!(printable("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(printable("\u{1b}[2J\u{1b}[1;1Hcleared"), "cleared");
        assert_eq!(printable("\u{1b}]0;owned title\u{7}after"), "after");
        assert_eq!(printable("\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\"), "link");
        assert_eq!(printable("\u{1b}cpartial"), "partial");
        assert_eq!(printable("done\rFAKE OK"), "done\u{fffd}FAKE OK");
        assert_eq!(printable("bell\u{7} and \u{9b}31m C1"), "bell\u{fffd} and \u{fffd}31m C1");
        assert_eq!(printable("é H100 ✓"), "é H100 ✓");
        assert_eq!(printable("trailing \u{1b}"), "trailing ");
    }
}
