//! The gate of the series: the mutation gate ([`mutants`]).

pub mod mutants;
