"""Turn pytest's JUnit XML report into TAP, so each test case is one TAP point.

usage: junit2tap.py REPORT.xml PYTEST_EXIT_STATUS

Every <testcase> becomes "ok", "not ok" (failure or error, with the message
and the first lines of the traceback as # diagnostics) or "ok # SKIP reason".
An expected failure (xfail) is reported as a skip.  If pytest failed without a
failing test case to show for it (an internal or usage error, no tests
collected, a missing report), one extra "not ok" point says so: a broken run
must never look green.
"""

import sys
import xml.etree.ElementTree as ET

MAX_DIAG_LINES = 60


def clean(text):
    # '#' would start a TAP directive in a description.
    return " ".join(text.replace("#", "-").split())


def diag(text):
    lines = text.splitlines()
    if len(lines) > MAX_DIAG_LINES:
        lines = lines[:MAX_DIAG_LINES // 2] + ["[... %d lines ...]" % (len(lines) - MAX_DIAG_LINES)] \
            + lines[-MAX_DIAG_LINES // 2:]
    return "".join("# " + line.rstrip() + "\n" for line in lines)


def points(report):
    """Yield (ok, description, directive, diagnostics) for each test case."""
    root = ET.parse(report).getroot()
    for case in root.iter("testcase"):
        cls = case.get("classname", "")
        name = case.get("name", "?")
        desc = clean("%s.%s" % (cls, name) if cls else name)
        bad = [e for e in case if e.tag in ("failure", "error")]
        skipped = [e for e in case if e.tag == "skipped"]
        if bad:
            text = ""
            for e in bad:
                text += "%s: %s\n%s\n" % (e.tag, e.get("message", ""), e.text or "")
            yield False, desc, "", text
        elif skipped:
            why = skipped[0].get("message", "")
            if skipped[0].get("type") == "pytest.xfail":
                why = "expected failure" + (": " + why if why else "")
            yield True, desc, "SKIP " + clean(why or "skipped"), ""
        else:
            yield True, desc, "", ""


def main(argv):
    report, status = argv[1], int(argv[2])
    out = []
    try:
        results = list(points(report))
    except (OSError, ET.ParseError) as e:
        results = []
        out.append("# cannot read the pytest report %s: %s\n" % (report, e))
    failed = 0
    for n, (ok, desc, directive, text) in enumerate(results, 1):
        line = "%s %d - %s" % ("ok" if ok else "not ok", n, desc)
        if directive:
            line += " # " + directive
        out.append(line + "\n")
        if not ok:
            failed += 1
            out.append(diag(text))
    if status != 0 and failed == 0:
        results.append(None)
        out.append("not ok %d - pytest exited with status %d (see the log)\n"
                   % (len(results), status))
    sys.stdout.write("1..%d\n" % len(results) + "".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
