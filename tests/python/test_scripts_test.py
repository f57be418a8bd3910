"""scripts/test's counting: how a JUnit report's cases become "N passed, M
failed, K skipped". The junit() function is taken from the script itself
and run on small reports written as ctest and pytest write them."""
import re
import subprocess

import pytest

from conftest import REPO

CTEST_REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="(empty)" tests="5" failures="1" disabled="0" skipped="2">
  <testcase name="t.ran" classname="t.ran" status="run"><system-out></system-out></testcase>
  <testcase name="t.said_skip" classname="t.said_skip" status="notrun">
    <skipped message="SKIP_RETURN_CODE=77"/>
    <system-out>SKIP said_skip: /usr/bin/python3 is missing</system-out>
  </testcase>
  <testcase name="t.failed" classname="t.failed" status="fail"><failure message=""/></testcase>
  <testcase name="t.no_program" classname="t.no_program" status="notrun">
    <skipped message="Unable to find executable"/>
  </testcase>
  <testcase name="t.regex_skip" classname="t.regex_skip" status="notrun">
    <skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/>
  </testcase>
</testsuite>
"""

PYTEST_REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
  <testcase classname="test_x" name="test_ok"/>
  <testcase classname="test_x" name="test_ok_too"/>
  <testcase classname="test_x" name="test_skip">
    <skipped type="pytest.skip" message="no khard">test_x.py:3: no khard</skipped>
  </testcase>
  <testcase classname="test_x" name="test_bad"><failure message="assert 0"/></testcase>
  <testcase classname="test_x" name="test_broken_fixture"><error message="setup"/></testcase>
</testsuite></testsuites>
"""


def junit(mode, report):
    text = (REPO / "scripts" / "test").read_text()
    fn = re.search(r"^junit\(\) \{\n.*?^\}\n", text, re.S | re.M)
    assert fn, "scripts/test has no junit() function"
    r = subprocess.run(["sh", "-c", fn.group(0) + 'junit "$1" "$2"', "sh", mode, str(report)],
                       env={"PY": "/usr/bin/python3", "PATH": "/usr/bin:/bin"},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("report, counts, failed", [
    # ctest: SKIP_RETURN_CODE (or the skip regular expression) is a skip; a
    # "notrun" for any other reason (its program is missing) is a failure.
    (CTEST_REPORT, "1 2 2", ["t.failed::t.failed", "t.no_program::t.no_program"]),
    # pytest: skips are counted, errors (a fixture that broke) are failures.
    (PYTEST_REPORT, "2 2 1", ["test_x::test_bad", "test_x::test_broken_fixture"]),
], ids=["ctest", "pytest"])
def test_a_report_counts_passed_failed_and_skipped_and_names_the_failures(tmp_path, report,
                                                                          counts, failed):
    path = tmp_path / "report.xml"
    path.write_text(report)
    assert junit("count", path) == counts + "\n"
    assert junit("failed", path).split() == failed


def test_a_missing_or_unreadable_report_counts_nothing(tmp_path):
    (tmp_path / "bad.xml").write_text("<testsuite")
    for report in (tmp_path / "none.xml", tmp_path / "bad.xml"):
        assert junit("count", report) == "0 0 0\n"
        assert junit("failed", report) == ""


def test_the_closing_line_and_the_header_say_passed_failed_and_skipped():
    text = (REPO / "scripts" / "test").read_text()
    header = " ".join(line.lstrip("# ") for line in text.split("\n\n")[0].splitlines())
    assert '"N passed, M failed, K skipped"' in header, header
    assert text.rstrip().splitlines()[-2:] == [
        'echo "$passed passed, $failed failed, $skipped skipped"', '[ "$failed" -eq 0 ]']
