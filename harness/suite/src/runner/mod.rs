//! The `ublk-suite` runner: runs libtest executables, reads their plain output and
//! reports the results as TAP and JUnit XML.

pub mod exec;
pub mod libtest;
pub mod report;

/// How one test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
}

/// One test's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    /// The test executable's target name, e.g. `splice_direct`.
    pub suite: String,
    /// The test's path within it, e.g. `direct_data_lands_at_offsets::case_1`.
    pub name: String,
    pub outcome: Outcome,
    /// Why it failed (the test's captured output), or why it was ignored.
    pub message: String,
}

impl TestResult {
    /// `suite::name`.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.suite, self.name)
    }
}

/// The target name of a test executable built by cargo: `splice_direct-0123456789abcdef`
/// is `splice_direct`.
pub fn suite_name(exe: &std::path::Path) -> String {
    let file = exe
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn suite_names() {
        assert_eq!(
            suite_name(Path::new("/t/deps/splice_direct-0123456789abcdef")),
            "splice_direct"
        );
        assert_eq!(
            suite_name(Path::new("/t/deps/ublk-zc-0123456789abcdef")),
            "ublk-zc"
        );
        assert_eq!(suite_name(Path::new("/t/my-test")), "my-test");
    }
}
