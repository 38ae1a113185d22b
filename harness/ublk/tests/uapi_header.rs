//! The harness's UAPI constants, struct layouts and splice position encoding against the
//! header that the patched kernel installs (`make headers_install`, see
//! scripts/uapi-headers.sh): a C program built against that header prints the values, the
//! sizes and the `offsetof` of every field, and each is compared with the Rust side
//! (`size_of`, `offset_of!`).  The io_uring splice flags of the series (SPLICE_F_DIRECT,
//! SPLICE_F_READ_TO_READ: UAPI since v3) are read from the installed `<linux/io_uring.h>`
//! the same way; a header without them fails the test, naming the missing flag.
//!
//! Needs UBLK_UAPI_INCLUDE (the installed include dir); without it the tests fail and say
//! so.

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

/// Tags and offsets out of their fields' range: (q_id, tag, offset).  The header gives
/// UBLK_SPLICE_POS_INVALID for each (series v3; v2 masked the fields).
const INVALID_SAMPLES: &[(u16, u16, u32)] = &[
    (0, 4096, 0),
    (0, 65535, 0),
    (0, 7, 1 << 30),
    (3, 7, u32::MAX),
    (65535, 4096, 1 << 30),
];

/// The io_uring splice flags of the series, in `<linux/io_uring.h>`.
const IO_URING_FLAGS: &[&str] = &["SPLICE_F_DIRECT", "SPLICE_F_READ_TO_READ"];

/// What the value printer says for a name the header does not define.
const MISSING: &str = "missing";

type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

/// Every UAPI struct: (name, size, [(field, offset)]) as the Rust side lays them out.
fn layouts() -> Vec<Layout> {
    use std::mem::{offset_of, size_of};
    use uapi::*;
    macro_rules! layout {
        ($s:ident: $($f:ident),+) => {
            (stringify!($s), size_of::<$s>(), vec![$((stringify!($f), offset_of!($s, $f))),+])
        };
    }
    vec![
        layout!(ublksrv_ctrl_cmd: dev_id, queue_id, len, addr, data),
        layout!(ublksrv_ctrl_dev_info: nr_hw_queues, queue_depth, state, pad0,
            max_io_buf_bytes, dev_id, ublksrv_pid, pad1, flags, ublksrv_flags, reserved0,
            reserved1, reserved2),
        layout!(ublksrv_io_desc: op_flags, nr_sectors, start_sector, addr),
        layout!(ublksrv_io_cmd: q_id, tag, result, addr),
        layout!(ublk_param_basic: attrs, logical_bs_shift, physical_bs_shift, io_opt_shift,
            io_min_shift, max_sectors, chunk_sectors, dev_sectors, virt_boundary_mask),
        layout!(ublk_param_discard: discard_alignment, discard_granularity,
            max_discard_sectors, max_write_zeroes_sectors, max_discard_segments, reserved0),
        layout!(ublk_params: len, types, basic, discard),
    ]
}

/// The values the installed headers give: NAME -> value, or the names they lack.
struct HeaderValues {
    values: HashMap<String, u64>,
    missing: Vec<String>,
    include: PathBuf,
}

