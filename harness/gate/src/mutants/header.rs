//! A mutant's header: the `# FIELD: value` lines of `patches/mutants/NAME.patch`, with
//! continuation lines (`#` and two or more spaces) that belong to the field above them,
//! and the listings made from them (`--list`, `--list-markdown`).

use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The default time limit of a check's test executable, in seconds (`# timeout:`).
pub const DEFAULT_TIMEOUT: u64 = 240;

/// What a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `ublk-suite --label patched ARGS` on the mutant kernel.
    Suite,
    /// `ublk-suite --label debug ARGS` on the mutant debug kernel.
    Debug,
    /// `splice-transcript`, compared with the unmutated series' transcript.
    Transcript,
    /// `cargo test -p ublk --test uapi_header` against the mutant tree's installed headers.
    Uapi,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Suite, Kind::Debug, Kind::Transcript, Kind::Uapi];

    pub fn parse(word: &str) -> Option<Kind> {
        match word {
            "suite" => Some(Kind::Suite),
            "debug" => Some(Kind::Debug),
            "transcript" => Some(Kind::Transcript),
            "uapi" => Some(Kind::Uapi),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Suite => "suite",
            Kind::Debug => "debug",
            Kind::Transcript => "transcript",
            Kind::Uapi => "uapi",
        }
    }

    /// What the check needs built: the kernel it boots, or the installed headers.
    pub fn flavor(self) -> Flavor {
        match self {
            Kind::Debug => Flavor::Debug,
            Kind::Uapi => Flavor::Headers,
            Kind::Suite | Kind::Transcript => Flavor::Patched,
        }
    }
}

/// What is built of the series plus a mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flavor {
    /// The patched kernel (bzImage).
    Patched,
    /// The debug kernel (KASAN, lockdep; bzImage).
    Debug,
    /// `make headers_install` only (an include directory).
    Headers,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Patched => "patched",
            Flavor::Debug => "debug",
            Flavor::Headers => "uapi",
        }
    }
}

/// A check: its kind and its arguments (`# check: suite --suite ublk_zc FILTER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: Kind,
    pub args: Vec<String>,
}

impl Check {
    pub fn parse(text: &str) -> Result<Check> {
        let mut words = text.split_whitespace();
        let Some(first) = words.next() else {
            bail!("an empty check");
        };
        let kind = Kind::parse(first).with_context(|| {
            format!("unknown check kind '{first}' (suite, debug, transcript or uapi)")
        })?;
        let args: Vec<String> = words.map(str::to_string).collect();
        if matches!(kind, Kind::Transcript | Kind::Uapi) && !args.is_empty() {
            bail!("the check '{}' takes no arguments", kind.name());
        }
        Ok(Check { kind, args })
    }

    /// The arguments as one line.
    pub fn args_text(&self) -> String {
        self.args.join(" ")
    }
}

/// The header fields of one file, as the lines of the file.
#[derive(Debug, Clone)]
pub struct Header {
    lines: Vec<String>,
}

impl Header {
    pub fn parse(text: &str) -> Header {
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        if lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        Header { lines }
    }

    /// The first `# NAME: value` line's value (the blanks after the colon dropped), if any.
    pub fn field(&self, name: &str) -> Option<&str> {
        let prefix = format!("# {name}:");
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim_start_matches(' '))
    }

    /// A field's value with its continuation lines joined by one blank each; the last
    /// occurrence of the field counts. Empty when the field is missing.
    pub fn field_long(&self, name: &str) -> String {
        let prefix = format!("# {name}:");
        let mut value = String::new();
        let mut on = false;
        for l in &self.lines {
            if let Some(v) = l.strip_prefix(&prefix) {
                on = true;
                value = v.to_string();
            } else if on && is_continuation(l) {
                value.push(' ');
                value.push_str(l[1..].trim_start_matches(' '));
            } else {
                on = false;
            }
        }
        value.trim_start_matches(' ').to_string()
    }
}

/// `#` and at least two blanks: the rest of the field above.
fn is_continuation(line: &str) -> bool {
    line.strip_prefix("#  ").is_some()
}

/// One mutant: a patch file of patches/mutants and what its header says.
#[derive(Debug, Clone)]
pub struct Mutant {
    pub name: String,
    pub path: PathBuf,
    /// The `# check:` line as written.
    pub check_text: String,
    pub check: Check,
    /// `# timeout:` in seconds, or [`DEFAULT_TIMEOUT`].
    pub timeout: u64,
    /// `# mutant:`, what it breaks (continuation lines joined).
    pub what: String,
    /// `# known-survivor:`, why no test can catch it (continuation lines joined).
    pub known_survivor: Option<String>,
    /// `# new in v3:`, the point of the revision whose fix it puts back.
    pub new_in_v3: Option<String>,
    /// The patch's bytes (its hash keys the caches).
    pub patch: Vec<u8>,
}

