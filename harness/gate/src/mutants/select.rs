//! Which mutants a run judges: every one, these by name, or a rotating sample.

use super::header::{Kind, Mutant};
use anyhow::{bail, Result};

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every mutant but the known survivors (`--all`).
    All,
    /// These, known survivors too (`NAME...`): a named survivor must still survive.
    Named(Vec<String>),
    /// A rotating sample of this many (`--sample N`, or 3 by default).
    Sample(usize),
}

/// The mutants chosen, and for a sample the line that says which.
#[derive(Debug)]
pub struct Chosen<'a> {
    pub mutants: Vec<&'a Mutant>,
    pub note: Option<String>,
}

/// The sample's seed: `ZC_MUTANT_SEED`, else the UTC day (days since the epoch).
pub fn seed(env: Option<&str>, unix_secs: u64) -> Result<u64> {
    match env.filter(|s| !s.is_empty()) {
        Some(s) => match s.trim().parse() {
            Ok(n) => Ok(n),
            Err(_) => bail!("ZC_MUTANT_SEED={s}: not a non-negative number"),
        },
        None => Ok(unix_secs / 86_400),
    }
}

/// Picks the mutants. `fast`: the fast lane, which builds no debug kernel, so that its
/// sample leaves the debug checks out.
pub fn choose<'a>(all: &'a [Mutant], sel: &Selection, seed: u64, fast: bool) -> Result<Chosen<'a>> {
    let runnable = || all.iter().filter(|m| !m.is_survivor());
    match sel {
        Selection::All => Ok(Chosen {
            mutants: runnable().collect(),
            note: None,
        }),
        Selection::Named(names) => {
            let mut mutants = Vec::new();
            for n in names {
                let n = n.strip_suffix(".patch").unwrap_or(n);
                match all.iter().find(|m| m.name == n) {
                    Some(m) => mutants.push(m),
                    None => bail!("no mutant {n} (see --list)"),
                }
            }
            Ok(Chosen {
                mutants,
                note: None,
            })
        }
        Selection::Sample(want) => {
            if *want < 1 {
                bail!("--sample wants a positive number");
            }
            let pool: Vec<&Mutant> = runnable()
                .filter(|m| !(fast && m.check.kind == Kind::Debug))
                .collect();
            if pool.is_empty() {
                bail!("no mutant to sample from");
            }
            let n = pool.len() as u128;
            let k = (*want).min(pool.len());
            let mutants: Vec<&Mutant> = (0..k as u128)
                .map(|i| pool[((u128::from(seed) * k as u128 + i) % n) as usize])
                .collect();
            let names: Vec<&str> = mutants.iter().map(|m| m.name.as_str()).collect();
            let note = format!(
                "mutants: sample {seed}: {} (of {}; scripts/mutants.sh --all runs every one)",
                names.join(" "),
                pool.len()
            );
            Ok(Chosen {
                mutants,
                note: Some(note),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn m(name: &str, check: &str, survivor: bool) -> Mutant {
        let text = format!(
            "# mutant: {name}\n# check: {check}\n{}",
            if survivor {
                "# known-survivor: why\n"
            } else {
                ""
            }
        );
        Mutant::parse(name, Path::new("/x"), text.into_bytes()).unwrap()
    }

    fn set() -> Vec<Mutant> {
        vec![
            m("p1-a", "suite --suite s a", false),
            m("p1-b", "debug --suite s b", false),
            m("p2-c", "transcript", false),
            m("p3-d", "suite --suite s d", true),
            m("p4-e", "uapi", false),
            m("p4-f", "debug --suite s f", false),
            m("p4-g", "suite --suite s g", false),
        ]
    }

    fn names(c: &Chosen) -> Vec<String> {
        c.mutants.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn all_leaves_the_known_survivors_out() {
        let s = set();
        let c = choose(&s, &Selection::All, 0, false).unwrap();
        assert_eq!(names(&c), ["p1-a", "p1-b", "p2-c", "p4-e", "p4-f", "p4-g"]);
        assert!(c.note.is_none());
    }

    #[test]
    fn named_runs_survivors_too_and_refuses_unknown_names() {
        let s = set();
        let c = choose(
            &s,
            &Selection::Named(vec!["p3-d".into(), "p1-a.patch".into()]),
            0,
            false,
        )
        .unwrap();
        assert_eq!(names(&c), ["p3-d", "p1-a"]);
        let e = choose(&s, &Selection::Named(vec!["p9-z".into()]), 0, false).unwrap_err();
        assert_eq!(e.to_string(), "no mutant p9-z (see --list)");
    }

    #[test]
    fn the_sample_is_the_seed_s_and_rotates() {
        let s = set();
        // six runnable: seed 5, 3 of them: indexes 15, 16, 17 mod 6 = 3, 4, 5
        let c = choose(&s, &Selection::Sample(3), 5, false).unwrap();
        assert_eq!(names(&c), ["p4-e", "p4-f", "p4-g"]);
        assert_eq!(
            c.note.as_deref(),
            Some(
                "mutants: sample 5: p4-e p4-f p4-g (of 6; scripts/mutants.sh --all runs every one)"
            )
        );
        // the same seed, the same sample; the next day another one
        let again = choose(&s, &Selection::Sample(3), 5, false).unwrap();
        assert_eq!(names(&again), names(&c));
        let next = choose(&s, &Selection::Sample(3), 6, false).unwrap();
        assert_eq!(names(&next), ["p1-a", "p1-b", "p2-c"]);
        // over the days every runnable mutant comes up
        let mut seen: Vec<String> = (0..6)
            .flat_map(|d| names(&choose(&s, &Selection::Sample(2), d, false).unwrap()))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn the_fast_lane_samples_no_debug_check() {
        let s = set();
        for seed in 0..20 {
            let c = choose(&s, &Selection::Sample(3), seed, true).unwrap();
            assert_eq!(c.mutants.len(), 3);
            assert!(
                c.mutants.iter().all(|m| m.check.kind != Kind::Debug),
                "seed {seed}: {:?}",
                names(&c)
            );
            assert!(c.note.as_deref().unwrap().contains("(of 4;"));
        }
        // without the fast lane some sample has one
        assert!(
            (0..20).any(|seed| choose(&s, &Selection::Sample(3), seed, false)
                .unwrap()
                .mutants
                .iter()
                .any(|m| m.check.kind == Kind::Debug))
        );
    }

    #[test]
    fn a_sample_larger_than_the_pool_is_the_pool() {
        let s = set();
        let c = choose(&s, &Selection::Sample(50), 7, true).unwrap();
        let mut n = names(&c);
        n.sort();
        assert_eq!(n, ["p1-a", "p2-c", "p4-e", "p4-g"]);
        assert!(choose(&s, &Selection::Sample(0), 7, true).is_err());
    }

    #[test]
    fn the_seed() {
        assert_eq!(seed(Some("42"), 0).unwrap(), 42);
        assert_eq!(seed(None, 86_400 * 3 + 5).unwrap(), 3);
        assert_eq!(seed(Some(""), 86_400).unwrap(), 1);
        assert!(seed(Some("-1"), 0).is_err());
        assert!(seed(Some("x"), 0).is_err());
    }
}
