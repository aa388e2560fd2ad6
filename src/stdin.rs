//! Reading standard input line by line on a plain thread, for the server's
//! operator console and the chat's pipe mode alike. A pending tokio stdin
//! read would hold up runtime shutdown; a detached thread does not.

use std::io::BufRead;
use std::ops::ControlFlow;

/// Read stdin on a thread named `name`, handing each line (without its line
/// ending; bytes that are not UTF-8 are replaced) to `on_line` until it breaks,
/// then `on_end(true)` if input ended (EOF or a read error) or `on_end(false)`
/// if `on_line` stopped it. Fails only if the thread cannot be started.
pub(crate) fn spawn_lines(
    name: &str,
    mut on_line: impl FnMut(String) -> ControlFlow<()> + Send + 'static,
    on_end: impl FnOnce(bool) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match stdin.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                if on_line(line.to_owned()).is_break() {
                    return on_end(false);
                }
            }
            on_end(true)
        })
        .map(drop)
}