/// Builds and runs a C program against the installed headers.
fn header_values() -> Result<HeaderValues> {
    let include = env_path("UBLK_UAPI_INCLUDE")?;
    for h in ["linux/ublk_cmd.h", "linux/io_uring.h"] {
        let header = include.join(h);
        if !header.is_file() {
            bail!("{} does not exist", header.display());
        }
    }
    let header = include.join("linux/ublk_cmd.h");
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/ublk_cmd.h>\n\
         #include <linux/io_uring.h>\n\
         #define P(n, x) printf(\"%s %llu\\n\", n, (unsigned long long)(x))\n\
         int main(void)\n{\n",
    );
    for name in IO_URING_FLAGS {
        c.push_str(&format!(
            "#ifdef {name}\n\tP(\"{name}\", {name});\n#else\n\tprintf(\"%s {MISSING}\\n\", \"{name}\");\n#endif\n"
        ));
    }
    for name in [
        "UBLK_F_SPLICE_ZC",
        "UBLK_F_SUPPORT_ZERO_COPY",
        "UBLK_F_URING_CMD_COMP_IN_TASK",
        "UBLK_F_NEED_GET_DATA",
        "UBLK_F_USER_RECOVERY",
        "UBLK_F_USER_RECOVERY_REISSUE",
        "UBLK_SPLICE_TAG_BITS",
        "UBLK_SPLICE_BUF_BITS",
        "UBLK_SPLICE_QID_OFF",
        "UBLK_SPLICE_BUF_MAX_SIZE",
        "UBLK_SPLICE_POS_INVALID",
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
    for (s, _, fields) in layouts() {
        c.push_str(&format!("\tP(\"sizeof {s}\", sizeof(struct {s}));\n"));
        for (f, _) in fields {
            c.push_str(&format!(
                "\tP(\"offsetof {s}.{f}\", offsetof(struct {s}, {f}));\n"
            ));
        }
    }
    for (i, (q, t, o)) in POS_SAMPLES.iter().enumerate() {
        c.push_str(&format!(
            "\tP(\"pos{i}\", ublk_splice_pos({q}, {t}, {o}u));\n\
             \tP(\"qid{i}\", ublk_splice_pos_to_qid(ublk_splice_pos({q}, {t}, {o}u)));\n\
             \tP(\"tag{i}\", ublk_splice_pos_to_tag(ublk_splice_pos({q}, {t}, {o}u)));\n\
             \tP(\"off{i}\", ublk_splice_pos_to_off(ublk_splice_pos({q}, {t}, {o}u)));\n"
        ));
    }
    // Out-of-range fields: the header gives UBLK_SPLICE_POS_INVALID, as ublk_splice_pos()
    // does.
    for (i, (q, t, o)) in INVALID_SAMPLES.iter().enumerate() {
        c.push_str(&format!(
            "\tP(\"invalid{i}\", ublk_splice_pos({q}, {t}, {o}u));\n"
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
    if !out.status.success() {
        bail!("the value printer failed: {}", out.status);
    }
    let text = String::from_utf8(out.stdout).context("value printer output")?;
    let mut values = HashMap::new();
    let mut missing = Vec::new();
    for line in text.lines() {
        let (name, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("malformed printer line {line:?}"))?;
        if value == MISSING {
            missing.push(name.to_string());
            continue;
        }
        let value = value
            .parse()
            .with_context(|| format!("printer value of {name}: {value:?}"))?;
        values.insert(name.to_string(), value);
    }
    Ok(HeaderValues {
        values,
        missing,
        include,
    })
}

fn get(v: &HeaderValues, name: &str) -> u64 {
    *v.values
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
        (
            "UBLK_SPLICE_TAG_BITS",
            u64::from(uapi::UBLK_SPLICE_TAG_BITS),
        ),
        (
            "UBLK_SPLICE_BUF_BITS",
            u64::from(uapi::UBLK_SPLICE_BUF_BITS),
        ),
        ("UBLK_SPLICE_QID_OFF", u64::from(uapi::UBLK_SPLICE_QID_OFF)),
        ("UBLK_SPLICE_BUF_MAX_SIZE", uapi::UBLK_SPLICE_BUF_MAX_SIZE),
        ("UBLK_SPLICE_POS_INVALID", uapi::UBLK_SPLICE_POS_INVALID),
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
fn struct_layouts_match_installed_header() -> Result<()> {
    let v = header_values()?;
    let mut mismatches = Vec::new();
    for (s, size, fields) in layouts() {
        let h = get(&v, &format!("sizeof {s}"));
        if h != size as u64 {
            mismatches.push(format!("sizeof(struct {s}): header {h}, harness {size}"));
        }
        for (f, off) in fields {
            let h = get(&v, &format!("offsetof {s}.{f}"));
            if h != off as u64 {
                mismatches.push(format!("offsetof({s}, {f}): header {h}, harness {off}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "layout mismatches: {mismatches:#?}");
    Ok(())
}

#[test]
fn position_encoding_matches_installed_header() -> Result<()> {
    let v = header_values()?;
    for (i, &(q, t, o)) in POS_SAMPLES.iter().enumerate() {
        let pos = uapi::ublk_splice_pos(q, t, o);
        assert_eq!(
            get(&v, &format!("pos{i}")),
            pos,
            "ublk_splice_pos({q}, {t}, {o})"
        );
        assert_eq!(
            get(&v, &format!("qid{i}")),
            u64::from(uapi::ublk_splice_pos_to_qid(pos)),
            "q_id of {pos:#x}"
        );
        assert_eq!(
            get(&v, &format!("tag{i}")),
            u64::from(uapi::ublk_splice_pos_to_tag(pos)),
            "tag of {pos:#x}"
        );
        assert_eq!(
            get(&v, &format!("off{i}")),
            u64::from(uapi::ublk_splice_pos_to_off(pos)),
            "offset of {pos:#x}"
        );
    }
    for (i, &(q, t, o)) in INVALID_SAMPLES.iter().enumerate() {
        let header = get(&v, &format!("invalid{i}"));
        assert_eq!(
            header,
            uapi::UBLK_SPLICE_POS_INVALID,
            "the header's ublk_splice_pos({q}, {t}, {o}) must be UBLK_SPLICE_POS_INVALID"
        );
        assert_eq!(
            uapi::ublk_splice_pos(q, t, o),
            header,
            "ublk_splice_pos({q}, {t}, {o}): harness and header"
        );
    }
    Ok(())
}

/// SPLICE_F_DIRECT and SPLICE_F_READ_TO_READ as the installed `<linux/io_uring.h>` defines
/// them (series v3 moved them there from the kernel-internal splice.h, at new values).
#[test]
fn splice_flags_match_installed_io_uring_header() -> Result<()> {
    let v = header_values()?;
    if !v.missing.is_empty() {
        bail!(
            "{} does not define {}: the series' io_uring splice flags must be UAPI (v3); was the \
             header installed from a tree without the series?",
            v.include.join("linux/io_uring.h").display(),
            v.missing.join(" and ")
        );
    }
    let ours = [uapi::SPLICE_F_DIRECT, uapi::SPLICE_F_READ_TO_READ];
    let mismatches: Vec<String> = IO_URING_FLAGS
        .iter()
        .zip(ours)
        .filter(|(name, ours)| get(&v, name) != u64::from(*ours))
        .map(|(name, ours)| format!("{name}: header {:#x}, harness {ours:#x}", get(&v, name)))
        .collect();
    assert!(mismatches.is_empty(), "mismatches: {mismatches:?}");
    Ok(())
}
