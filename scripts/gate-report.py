#!/usr/bin/env python3
"""Reports of scripts/test.sh, for CI.

  gate-report.py write DIR       DIR/steps.tsv, meta.tsv, revision.txt -> DIR/junit.xml
                                 (every step, every check a step's log names, every
                                 in-guest test from the runs' JUnit) and DIR/summary.md
  gate-report.py failing LOG [RUN-DIR...]
                                 the failing checks a log and the runs' JUnit files name

steps.tsv (written by test.sh): name, status (pass|fail|skip), passed, failed, seconds,
log, run dirs (space-separated), skip reason.
"""
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

TAP = re.compile(r"^(ok|not ok)(?: \d+)? - (.*)$")
LIBTEST = re.compile(r"^test (\S.*) \.\.\. (ok|FAILED|ignored)$")
ACCEL = re.compile(r"==> vmrun: accelerator (.*)$")
BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean(text):
    return BAD_XML.sub("", ANSI.sub("", text))


def read_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def log_checks(lines):
    """(name, passed) for each TAP or libtest line of a log."""
    out = []
    for line in lines:
        m = TAP.match(line)
        if m:
            out.append((m.group(2), m.group(1) == "ok"))
            continue
        m = LIBTEST.match(line)
        if m and m.group(2) != "ignored":
            out.append((m.group(1), m.group(2) == "ok"))
    return out


def run_junit(dirs):
    """The parsed JUnit files of guest run directories: [(path, root)]."""
    out = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "results", "*.xml"))):
            try:
                out.append((path, ET.parse(path).getroot()))
            except (ET.ParseError, OSError) as e:
                out.append((path, e))
    return out


def junit_failures(root):
    names = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            names.append(f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":"))
    return names


def failing(log, dirs):
    names = []
    juf = run_junit(dirs)
    for path, root in juf:
        if isinstance(root, Exception):
            names.append(f"(unreadable JUnit {path}: {root})")
        else:
            names.extend(junit_failures(root))
    if not juf:  # the runs' JUnit names the guest tests; otherwise the log's TAP/libtest lines
        names = [n for n, ok in log_checks(read_lines(log)) if not ok]
    if not names:
        # A plain step: a compiler's first error, or the last error line of the scripts (e.g.
        # the patch that does not apply), names what failed.
        lines = read_lines(log)
        cc = [line.strip() for line in lines if re.search(r":\d+:(\d+:)? (fatal )?error: ", line)]
        errors = [line for line in lines if line.startswith("ERROR: ") or line.startswith("error: ")]
        names = cc[:1] or errors[-1:]
    seen = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def read_steps(d):
    steps = []
    for line in read_lines(os.path.join(d, "steps.tsv")):
        f = line.split("\t")
        f += [""] * (8 - len(f))
        steps.append({
            "name": f[0], "status": f[1], "passed": int(f[2] or 0), "failed": int(f[3] or 0),
            "seconds": int(f[4] or 0), "log": f[5], "runs": f[6].split(), "reason": f[7],
        })
    return steps


def read_meta(d):
    meta = {}
    for line in read_lines(os.path.join(d, "meta.tsv")):
        k, _, v = line.partition("\t")
        meta[k] = v
    return meta


def mmss(s):
    return f"{s // 60}:{s % 60:02d}"


def human(s):
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def accelerator(steps):
    found = []
    for s in steps:
        for line in read_lines(s["log"]):
            m = ACCEL.search(line)
            if m and m.group(1) not in found:
                found.append(m.group(1))
    return "; ".join(found) or "no VM was booted"


