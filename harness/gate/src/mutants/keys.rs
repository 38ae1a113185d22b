//! The cache keys: an image is keyed by the series, the flavor's config and the mutant; a
//! verdict by those and the binaries that judge it (the suite, and for the uapi check its
//! test and the harness's side of the ABI). A key is the first 16 hex digits of the
//! SHA-256 of its labelled inputs, so that no two kinds of key can collide.

use super::header::{Flavor, Kind, Mutant};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Names this version of the keys: a change of what a key covers changes it.
const SCHEME: &str = "gate-mutants-1";

/// The SHA-256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint of files: their contents in order (each file's hash, so that the
/// boundaries count).
pub fn files_fp(paths: &[&Path]) -> Result<String> {
    let mut text = String::new();
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        text.push_str(&sha256_hex(&bytes));
        text.push('\n');
    }
    Ok(short(&sha256_hex(text.as_bytes())))
}

fn short(hex: &str) -> String {
    hex[..16].to_string()
}

/// The key of labelled inputs.
fn key(parts: &[(&str, &str)]) -> String {
    let mut text = format!("{SCHEME}\n");
    for (k, v) in parts {
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('\n');
    }
    short(&sha256_hex(text.as_bytes()))
}

/// What every key depends on, fingerprinted once per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The series (lib.sh's series_hash: the base tree and the patches).
    pub series: String,
    /// The patched flavor's config fragments.
    pub config_patched: String,
    /// The debug flavor's config fragments.
    pub config_debug: String,
    /// ublk-suite, splice-transcript and the test executables the suite runs.
    pub suite: String,
    /// The uapi check's test and the harness's uapi.rs.
    pub uapi: String,
}

impl Inputs {
    pub fn config(&self, f: Flavor) -> &str {
        match f {
            Flavor::Patched => &self.config_patched,
            Flavor::Debug => &self.config_debug,
            // Only the headers are installed: no config enters.
            Flavor::Headers => "headers",
        }
    }

    /// The image of the series plus `mutant` (none: the unmutated series) in a flavor.
    pub fn image_key(&self, flavor: Flavor, mutant: Option<&Mutant>) -> String {
        let patch = mutant.map(|m| sha256_hex(&m.patch)).unwrap_or_default();
        key(&[
            ("image", flavor.name()),
            ("series", &self.series),
            ("config", self.config(flavor)),
            ("mutant", &patch),
        ])
    }

    /// The judges of a check of this kind: the suite's binaries, and the uapi test.
    fn judges(&self, kind: Kind) -> String {
        match kind {
            Kind::Uapi => format!("{} {}", self.suite, self.uapi),
            _ => self.suite.clone(),
        }
    }

    /// A passed baseline: the check `kind args` on the unmutated series.
    pub fn baseline_key(&self, kind: Kind, args: &[String]) -> String {
        let flavor = kind.flavor();
        key(&[
            ("baseline", kind.name()),
            ("series", &self.series),
            ("config", self.config(flavor)),
            ("judges", &self.judges(kind)),
            ("args", &args.join("\n")),
        ])
    }

