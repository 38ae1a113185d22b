//! The harness's UAPI constants and position encoding against the header that the patched
//! kernel installs (`make headers_install`, see scripts/uapi-headers.sh): a C program built
//! against that header prints the values, and each is compared with the Rust side.
//! SPLICE_F_* are kernel-internal, so they are read from the patched tree's splice.h.
//!
//! Needs UBLK_UAPI_INCLUDE (the installed include dir) and UBLK_KERNEL_SRC (the patched
//! tree); without them the tests fail and say so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use ublk::uapi;

fn env_path(name: &str) -> Result<PathBuf> {
    let v = std::env::var_os(name).with_context(|| {
        format!("{name} is not set: scripts/test.sh sets it (see scripts/uapi-headers.sh)")
    })?;
    Ok(PathBuf::from(v))
}

/// Position samples: (q_id, tag, offset).
const POS_SAMPLES: &[(u16, u16, u32)] = &[
    (0, 0, 0),
    (0, 1, 0),
    (1, 2, 3),
    (1, 0, 4096),
    (7, 4095, (1 << 30) - 1),
    (65535, 4095, (1 << 30) - 1),
];

/// Builds and runs a C program against the installed header; returns NAME -> value.
fn header_values() -> Result<HashMap<String, u64>> {
    let include = env_path("UBLK_UAPI_INCLUDE")?;
    let header = include.join("linux/ublk_cmd.h");
    if !header.is_file() {
        bail!("{} does not exist", header.display());
    }
    let mut c = String::from(
        "#include <stdio.h>\n#include <linux/ublk_cmd.h>\n\
         #define P(n, x) printf(\"%s %llu\\n\", n, (unsigned long long)(x))\n\
         int main(void)\n{\n",
    );
    for name in [
        "UBLK_F_SPLICE_ZC",
        "UBLK_F_SUPPORT_ZERO_COPY",
        "UBLK_F_URING_CMD_COMP_IN_TASK",
        "UBLK_F_NEED_GET_DATA",
        "UBLK_F_USER_RECOVERY",
        "UBLK_F_USER_RECOVERY_REISSUE",
        "UBLK_TAG_BITS",
        "UBLK_BUF_SIZE_BITS",
        "UBLK_BUFS_SIZE_BITS",
        "UBLK_BUF_MAX_SIZE",
        "UBLK_MAX_QUEUE_DEPTH",
        "UBLK_CMD_ADD_DEV",
        "UBLK_CMD_DEL_DEV",
        "UBLK_CMD_START_DEV",
        "UBLK_CMD_STOP_DEV",
        "UBLK_CMD_SET_PARAMS",
        "UBLK_CMD_GET_DEV_INFO",
        "UBLK_IO_FETCH_REQ",
        "UBLK_IO_COMMIT_AND_FETCH_REQ",
        "UBLKSRV_IO_BUF_OFFSET",
    ] {
        c.push_str(&format!("\tP(\"{name}\", {name});\n"));
    }
    for s in [
        "ublksrv_ctrl_cmd",
        "ublksrv_ctrl_dev_info",
        "ublksrv_io_desc",
        "ublksrv_io_cmd",
        "ublk_params",
    ] {
        c.push_str(&format!("\tP(\"sizeof {s}\", sizeof(struct {s}));\n"));
    }
    for (i, (q, t, o)) in POS_SAMPLES.iter().enumerate() {
        c.push_str(&format!(
            "\tP(\"pos{i}\", ublk_pos({q}, {t}, {o}u));\n\
             \tP(\"hwq{i}\", ublk_pos_to_hwq(ublk_pos({q}, {t}, {o}u)));\n\
             \tP(\"tag{i}\", ublk_pos_to_tag(ublk_pos({q}, {t}, {o}u)));\n\
             \tP(\"off{i}\", ublk_pos_to_buf_off(ublk_pos({q}, {t}, {o}u)));\n"
        ));
    }
    c.push_str("\treturn 0;\n}\n");

    // One directory per call: the tests run in parallel threads of one process.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ublk-uapi-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let src = dir.join("values.c");
    let exe = dir.join("values");
    std::fs::write(&src, c).with_context(|| format!("writing {}", src.display()))?;
    let cc = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .context("running cc")?;
    if !cc.status.success() {
        bail!(
            "cc against {} failed:\n{}",
            header.display(),
            String::from_utf8_lossy(&cc.stderr)
        );
    }
    let out = Command::new(&exe)
        .output()
        .context("running the value printer")?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(out.stdout).context("value printer output")?;
    let mut values = HashMap::new();
    for line in text.lines() {
        let (name, value) = line.rsplit_once(' ').context("malformed printer line")?;
        values.insert(name.to_string(), value.parse().context("printer value")?);
    }
    Ok(values)
}

fn get(values: &HashMap<String, u64>, name: &str) -> u64 {
    *values
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from the header's values"))
}