impl Mutant {
    /// Reads one mutant from its patch's bytes; `name` is the file name without `.patch`.
    pub fn parse(name: &str, path: &Path, patch: Vec<u8>) -> Result<Mutant> {
        let text = String::from_utf8_lossy(&patch).into_owned();
        let h = Header::parse(&text);
        let check_text = h
            .field("check")
            .filter(|c| !c.is_empty())
            .with_context(|| format!("{} has no '# check:' line", path.display()))?
            .to_string();
        let check = Check::parse(&check_text)
            .with_context(|| format!("{}: '# check: {check_text}'", path.display()))?;
        let timeout = match h.field("timeout").filter(|t| !t.is_empty()) {
            None => DEFAULT_TIMEOUT,
            Some(t) => t.trim_end().parse().with_context(|| {
                format!(
                    "{}: '# timeout: {t}' is not a number of seconds",
                    path.display()
                )
            })?,
        };
        let known_survivor = h
            .field("known-survivor")
            .filter(|s| !s.is_empty())
            .map(|_| h.field_long("known-survivor"));
        Ok(Mutant {
            name: name.to_string(),
            path: path.to_path_buf(),
            check_text,
            check,
            timeout,
            what: h.field_long("mutant"),
            known_survivor,
            new_in_v3: h
                .field("new in v3")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            patch,
        })
    }

    pub fn is_survivor(&self) -> bool {
        self.known_survivor.is_some()
    }

    /// The number of the patch it breaks: `3` for `p3-...`.
    pub fn patch_number(&self) -> &str {
        let n = self.name.split('-').next().unwrap_or(&self.name);
        n.strip_prefix('p').unwrap_or(n)
    }
}

/// Every mutant of a directory (`*.patch`), sorted by name as bytes.
pub fn load_dir(dir: &Path) -> Result<Vec<Mutant>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut mutants = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".patch")) else {
            continue;
        };
        let path = e.path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        mutants.push(Mutant::parse(name, &path, bytes)?);
    }
    if mutants.is_empty() {
        bail!("no mutants in {}", dir.display());
    }
    mutants.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(mutants)
}

/// `--list`: each mutant, what it breaks, its check and, for a known survivor, why.
pub fn list_text(mutants: &[Mutant]) -> String {
    let mut out = String::new();
    for m in mutants {
        let _ = writeln!(out, "{:<24} {}", m.name, m.what);
        let _ = writeln!(out, "{:<24}   check: {}", "", m.check_text);
        if let Some(why) = &m.known_survivor {
            let _ = writeln!(out, "{:<24}   known survivor: {why}", "");
        }
    }
    out
}

/// A markdown table cell: `|` escaped, "no" when empty.
fn cell(s: &str) -> String {
    match s {
        "" => "no".to_string(),
        s => s.replace('|', "\\|"),
    }
}

