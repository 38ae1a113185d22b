//! The map of the harness (`gate map`): its crates, which workspace crates each depends
//! on, and its top-level modules with the modules and crates each one imports.
//! docs/harness.md keeps it between two markers, and a host test fails when the two
//! differ, so the map cannot go stale.
//!
//! It is read from the sources alone: a crate's `[dependencies]` lines with a `path`, and
//! in each module's files the paths `crate::NAME` and `WORKSPACE_CRATE::` that they
//! name (a binary's `OWN_CRATE::NAME` is a module of its own library). The crates'
//! integration tests (`harness/*/tests/`) are not in the map. Comments are skipped; a path that is only named in a string is counted, which
//! the harness does not do.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const BEGIN: &str = "<!-- harness-map:begin -->";
pub const END: &str = "<!-- harness-map:end -->";

/// One crate of harness/.
#[derive(Debug, PartialEq, Eq)]
pub struct Krate {
    /// The package name (Cargo.toml's `name`).
    pub package: String,
    /// The name Rust code uses for it (`-` as `_`, or `[lib] name`).
    pub ident: String,
    pub dir: PathBuf,
    /// Packages of the workspace it depends on (not dev-dependencies).
    pub deps: Vec<String>,
    /// Top-level module name → the crate's modules and the workspace crates it names.
    pub modules: BTreeMap<String, Imports>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imports {
    pub modules: BTreeSet<String>,
    pub crates: BTreeSet<String>,
}

/// The crates under `top/harness`, sorted by package name.
pub fn read(top: &Path) -> Result<Vec<Krate>> {
    let harness = top.join("harness");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&harness)
        .with_context(|| format!("reading {}", harness.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    let mut krates = Vec::new();
    for dir in dirs {
        let manifest = dir.join("Cargo.toml");
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let (package, ident, deps) =
            manifest_facts(&text).with_context(|| format!("reading {}", manifest.display()))?;
        krates.push(Krate {
            package,
            ident,
            dir,
            deps,
            modules: BTreeMap::new(),
        });
    }
    let idents: BTreeMap<String, String> = krates
        .iter()
        .map(|k| (k.ident.clone(), k.package.clone()))
        .collect();
    for k in &mut krates {
        k.modules = modules(&k.dir.join("src"), &k.ident, &idents)?;
    }
    krates.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(krates)
}

/// The package name, the name code uses, and the path dependencies of a Cargo.toml.
fn manifest_facts(text: &str) -> Result<(String, String, Vec<String>)> {
    let mut section = String::new();
    let mut package = None;
    let mut lib_name = None;
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match section.as_str() {
            "package" if key == "name" => package = Some(value.trim_matches('"').to_string()),
            "lib" if key == "name" => lib_name = Some(value.trim_matches('"').to_string()),
            "dependencies" if value.contains("path") => deps.push(key.to_string()),
            _ => {}
        }
    }
    let Some(package) = package else {
        bail!("no [package] name");
    };
    let ident = lib_name.unwrap_or_else(|| package.replace('-', "_"));
    deps.sort();
    Ok((package, ident, deps))
}

/// The top-level modules of a crate's src/ (a binary's file counts as one, `bin/NAME`)
/// and what their files import.
fn modules(
    src: &Path,
    own: &str,
    idents: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Imports>> {
    let mut out: BTreeMap<String, Imports> = BTreeMap::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let name = module_name(rel);
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let imports = out.entry(name.clone()).or_default();
        scan(&text, own, idents, imports);
        imports.modules.remove(&name);
    }
    Ok(out)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `lib.rs`/`main.rs` → `(root)`, `bin/x.rs` → `bin/x`, `a.rs`, `a/mod.rs`, `a/b.rs` → `a`.
fn module_name(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => "(root)".to_string(),
        [bin, name, ..] if bin == "bin" => format!("bin/{name}"),
        [first, ..] => first.clone(),
        [] => "(root)".to_string(),
    }
}

/// Adds the `crate::NAME` modules (also inside `crate::{a, b::c}` groups, over several
/// lines) and the workspace crates that `text` names.
fn scan(text: &str, own: &str, idents: &BTreeMap<String, String>, imports: &mut Imports) {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (i, _) in code.match_indices("::") {
        let before = &code[..i];
        let start = before.rfind(|c: char| !is_ident(c)).map_or(0, |p| p + 1);
        let word = &before[start..];
        // A segment after `::` or `.` is not the first segment of a path.
        let lead = before[..start].trim_end();
        if lead.ends_with("::") || lead.ends_with('.') {
            continue;
        }
        // A binary names its own library's modules by the crate's name.
        if word == "crate" || word == own {
            crate_modules(&code[i + 2..], &mut imports.modules);
        } else {
            if let Some(package) = idents.get(word) {
                imports.crates.insert(package.clone());
            }
        }
    }
}

/// The first segments of what follows `crate::`: one name, or each item of a group.
fn crate_modules(rest: &str, out: &mut BTreeSet<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut add = |name: &str| {
        if name.starts_with(|c: char| c.is_ascii_lowercase()) && name != "self" {
            out.insert(name.to_string());
        }
    };
    let rest = rest.trim_start();
    if !rest.starts_with('{') {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        add(&rest[..end]);
        return;
    }
    let (mut depth, mut item_start) = (0usize, true);
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                depth += 1;
                item_start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if c.is_whitespace() => {}
            c if is_ident(c) && item_start => {
                let end = rest[i..]
                    .find(|c: char| !is_ident(c))
                    .map_or(rest.len(), |e| i + e);
                add(&rest[i..end]);
                item_start = false;
                while chars.peek().is_some_and(|&(j, _)| j < end) {
                    chars.next();
                }
            }
            _ => item_start = false,
        }
    }
}

