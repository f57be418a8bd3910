"""The vCards other projects test with (../shared/testdata/vcards/), run
through `contactfs convert`.

Every file either converts or is refused with exit 65 and a "line N:" reason:
never another exit status, never a crash (also under ASan/UBSan when
CONTACTFS_BIN is the sanitizer build, and under valgrind when
CONTACTFS_VALGRIND=1). For every file python3-vobject also reads, the round
trip vCard -> JSON -> vCard keeps every FN, N, EMAIL, TEL, ADR, ORG, TITLE,
BDAY, NOTE, URL and CATEGORIES value (normalisations: conftest.normalise).
"""
import json
import re

import pytest

from conftest import (CORPUS_REFUSED, EX_DATAERR, KEY_PROPS, TESTDATA, compare_cards, convert_ok,
                      run_convert, valgrind_wanted, vobject_lines)

CORPUS = TESTDATA / "vcards"

if not CORPUS.is_dir():
    pytest.skip(f"shared vCard corpus absent ({CORPUS.name} not found beside the repository); "
                "corpus tests skipped", allow_module_level=True)

FILES = sorted(p for p in CORPUS.rglob("*.vcf") if p.is_file())


def rel(p):
    return str(p.relative_to(CORPUS))


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_corpus_file_converts_or_is_refused_with_a_line_number(path):
    vg = valgrind_wanted()
    r = run_convert(["--to", "json", path], valgrind=vg)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode in (0, EX_DATAERR), (
        f"{rel(path)}: exit {r.returncode} (crash or unexpected status)\n{err}")
    if r.returncode == EX_DATAERR:
        m = re.search(r"\bline (\d+): (.*)", err)
        assert m, f"{rel(path)}: refused without a line-numbered reason: {err!r}"
        CORPUS_REFUSED[rel(path)] = m.group(0).strip()
        print(f"refused {rel(path)}: {m.group(0).strip()}")
        assert r.stdout == b"", "a refused input must not produce half an output"
        return

    body = json.loads(r.stdout)
    contacts = body if isinstance(body, list) else [body]
    assert all(isinstance(c, dict) for c in contacts)
    if isinstance(body, list):
        assert len(body) >= 2, "an array is for several cards"

    # Our own JSON must always convert back, in both versions.
    for version in ("3.0", "4.0"):
        back = run_convert(["--to", "vcard", "--vcard-version", version], r.stdout, valgrind=vg)
        assert back.returncode == 0, (
            f"{rel(path)}: our own JSON does not convert back to {version}: exit "
            f"{back.returncode}\n{back.stderr.decode('utf-8', 'replace')}")
        assert back.stdout.count(b"BEGIN:VCARD\r\n") == len(contacts)


def vobject_readable(path):
    try:
        return vobject_lines(path.read_bytes())
    except Exception:  # noqa: BLE001 -- anything vobject cannot read is out of scope
        return None


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_corpus_round_trip_keeps_key_values(path):
    want_cards = vobject_readable(path)
    if want_cards is None:
        pytest.skip("python3-vobject cannot read this file either")
    js = run_convert(["--to", "json", path])
    if js.returncode == EX_DATAERR:
        pytest.skip(f"refused: {js.stderr.decode('utf-8', 'replace').strip()}")
    assert js.returncode == 0, js.stderr
    out = convert_ok(["--to", "vcard"], js.stdout)
    got_cards = vobject_lines(out, our_output=True)
    assert len(got_cards) == len(want_cards), (
        f"vobject reads {len(want_cards)} cards in the input, {len(got_cards)} in our output")
    problems = []
    for i, (w, g) in enumerate(zip(want_cards, got_cards), 1):
        d = compare_cards(w, g, KEY_PROPS)
        if d:
            problems.append(f"card {i}:\n{d}")
    assert not problems, f"{rel(path)}: round trip changed values\n" + "\n".join(problems)
