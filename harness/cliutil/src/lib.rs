//! Command-line helpers shared by the harness binaries (`ublk`, `vmrun`, ...).

use anyhow::{bail, Result};

/// What a size looks like, for error messages.
const SIZE_FORMS: &str = "bytes, or a number with a K/M/G/T suffix, e.g. 4096, 512M, 2G";

/// Parses a size: a number of bytes, optionally followed by a binary suffix (powers of
/// 1024) `K`, `M`, `G` or `T`, which may carry a trailing `B` or `iB`; a plain `B` means
/// bytes. Case does not matter and surrounding white space is ignored: `4096`, `10B`,
/// `512K`, `64KB`, `512MiB`, `2g`, `1T`. A size that does not fit in 64 bits is an error.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        bail!("bad size {s:?}: expected {SIZE_FORMS}");
    }
    let (digits, suffix) = t.split_at(digits_end);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => bail!("bad size {s:?}: unknown suffix {suffix:?} (expected {SIZE_FORMS})"),
    };
    let too_large = || anyhow::anyhow!("size {s:?} is too large (more than 2^64-1 bytes)");
    // Only digits are left, so the parse can fail on overflow alone.
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    n.checked_mul(1 << shift).ok_or_else(too_large)
}

/// [`parse_size`] as a clap value parser: `#[arg(value_parser = zc_cliutil::size_arg)]`.
/// clap names the option in its message: `invalid value '2X' for '--size <SIZE>': ...`.
pub fn size_arg(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("0", 0)]
    #[case("4096", 4096)]
    #[case("10B", 10)]
    #[case("10b", 10)]
    #[case(" 7 ", 7)]
    #[case("512K", 512 << 10)]
    #[case("64KB", 64 << 10)]
    #[case("64kib", 64 << 10)]
    #[case("3m", 3 << 20)]
    #[case("512MiB", 512 << 20)]
    #[case("1G", 1 << 30)]
    #[case("1GiB", 1 << 30)]
    #[case("2G", 2 << 30)]
    #[case("2g", 2 << 30)]
    #[case("1T", 1 << 40)]
    #[case("2T", 2 << 40)]
    #[case("16777215T", 16777215 << 40)]
    #[case("18446744073709551615", u64::MAX)]
    fn sizes(#[case] s: &str, #[case] n: u64) {
        assert_eq!(parse_size(s).unwrap(), n, "{s:?}");
    }

    #[rstest]
    #[case("", "expected bytes")]
    #[case("  ", "expected bytes")]
    #[case("G", "expected bytes")]
    #[case("-1G", "expected bytes")]
    #[case("+1G", "expected bytes")]
    #[case("1X", "unknown suffix \"X\"")]
    #[case("12Q", "unknown suffix")]
    #[case("2X", "bad size \"2X\"")]
    #[case("1.5G", "unknown suffix \".5G\"")]
    #[case("1 G", "unknown suffix")]
    #[case("1Ki", "unknown suffix")]
    #[case("18446744073709551616", "too large")]
    #[case("99999999999999999999", "too large")]
    #[case("99999999999T", "too large")]
    #[case("20000000T", "too large")]
    #[case("16777216T", "too large")]
    fn bad_sizes(#[case] s: &str, #[case] msg: &str) {
        let e = format!("{:#}", parse_size(s).unwrap_err());
        assert!(e.contains(msg), "{s:?}: {e:?} lacks {msg:?}");
    }

    #[test]
    fn size_arg_is_parse_size() {
        assert_eq!(size_arg("2G"), Ok(2 << 30));
        let e = size_arg("2X").unwrap_err();
        assert!(e.contains("bad size \"2X\""), "{e}");
    }
}