/// `--list-markdown`: the table of docs/mutants.md, from the headers alone. The patch is
/// the name's: `p3-` breaks 3/N.
pub fn list_markdown(mutants: &[Mutant]) -> String {
    let mut out = String::from(
        "| mutant | patch | breaks | check | known survivor |\n|---|---|---|---|---|\n",
    );
    for m in mutants {
        let new = match &m.new_in_v3 {
            Some(n) => format!(" (new in v3: {})", n.split(' ').next().unwrap_or(n)),
            None => String::new(),
        };
        let survivor = match &m.known_survivor {
            Some(why) if !why.is_empty() => format!("yes: {why}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| `{}`{new} | {} | {} | `{}` | {} |",
            m.name,
            m.patch_number(),
            cell(&m.what),
            cell(&m.check_text),
            cell(&survivor)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# mutant: the first line
#         and its continuation
#   and another
# new in v3: M2 (the fill cap)
# breaks: \"a rule\"
#         (patch 4)
# check: suite --suite ublk_zc one two
# timeout: 120
diff --git a/x b/x
--- a/x
+++ b/x
@@ -1 +1 @@
-#  not a header line
+# check: not this one either
";

    fn mutant(name: &str, text: &str) -> Result<Mutant> {
        Mutant::parse(
            name,
            Path::new(&format!("/m/{name}.patch")),
            text.as_bytes().to_vec(),
        )
    }

    #[test]
    fn fields_and_continuations() {
        let h = Header::parse(SAMPLE);
        assert_eq!(h.field("timeout"), Some("120"));
        assert_eq!(h.field("new in v3"), Some("M2 (the fill cap)"));
        assert_eq!(h.field("mutant"), Some("the first line"));
        assert_eq!(
            h.field_long("mutant"),
            "the first line and its continuation and another"
        );
        assert_eq!(h.field_long("breaks"), "\"a rule\" (patch 4)");
        assert_eq!(h.field("known-survivor"), None);
        assert_eq!(h.field_long("known-survivor"), "");
        // The first check line counts; a diff line never starts with "# ".
        assert_eq!(h.field("check"), Some("suite --suite ublk_zc one two"));
    }

    #[test]
    fn a_field_line_ends_the_continuation_of_the_one_above() {
        let h = Header::parse("# mutant: a\n#   b\n# check: uapi\n#   c\n# mutant2: d\n");
        assert_eq!(h.field_long("mutant"), "a b");
        assert_eq!(h.field_long("check"), "uapi c");
        // "# x" with one blank is no continuation
        let h = Header::parse("# mutant: a\n# b\n#   c\n");
        assert_eq!(h.field_long("mutant"), "a");
    }

    #[test]
    fn blanks_after_the_colon_and_trailing_ones() {
        let h = Header::parse("# check:    transcript  \n# mutant:\n#    x\n");
        assert_eq!(h.field("check"), Some("transcript  "));
        assert_eq!(h.field_long("mutant"), "x");
    }

    #[test]
    fn a_mutant_from_its_header() {
        let m = mutant("p4-fill-cap", SAMPLE).unwrap();
        assert_eq!(m.check.kind, Kind::Suite);
        assert_eq!(m.check.args, ["--suite", "ublk_zc", "one", "two"]);
        assert_eq!(m.check_text, "suite --suite ublk_zc one two");
        assert_eq!(m.timeout, 120);
        assert_eq!(m.new_in_v3.as_deref(), Some("M2 (the fill cap)"));
        assert!(!m.is_survivor());
        assert_eq!(m.patch_number(), "4");
    }

    #[test]
    fn defaults_and_survivors() {
        let m = mutant(
            "p1-x",
            "# mutant: m\n# known-survivor: an equivalent mutant:\n#      nothing tells\n# check: debug --suite s t\n",
        )
        .unwrap();
        assert_eq!(m.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            m.known_survivor.as_deref(),
            Some("an equivalent mutant: nothing tells")
        );
        assert_eq!(m.check.kind.flavor(), Flavor::Debug);
    }

    #[test]
    fn bad_headers_are_refused() {
        let e = mutant("p1-x", "# mutant: m\n").unwrap_err();
        assert!(format!("{e:#}").contains("has no '# check:' line"), "{e:#}");
        let e = mutant("p1-x", "# check: bogus x\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown check kind 'bogus'"),
            "{e:#}"
        );
        let e = mutant("p1-x", "# check: transcript x\n").unwrap_err();
        assert!(format!("{e:#}").contains("takes no arguments"), "{e:#}");
        let e = mutant("p1-x", "# check: uapi\n# timeout: soon\n").unwrap_err();
        assert!(format!("{e:#}").contains("not a number"), "{e:#}");
        // An empty known-survivor line is no reason.
        let m = mutant("p1-x", "# check: uapi\n# known-survivor:\n").unwrap();
        assert!(!m.is_survivor());
    }

    #[test]
    fn listings() {
        let a = mutant("p2-a", "# mutant: breaks | this\n# check: transcript\n").unwrap();
        let b = mutant(
            "p3-bb",
            "# mutant: m\n# new in v3: L7 more\n# known-survivor: why\n#   not\n# check: uapi\n",
        )
        .unwrap();
        let ms = [a, b];
        assert_eq!(
            list_text(&ms),
            "p2-a                     breaks | this\n\
             \x20                          check: transcript\n\
             p3-bb                    m\n\
             \x20                          check: uapi\n\
             \x20                          known survivor: why not\n"
        );
        assert_eq!(
            list_markdown(&ms),
            "| mutant | patch | breaks | check | known survivor |\n|---|---|---|---|---|\n\
             | `p2-a` | 2 | breaks \\| this | `transcript` | no |\n\
             | `p3-bb` (new in v3: L7) | 3 | m | `uapi` | yes: why not |\n"
        );
    }

    fn repo_mutants() -> Vec<Mutant> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches/mutants");
        load_dir(&dir).unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn every_mutant_of_the_repository_parses() {
        let ms = repo_mutants();
        assert!(ms.len() >= 30, "only {} mutants", ms.len());
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for m in &ms {
            assert!(!m.what.is_empty(), "{}: no '# mutant:' text", m.name);
            assert!(
                m.name.starts_with('p') && m.patch_number().parse::<u32>().is_ok(),
                "{}: not named pN-WHAT",
                m.name
            );
            let h = Header::parse(&String::from_utf8_lossy(&m.patch));
            assert!(
                !h.field_long("breaks").is_empty(),
                "{}: no '# breaks:'",
                m.name
            );
            // Each has a check to run, and a known survivor says why nothing catches it.
            match (&m.known_survivor, m.check.kind) {
                (Some(why), _) => assert!(why.len() > 20, "{}: a reason of {why:?}", m.name),
                (None, Kind::Suite | Kind::Debug) => assert!(
                    m.check.args.iter().any(|a| a == "--suite"),
                    "{}: a suite check names its test executable",
                    m.name
                ),
                (None, Kind::Transcript | Kind::Uapi) => {}
            }
            assert!(m.timeout > 0, "{}", m.name);
        }
        assert!(ms.iter().any(|m| m.is_survivor()));
    }
}