#[test]
fn flags_and_bits_match_installed_header() -> Result<()> {
    let v = header_values()?;
    let expect: &[(&str, u64)] = &[
        ("UBLK_F_SPLICE_ZC", uapi::UBLK_F_SPLICE_ZC),
        ("UBLK_F_SUPPORT_ZERO_COPY", uapi::UBLK_F_SUPPORT_ZERO_COPY),
        (
            "UBLK_F_URING_CMD_COMP_IN_TASK",
            uapi::UBLK_F_URING_CMD_COMP_IN_TASK,
        ),
        ("UBLK_F_NEED_GET_DATA", uapi::UBLK_F_NEED_GET_DATA),
        ("UBLK_F_USER_RECOVERY", uapi::UBLK_F_USER_RECOVERY),
        (
            "UBLK_F_USER_RECOVERY_REISSUE",
            uapi::UBLK_F_USER_RECOVERY_REISSUE,
        ),
        ("UBLK_TAG_BITS", u64::from(uapi::UBLK_TAG_BITS)),
        ("UBLK_BUF_SIZE_BITS", u64::from(uapi::UBLK_BUF_SIZE_BITS)),
        ("UBLK_BUFS_SIZE_BITS", u64::from(uapi::UBLK_BUFS_SIZE_BITS)),
        ("UBLK_BUF_MAX_SIZE", uapi::UBLK_BUF_MAX_SIZE),
        (
            "UBLK_MAX_QUEUE_DEPTH",
            u64::from(uapi::UBLK_MAX_QUEUE_DEPTH),
        ),
        ("UBLK_CMD_ADD_DEV", u64::from(uapi::UBLK_CMD_ADD_DEV)),
        ("UBLK_CMD_DEL_DEV", u64::from(uapi::UBLK_CMD_DEL_DEV)),
        ("UBLK_CMD_START_DEV", u64::from(uapi::UBLK_CMD_START_DEV)),
        ("UBLK_CMD_STOP_DEV", u64::from(uapi::UBLK_CMD_STOP_DEV)),
        ("UBLK_CMD_SET_PARAMS", u64::from(uapi::UBLK_CMD_SET_PARAMS)),
        (
            "UBLK_CMD_GET_DEV_INFO",
            u64::from(uapi::UBLK_CMD_GET_DEV_INFO),
        ),
        ("UBLK_IO_FETCH_REQ", u64::from(uapi::UBLK_IO_FETCH_REQ)),
        (
            "UBLK_IO_COMMIT_AND_FETCH_REQ",
            u64::from(uapi::UBLK_IO_COMMIT_AND_FETCH_REQ),
        ),
        ("UBLKSRV_IO_BUF_OFFSET", uapi::UBLKSRV_IO_BUF_OFFSET),
    ];
    let mismatches: Vec<String> = expect
        .iter()
        .filter(|(name, ours)| get(&v, name) != *ours)
        .map(|(name, ours)| format!("{name}: header {} harness {ours}", get(&v, name)))
        .collect();
    assert!(mismatches.is_empty(), "mismatches: {mismatches:?}");
    Ok(())
}

#[test]
fn struct_sizes_match_installed_header() -> Result<()> {
    let v = header_values()?;
    let sizes: &[(&str, usize)] = &[
        (
            "ublksrv_ctrl_cmd",
            std::mem::size_of::<uapi::ublksrv_ctrl_cmd>(),
        ),
        (
            "ublksrv_ctrl_dev_info",
            std::mem::size_of::<uapi::ublksrv_ctrl_dev_info>(),
        ),
        (
            "ublksrv_io_desc",
            std::mem::size_of::<uapi::ublksrv_io_desc>(),
        ),
        (
            "ublksrv_io_cmd",
            std::mem::size_of::<uapi::ublksrv_io_cmd>(),
        ),
        ("ublk_params", std::mem::size_of::<uapi::ublk_params>()),
    ];
    for (name, ours) in sizes {
        assert_eq!(get(&v, &format!("sizeof {name}")), *ours as u64, "{name}");
    }
    Ok(())
}

#[test]
fn position_encoding_matches_installed_header() -> Result<()> {
    let v = header_values()?;
    for (i, &(q, t, o)) in POS_SAMPLES.iter().enumerate() {
        let pos = uapi::ublk_pos(q, t, o);
        assert_eq!(get(&v, &format!("pos{i}")), pos, "ublk_pos({q}, {t}, {o})");
        assert_eq!(
            get(&v, &format!("hwq{i}")),
            u64::from(uapi::ublk_pos_to_hwq(pos)),
            "hwq of {pos:#x}"
        );
        assert_eq!(
            get(&v, &format!("tag{i}")),
            u64::from(uapi::ublk_pos_to_tag(pos)),
            "tag of {pos:#x}"
        );
        assert_eq!(
            get(&v, &format!("off{i}")),
            u64::from(uapi::ublk_pos_to_buf_off(pos)),
            "offset of {pos:#x}"
        );
    }
    Ok(())
}

/// `#define NAME (0x..)` in the patched tree's include/linux/splice.h.
fn splice_h_value(name: &str) -> Result<u32> {
    let path = env_path("UBLK_KERNEL_SRC")?.join("include/linux/splice.h");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("#define") && words.next() == Some(name) {
            let raw: String = words.collect::<String>();
            let hex = raw.trim_matches(|c| c == '(' || c == ')');
            let hex = hex.strip_prefix("0x").context("not a hex value")?;
            return u32::from_str_radix(hex, 16).with_context(|| format!("{name} = {raw}"));
        }
    }
    bail!("{name} is not defined in {}", path.display())
}

#[test]
fn splice_flags_match_patched_tree() -> Result<()> {
    assert_eq!(splice_h_value("SPLICE_F_DIRECT")?, uapi::SPLICE_F_DIRECT);
    assert_eq!(
        splice_h_value("SPLICE_F_READ_TO_READ")?,
        uapi::SPLICE_F_READ_TO_READ
    );
    Ok(())
}
