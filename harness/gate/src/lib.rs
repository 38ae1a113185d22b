//! The gate of the series (`scripts/test.sh` execs `gate run`): its steps, their order and
//! dependencies, the verdict of each step from exit statuses and JUnit files, and the
//! reports CI keeps; and the mutation gate (`gate mutants`, docs/mutants.md). See
//! docs/gate.md.

pub mod cargo_tests;
pub mod cli;
pub mod junit;
pub mod map;
pub mod mutants;
pub mod report;
pub mod run;
pub mod steps;
pub mod xml;

#[cfg(test)]
mod tests;