def write(d):
    steps = read_steps(d)
    meta = read_meta(d)
    revision = read_lines(os.path.join(d, "revision.txt"))
    rev = {}
    subjects = []
    for line in revision:
        k, _, v = line.partition(": ")
        if k.startswith("patch "):
            subjects.append(v)
        else:
            rev[k] = v
    accel = accelerator(steps)
    total_p = sum(s["passed"] for s in steps)
    total_f = sum(s["failed"] for s in steps)

    # --- JUnit: one testsuite of steps, then one per step with checks of its own ---
    top = ET.Element("testsuites", name="ublk-splice-zc gate")
    props_parent = ET.SubElement(top, "testsuite", name="gate: steps")
    props = ET.SubElement(props_parent, "properties")
    for k, v in (("revision", rev.get("revision", "")), ("series hash", rev.get("series hash", "")),
                 ("base", rev.get("base", "")), ("installed", meta.get("installed", "")),
                 ("lane", meta.get("lane", "")), ("accelerator", accel)):
        ET.SubElement(props, "property", name=k, value=clean(v))
    for i, s in enumerate(subjects, 1):
        ET.SubElement(props, "property", name=f"patch {i}/{len(subjects)}", value=clean(s))
    n = f = k = 0
    t = 0
    for s in steps:
        phase = s["name"].split(":", 1)[0]
        case = ET.SubElement(props_parent, "testcase", classname=f"gate.{phase}", name=clean(s["name"]),
                             time=str(s["seconds"]))
        n += 1
        t += s["seconds"]
        if s["status"] == "skip":
            ET.SubElement(case, "skipped", message=clean(s["reason"]))
            k += 1
        elif s["status"] == "fail":
            f += 1
            names = failing(s["log"], s["runs"])
            msg = f"{s['failed']} failed" + (": " + ", ".join(names[:10]) if names else "")
            fail = ET.SubElement(case, "failure", message=clean(msg))
            fail.text = clean("\n".join(read_lines(s["log"])[-80:]))
            ET.SubElement(case, "system-out").text = f"log: {s['log']}"
    props_parent.set("tests", str(n))
    props_parent.set("failures", str(f))
    props_parent.set("skipped", str(k))
    props_parent.set("time", str(t))

    for s in steps:
        if s["status"] == "skip":
            continue
        juf = run_junit(s["runs"])
        if juf:
            for path, root in juf:
                if isinstance(root, Exception):
                    suite = ET.SubElement(top, "testsuite", name=clean(f"{s['name']}: {path}"), tests="1", failures="1")
                    case = ET.SubElement(suite, "testcase", classname="gate.junit", name=os.path.basename(path))
                    ET.SubElement(case, "failure", message=clean(f"unreadable JUnit: {root}"))
                    continue
                suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
                for suite in suites:
                    suite.set("name", clean(f"{s['name']}: {suite.get('name', '')}"))
                    top.append(suite)
            continue
        checks = log_checks(read_lines(s["log"]))
        if not checks:
            continue
        suite = ET.SubElement(top, "testsuite", name=clean(s["name"]), tests=str(len(checks)),
                              failures=str(sum(1 for _, ok in checks if not ok)))
        phase = s["name"].split(":", 1)[0]
        for name, ok in checks:
            case = ET.SubElement(suite, "testcase", classname=f"gate.{phase}", name=clean(name))
            if not ok:
                ET.SubElement(case, "failure", message=clean(f"{name} (log: {s['log']})"))
    tests = sum(int(x.get("tests", 0)) for x in top.findall("testsuite"))
    top.set("tests", str(tests))
    top.set("failures", str(sum(int(x.get("failures", 0)) for x in top.findall("testsuite"))))
    top.set("skipped", str(sum(int(x.get("skipped", 0)) for x in top.findall("testsuite"))))
    top.set("time", meta.get("seconds", str(t)))
    ET.indent(top)
    junit = os.path.join(d, "junit.xml")
    ET.ElementTree(top).write(junit, encoding="UTF-8", xml_declaration=True)

    # --- summary.md ---
    secs = int(meta.get("seconds", t) or 0)
    verdict = "passed" if total_f == 0 else "FAILED"
    md = [f"### ublk-splice-zc gate {verdict}: {total_p} passed, {total_f} failed", ""]
    md.append("| | |")
    md.append("|---|---|")
    md.append(f"| revision | {rev.get('revision', '?')} |")
    h, _, rest = rev.get("series hash", "?").partition(" ")
    md.append(f"| series hash | `{h}` {rest} |")
    md.append(f"| base | {rev.get('base', '?')} |")
    inst = meta.get("installed", "?")
    if meta.get("kernel_src"):
        inst += f" (not used: KERNEL_SRC={meta['kernel_src']})"
    md.append(f"| Debian package here | {inst} (the project was last checked on {meta.get('measured', '?')}) |")
    md.append(f"| accelerator | {accel} |")
    md.append(f"| lane | {meta.get('lane', '?')}{' (steps: ' + meta['filters'] + ')' if meta.get('filters') else ''} |")
    md.append(f"| host | {meta.get('cpus', '?')} CPUs, {meta.get('date', '')} |")
    md.append(f"| time | {human(secs)} |")
    md.append("")
    if subjects:
        md.append("Patches:")
        md.append("")
        for i, s in enumerate(subjects, 1):
            md.append(f"{i}. {s}")
        md.append("")
    md.append("| step | result | passed | failed | time |")
    md.append("|---|---|--:|--:|--:|")
    for s in steps:
        res = {"pass": "pass", "fail": "**FAIL**", "skip": "skipped"}[s["status"]]
        if s["status"] == "skip":
            md.append(f"| {s['name']} | {res}: {s['reason']} | | | |")
        else:
            md.append(f"| {s['name']} | {res} | {s['passed']} | {s['failed']} | {mmss(s['seconds'])} |")
    md.append("")
    phases = {}
    for s in steps:
        p = s["name"].split(":", 1)[0]
        phases[p] = phases.get(p, 0) + s["seconds"]
    md.append("Time by phase: " + ", ".join(f"{p} {mmss(v)}" for p, v in sorted(phases.items(), key=lambda x: -x[1])))
    md.append("")
    bad = [s for s in steps if s["status"] == "fail"]
    if bad:
        md.append("Failures:")
        md.append("")
        for s in bad:
            names = failing(s["log"], s["runs"])
            md.append(f"- {s['name']}: " + (", ".join(f"`{x}`" for x in names[:10]) if names else "see the log")
                      + f" (log: `{s['log']}`)")
        md.append("")
    md.append(f"JUnit: `{junit}`")
    with open(os.path.join(d, "summary.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")


def main(argv):
    if len(argv) >= 2 and argv[0] == "write":
        write(argv[1])
        return 0
    if len(argv) >= 2 and argv[0] == "failing":
        for n in failing(argv[1], argv[2:]):
            print(n)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
