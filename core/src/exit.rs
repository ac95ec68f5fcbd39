//! How fleet's command-line tools end: one line per error, never a debug dump, and quietly when
//! the reader went away (`fleetctl catalog | head`).

use std::error::Error;
use std::process::ExitCode;

/// The error and each cause its message does not already quote, joined by ": ".
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        cause = c.source();
    }
    msg
}

/// Whether the error, or any cause, is a closed pipe on output.
pub fn is_broken_pipe(e: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Exit status for a command's result: 0, or the error on one line of stderr and 2. Takes
/// `anyhow::Result<()>` (binaries' edge) without core depending on anyhow.
pub fn finish<E: AsRef<dyn Error + Send + Sync + 'static>>(result: Result<(), E>) -> ExitCode {
    let Err(e) = result else { return ExitCode::SUCCESS };
    let e: &(dyn Error + 'static) = e.as_ref();
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    // Error texts may quote what a server or an agent said: no control character reaches the
    // terminal (an ESC made inert cannot start a sequence). A newline stays only where it starts
    // an indented line of a list (a spec's problems, one per line); any other is a space, so a
    // quoted text cannot print a line of its own.
    let msg = one_line(e);
    let mut text = String::with_capacity(msg.len());
    let mut chars = msg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' if chars.peek() == Some(&' ') => text.push('\n'),
            '\n' | '\r' | '\t' => text.push(' '),
            c if c.is_control() => text.push('\u{fffd}'),
            c => text.push(c),
        }
    }
    eprintln!("error: {text}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("loading catalog: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("loading catalog")]
    struct Wrapping(#[source] std::io::Error);

    #[test]
    fn causes_once_each() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(one_line(&Quoting(io())), "loading catalog: no such file");
        assert_eq!(one_line(&Wrapping(io())), "loading catalog: no such file");
        assert!(!is_broken_pipe(&Wrapping(io())));
        assert!(is_broken_pipe(&Wrapping(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))));
    }
}
