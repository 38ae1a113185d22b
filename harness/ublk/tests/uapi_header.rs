//! The harness's UAPI constants, struct layouts and splice position encoding against the
//! header that the patched kernel installs (`make headers_install`, see
//! scripts/uapi-headers.sh): a C program built against that header prints the values, the
//! sizes and the `offsetof` of every field, and each is compared with the Rust side
//! (`size_of`, `offset_of!`).  SPLICE_F_* are kernel-internal, so they are read from the
//! patched tree's splice.h.
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

/// Tags and offsets out of their fields' range: (q_id, tag, offset).
const MASK_SAMPLES: &[(u16, u16, u32)] = &[
    (0, 4096, 0),
    (0, 65535, 0),
    (0, 7, 1 << 30),
    (3, 7, u32::MAX),
];

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

/// Builds and runs a C program against the installed header; returns NAME -> value.
fn header_values() -> Result<HashMap<String, u64>> {
    let include = env_path("UBLK_UAPI_INCLUDE")?;
    let header = include.join("linux/ublk_cmd.h");
    if !header.is_file() {
        bail!("{} does not exist", header.display());
    }
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/ublk_cmd.h>\n\
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
        "UBLK_SPLICE_TAG_BITS",
        "UBLK_SPLICE_BUF_BITS",
        "UBLK_SPLICE_QID_OFF",
        "UBLK_SPLICE_BUF_MAX_SIZE",
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
    // Out-of-range fields: the header masks them, as ublk_splice_pos() does.
    for (i, (q, t, o)) in MASK_SAMPLES.iter().enumerate() {
        c.push_str(&format!(
            "\tP(\"mask{i}\", ublk_splice_pos({q}, {t}, {o}u));\n"
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
    for (i, &(q, t, o)) in MASK_SAMPLES.iter().enumerate() {
        assert_eq!(
            get(&v, &format!("mask{i}")),
            uapi::ublk_splice_pos(q, t, o),
            "ublk_splice_pos({q}, {t}, {o}) must mask the tag and the offset"
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
