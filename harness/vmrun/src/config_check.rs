//! Checks that a kernel `.config` holds every option the fragments ask for.
//!
//! Kconfig silently drops an option whose dependencies are not met, so a fragment that
//! asks for `CONFIG_KPROBES=y` without `CONFIG_MODULES=y` yields a kernel without kprobes
//! and no error. This check names every such option.

use std::collections::HashMap;

/// What a fragment or a `.config` says of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// `CONFIG_X=value` (value as written, quotes kept).
    Value(String),
    /// `# CONFIG_X is not set`.
    Unset,
}

/// Parses `.config` syntax into (name, setting) pairs, in order. Other lines are ignored.
pub fn parse(text: &str) -> Vec<(String, Setting)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") {
                    out.push((name.to_string(), Setting::Unset));
                }
            }
        } else if line.starts_with("CONFIG_") {
            if let Some((name, value)) = line.split_once('=') {
                out.push((name.to_string(), Setting::Value(value.to_string())));
            }
        }
    }
    out
}

/// One option the fragments ask for that the `.config` does not give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    pub wanted: Setting,
    pub got: Setting,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |s: &Setting| match s {
            Setting::Value(v) => v.clone(),
            Setting::Unset => "not set".to_string(),
        };
        write!(
            f,
            "{}: wanted {}, .config has {}",
            self.name,
            show(&self.wanted),
            show(&self.got)
        )
    }
}

/// Compares what the fragments want (later fragments override earlier ones) with `.config`.
pub fn check(config: &str, fragments: &[&str]) -> Vec<Mismatch> {
    let have: HashMap<String, Setting> = parse(config).into_iter().collect();
    let mut wanted: Vec<(String, Setting)> = Vec::new();
    for frag in fragments {
        for (name, setting) in parse(frag) {
            wanted.retain(|(n, _)| *n != name);
            wanted.push((name, setting));
        }
    }
    wanted
        .into_iter()
        .filter_map(|(name, want)| {
            let got = have.get(&name).cloned().unwrap_or(Setting::Unset);
            let same = match (&want, &got) {
                // "=n" in a fragment means the same as "is not set".
                (Setting::Value(v), Setting::Unset) => v == "n",
                (w, g) => w == g,
            };
            (!same).then_some(Mismatch {
                name,
                wanted: want,
                got,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
#
# Automatically generated file; DO NOT EDIT.
CONFIG_64BIT=y
CONFIG_MODULES=y
# CONFIG_KPROBES is not set
CONFIG_NR_CPUS=8
CONFIG_LOCALVERSION=\"-ublkzc\"
";

    #[test]
    fn satisfied_fragment_has_no_mismatch() {
        let frag = "CONFIG_64BIT=y\nCONFIG_NR_CPUS=8\n# comment\nCONFIG_LOCALVERSION=\"-ublkzc\"\n";
        assert_eq!(check(CONFIG, &[frag]), vec![]);
    }

    #[test]
    fn dropped_option_is_named() {
        let got = check(CONFIG, &["CONFIG_KPROBES=y\nCONFIG_BLK_DEV_UBLK=y\n"]);
        let names: Vec<_> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["CONFIG_KPROBES", "CONFIG_BLK_DEV_UBLK"]);
        assert_eq!(
            got[0].to_string(),
            "CONFIG_KPROBES: wanted y, .config has not set"
        );
    }

    #[test]
    fn wrong_value_is_a_mismatch() {
        let got = check(CONFIG, &["CONFIG_NR_CPUS=64\n"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].got, Setting::Value("8".into()));
    }

    #[test]
    fn unset_and_n_are_the_same() {
        assert_eq!(check(CONFIG, &["CONFIG_KPROBES=n\n"]), vec![]);
        assert_eq!(check(CONFIG, &["# CONFIG_KPROBES is not set\n"]), vec![]);
        assert_eq!(check(CONFIG, &["# CONFIG_MODULES is not set\n"]).len(), 1);
    }

    #[test]
    fn later_fragment_overrides_earlier() {
        let got = check(CONFIG, &["CONFIG_NR_CPUS=64\n", "CONFIG_NR_CPUS=8\n"]);
        assert_eq!(got, vec![]);
    }
}