/// The map as markdown: a table of crates, then one table of modules per crate.
pub fn markdown(krates: &[Krate]) -> String {
    let mut s = String::new();
    s.push_str("| crate | directory | depends on (workspace) |\n|---|---|---|\n");
    for k in krates {
        let dir = k
            .dir
            .file_name()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        s.push_str(&format!(
            "| `{}` | `harness/{}` | {} |\n",
            k.package,
            dir,
            list(k.deps.iter())
        ));
    }
    for k in krates {
        s.push_str(&format!(
            "\n### `{}`\n\n| module | imports modules | uses crates |\n|---|---|---|\n",
            k.package
        ));
        for (name, imp) in &k.modules {
            s.push_str(&format!(
                "| `{}` | {} | {} |\n",
                name,
                list(imp.modules.iter()),
                list(imp.crates.iter())
            ));
        }
    }
    s
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = items.map(|i| format!("`{i}`")).collect();
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(", ")
    }
}

/// The text between the markers of a document (without the blank lines around it).
pub fn region(doc: &str) -> Result<&str> {
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("the markers {BEGIN} and {END} are not both there");
    };
    if doc.matches(BEGIN).count() != 1 || doc.matches(END).count() != 1 || e < b {
        bail!("each marker must be there once, {BEGIN} first");
    }
    Ok(doc[b + BEGIN.len()..e].trim_matches('\n'))
}

/// `doc` with the map between its markers replaced by `map`.
pub fn update(doc: &str, map: &str) -> Result<String> {
    let old = region(doc)?;
    let b = doc.find(BEGIN).map_or(0, |b| b + BEGIN.len());
    let e = doc.find(END).unwrap_or(doc.len());
    let _ = old;
    Ok(format!(
        "{}\n\n{}\n\n{}",
        &doc[..b],
        map.trim_end_matches('\n'),
        &doc[e..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents() -> BTreeMap<String, String> {
        [
            ("ublk", "ublk"),
            ("vmrun", "vmrun"),
            ("zc_cliutil", "zc-cliutil"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn manifest() {
        let (p, i, d) = manifest_facts(
            "[package]\nname = \"ublk-suite\"\n[lib]\nname = \"ublk_suite\"\n\
             [dependencies]\nanyhow.workspace = true\nublk = { path = \"../ublk\" }\n\
             vmrun = { path = \"../vmrun\" }\n[dev-dependencies]\nx = { path = \"../x\" }\n",
        )
        .expect("parses");
        assert_eq!((p.as_str(), i.as_str()), ("ublk-suite", "ublk_suite"));
        assert_eq!(d, ["ublk", "vmrun"], "dev-dependencies are not counted");
        assert!(manifest_facts("[lib]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name(Path::new("lib.rs")), "(root)");
        assert_eq!(module_name(Path::new("bin/vm-init.rs")), "bin/vm-init");
        assert_eq!(module_name(Path::new("run/outcome.rs")), "run");
        assert_eq!(module_name(Path::new("queue.rs")), "queue");
    }

    #[test]
    fn scans_paths_not_comments() {
        let mut imp = Imports::default();
        scan(
            "use crate::uapi::*;\nuse crate::{\n    queue::Queue,\n    state::{A, b},\n    self,\n};\n\
             // crate::comment\nlet x = crate::targets::LoopTarget::new();\n\
             use vmrun::verdict;\nlet y = zc_cliutil::parse_size(s);\nlet z = foo::ublk::bar;\n",
            "ublk_suite",
            &idents(),
            &mut imp,
        );
        assert_eq!(
            imp.modules.iter().collect::<Vec<_>>(),
            ["queue", "state", "targets", "uapi"],
            "groups over several lines are read, nested items and comments are not"
        );
        assert_eq!(
            imp.crates.iter().collect::<Vec<_>>(),
            ["vmrun", "zc-cliutil"],
            "a crate name inside a path is not a crate"
        );
    }

    #[test]
    fn region_and_update() {
        let doc = format!("# t\n\n{BEGIN}\n\nold\n\n{END}\nafter\n");
        assert_eq!(region(&doc).expect("markers"), "old");
        let new = update(&doc, "new\n").expect("markers");
        assert_eq!(region(&new).expect("markers"), "new");
        assert!(new.ends_with(&format!("{END}\nafter\n")));
        assert!(region("no markers").is_err());
        assert!(region(&format!("{END}\n{BEGIN}\n")).is_err());
    }

    /// docs/harness.md holds the map of the sources as they are.
    #[test]
    fn docs_harness_md_is_the_map() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let krates = read(&top).expect("the harness reads");
        assert!(
            krates.iter().any(|k| k.package == "gate") && krates.len() >= 6,
            "every crate of harness/ is found: {:?}",
            krates.iter().map(|k| &k.package).collect::<Vec<_>>()
        );
        let doc = fs::read_to_string(top.join("docs/harness.md")).expect("docs/harness.md");
        let have = region(&doc).expect("docs/harness.md has the markers");
        let want = markdown(&krates);
        assert!(
            have == want.trim_end_matches('\n'),
            "docs/harness.md's map is stale: `target/release/gate map --update` rewrites it"
        );
    }
}
