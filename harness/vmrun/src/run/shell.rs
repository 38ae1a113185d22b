//! `--shell` on the host's side: which shell the guest runs, and the terminal size it
//! starts with.

use crate::job::TermSize;
use std::ffi::OsString;

/// The guest's command for `--shell`: bash if the host (the guest's root) has it, else sh.
pub fn shell_command(path_var: Option<&std::ffi::OsStr>) -> Vec<OsString> {
    let bash = crate::init::resolve_command("bash".as_ref(), path_var).is_some();
    vec![if bash { "bash" } else { "sh" }.into()]
}

/// The size of the terminal on our stdin, if it is one.
pub(super) fn terminal_size() -> TermSize {
    // SAFETY: TIOCGWINSZ only fills the struct we hand it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            return TermSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            };
        }
    }
    TermSize::default()
}