    /// A mutant's verdict. Its check and timeout are in its patch's text.
    pub fn verdict_key(&self, m: &Mutant) -> String {
        let kind = m.check.kind;
        key(&[
            ("verdict", &m.name),
            ("series", &self.series),
            ("config", self.config(kind.flavor())),
            ("judges", &self.judges(kind)),
            ("mutant", &sha256_hex(&m.patch)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            series: "1111111111111111".into(),
            config_patched: "aaaa".into(),
            config_debug: "bbbb".into(),
            suite: "cccc".into(),
            uapi: "dddd".into(),
        }
    }

    fn mutant(name: &str, check: &str, body: &str) -> Mutant {
        let text = format!("# mutant: x\n# check: {check}\n{body}");
        Mutant::parse(name, Path::new("/x"), text.into_bytes()).unwrap()
    }

    #[test]
    fn sha256_is_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_are_stable() {
        let m = mutant("p4-a", "suite --suite s t", "diff\n");
        let i = inputs();
        assert_eq!(i.verdict_key(&m), inputs().verdict_key(&m.clone()));
        assert_eq!(
            i.image_key(Flavor::Patched, Some(&m)),
            inputs().image_key(Flavor::Patched, Some(&m))
        );
        let args = vec!["--suite".to_string(), "s".to_string()];
        assert_eq!(
            i.baseline_key(Kind::Suite, &args),
            inputs().baseline_key(Kind::Suite, &args)
        );
        assert_eq!(i.verdict_key(&m).len(), 16);
        // A key of today's scheme, written down (the SHA-256 of its labelled lines, as
        // any sha256sum computes it): a change of the scheme shows here.
        assert_eq!(i.image_key(Flavor::Headers, None), "b792a8c2bfedfb5b");
    }

    #[test]
    fn each_input_changes_the_keys_that_depend_on_it() {
        let m = mutant("p4-a", "suite --suite s t", "diff\n");
        let base = inputs();
        let v = base.verdict_key(&m);
        let img = base.image_key(Flavor::Patched, Some(&m));
        let bl = base.baseline_key(Kind::Suite, &[]);
        let changed: [(&str, Inputs); 3] = [
            (
                "series",
                Inputs {
                    series: "2".into(),
                    ..inputs()
                },
            ),
            (
                "config",
                Inputs {
                    config_patched: "z".into(),
                    ..inputs()
                },
            ),
            (
                "suite",
                Inputs {
                    suite: "z".into(),
                    ..inputs()
                },
            ),
        ];
        for (what, i) in &changed {
            assert_ne!(i.verdict_key(&m), v, "{what}");
            assert_ne!(i.baseline_key(Kind::Suite, &[]), bl, "{what}");
        }
        assert_ne!(changed[0].1.image_key(Flavor::Patched, Some(&m)), img);
        assert_ne!(changed[1].1.image_key(Flavor::Patched, Some(&m)), img);
        // The suite judges; it does not build.
        assert_eq!(changed[2].1.image_key(Flavor::Patched, Some(&m)), img);
        // The debug config is not the patched kernel's.
        let dbg = Inputs {
            config_debug: "z".into(),
            ..inputs()
        };
        assert_eq!(dbg.verdict_key(&m), v);
        assert_ne!(
            dbg.image_key(Flavor::Debug, None),
            base.image_key(Flavor::Debug, None)
        );
        // The uapi test judges the uapi check only.
        let u = mutant("p4-u", "uapi", "diff\n");
        let uapi = Inputs {
            uapi: "z".into(),
            ..inputs()
        };
        assert_eq!(uapi.verdict_key(&m), v);
        assert_ne!(uapi.verdict_key(&u), base.verdict_key(&u));
        assert_ne!(
            uapi.baseline_key(Kind::Uapi, &[]),
            base.baseline_key(Kind::Uapi, &[])
        );
        // No config enters the headers.
        assert_eq!(
            Inputs {
                config_patched: "z".into(),
                ..inputs()
            }
            .image_key(Flavor::Headers, Some(&u)),
            base.image_key(Flavor::Headers, Some(&u))
        );
    }

    #[test]
    fn the_mutant_its_name_and_the_check_s_arguments_count() {
        let i = inputs();
        let a = mutant("p4-a", "suite --suite s t", "diff\n");
        let b = mutant("p4-a", "suite --suite s t", "diff 2\n");
        let c = mutant("p4-c", "suite --suite s t", "diff\n");
        assert_ne!(i.verdict_key(&a), i.verdict_key(&b));
        assert_ne!(i.verdict_key(&a), i.verdict_key(&c));
        assert_ne!(
            i.image_key(Flavor::Patched, Some(&a)),
            i.image_key(Flavor::Patched, Some(&b))
        );
        assert_ne!(
            i.image_key(Flavor::Patched, Some(&a)),
            i.image_key(Flavor::Patched, None)
        );
        assert_ne!(
            i.image_key(Flavor::Patched, None),
            i.image_key(Flavor::Debug, None)
        );
        let one = vec!["--suite".to_string(), "s".to_string()];
        let two = vec!["--suite".to_string(), "s t".to_string()];
        let split = vec!["--suite".to_string(), "s".into(), "t".into()];
        assert_ne!(
            i.baseline_key(Kind::Suite, &one),
            i.baseline_key(Kind::Debug, &one)
        );
        assert_ne!(
            i.baseline_key(Kind::Suite, &two),
            i.baseline_key(Kind::Suite, &split)
        );
    }

    #[test]
    fn file_fingerprints() {
        let dir = std::env::temp_dir().join(format!("gate-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, "ab").unwrap();
        std::fs::write(&b, "c").unwrap();
        let fp = files_fp(&[&a, &b]).unwrap();
        assert_eq!(fp, files_fp(&[&a, &b]).unwrap());
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "bc").unwrap();
        assert_ne!(
            files_fp(&[&a, &b]).unwrap(),
            fp,
            "the boundary between files counts"
        );
        assert!(files_fp(&[&dir.join("missing")]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
