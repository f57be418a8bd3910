"""The vCards other projects test with (../shared/testdata/vcards/), run
through `contactfs convert`.

Every file either converts or is refused with exit 65 and a "line N:" reason:
never another exit status, never a crash (also under ASan/UBSan when
CONTACTFS_BIN is the sanitizer build, and under valgrind when
CONTACTFS_VALGRIND=1). Which files are refused, and which are repaired with
which warnings, is pinned below: a reader that starts refusing or repairing a
good card fails here, and changing either list is a decision (docs/vcard.md
says why each is refused). For every file python3-vobject also reads, the
round trip vCard -> JSON -> vCard keeps every FN, N, EMAIL, TEL, ADR, ORG,
TITLE, BDAY, NOTE, URL and CATEGORIES value (normalisations:
conftest.normalise).
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

# The files refused, with the reason convert gives (after "FILE: ").
REFUSED = {
    # KContacts reads it (it only looks at the start of the line), Evolution
    # does not check BEGIN's value; vobject and we take it for another
    # object: "BEGIN:VCARDinvalid" is no vCard's first line.
    "l0b0-vcard/invalid_begin.vcf":
        'line 1: expected BEGIN:VCARD, found "BEGIN:VCARDinvalid"',
}

# The files accepted with repairs, with every warning convert prints.
REPAIRED = {
    "android-vcard/v21_android_custom_prop.vcf": ["line 1: no VERSION; read as 3.0"],
    "android-vcard/v21_malformed_photo.vcf": [
        "line 5: PHOTO: invalid base64 from character 29 of the value; characters outside "
        "the alphabet skipped"],
    "android-vcard/v21_simple_1.vcf": ["line 1: no VERSION; read as 3.0"],
    "evolution-data-server/data-name-only.vcf": ["line 1: no VERSION; read as 3.0"],
    "evolution-data-server/migration-migrate-4.vcf": ["line 1: no VERSION; read as 3.0"],
    "evolution-data-server/vcard-6.vcf": [
        'line 7: TEL: parameter "MSG,WORK" without a name; read as TYPE=MSG,WORK',
        'line 8: TEL: parameter "FAX,WORK" without a name; read as TYPE=FAX,WORK'],
    "evolution-data-server/vcard-7.vcf": [
        "line 1: no BEGIN:VCARD before this VERSION line; card begun here"],
    "evolution-data-server/vcard-9.vcf": [
        'line 9: "E" at end of input read as a cut END:VCARD'],
    "ez-vcard/John_Doe_ANDROID.vcf": [
        "line 82: text is not valid UTF-8; stray bytes read as Windows-1252"],
    "ez-vcard/John_Doe_GMAIL.vcf": ["line 20: NOTE: backslash before '\"' dropped"],
    "ez-vcard/John_Doe_MAC_ADDRESS_BOOK.vcf": [
        "line 23: NOTE: backslash before '\"' dropped",
        'line 27: PHOTO: parameter "BASE64" without a name; read as ENCODING=BASE64'],
    "ez-vcard/outlook-2003.vcf": [
        "line 39: FBURL: 1 control character removed from the decoded value (the first U+000C)"],
    "ez-vcard/rfc6350-example.vcf": [
        'line 13: TEL: commas inside the quotes of TYPE="work,voice" read as separating types',
        'line 14: TEL: commas inside the quotes of TYPE="work,cell,voice,video,text" read as '
        "separating types"],
    "ical.js/vcard_author.vcf": [
        'line 13: TEL: commas inside the quotes of TYPE="work,voice" read as separating types',
        'line 14: TEL: commas inside the quotes of TYPE="work,cell,voice,video,text" read as '
        "separating types"],
    "ical4j-vcard/vcard-antoni-outlook2003-valueurl.vcf": [
        "line 16: text is not valid UTF-8; stray bytes read as Windows-1252"],
    "kcontacts/testfullvcard.vcf": [
        'line 4: TEL: commas inside the quotes of TYPE="voice,home" read as separating types',
        'line 5: TEL: commas inside the quotes of TYPE="voice,cell,text" read as separating types',
        'line 6: TEL: commas inside the quotes of TYPE="voice,work" read as separating types'],
    "kcontacts/vcard7.vcf": [
        'line 3: LABEL: parameter "QUOTED-PRINTABLE" without a name; read as '
        "ENCODING=QUOTED-PRINTABLE",
        'line 3: LABEL: parameter "WORK" without a name; read as TYPE=WORK',
        "line 1: no VERSION; read as 3.0"],
    "khard/unparsable.vcf": ["line 3: missing END:VCARD at end of input; card closed"],
    "l0b0-vcard/dot_at_line_start.vcf": [
        "line 1: BEGIN:VCARD with a group or blanks; read as BEGIN:VCARD",
        "line 2: VERSION with a group or blanks; read as VERSION:3.0",
        'line 3: empty group before "N" dropped',
        'line 4: empty group before "FN" dropped',
        "line 5: END:VCARD with a group or blanks; read as END:VCARD"],
    "l0b0-vcard/missing_group.vcf": [
        "line 1: BEGIN:VCARD with a group or blanks; read as BEGIN:VCARD",
        "line 2: VERSION with a group or blanks; read as VERSION:3.0",
        "line 5: END:VCARD with a group or blanks; read as END:VCARD"],
    "l0b0-vcard/missing_n_value.vcf": ['line 3: no \':\' after "N"; read as an empty value'],
    "l0b0-vcard/missing_start.vcf": [
        "line 1: no BEGIN:VCARD before this VERSION line; card begun here"],
}


def rel(p):
    return str(p.relative_to(CORPUS))


def test_every_pinned_file_is_in_the_corpus():
    names = {rel(p) for p in FILES}
    missing = sorted(f for f in list(REFUSED) + list(REPAIRED) if f not in names)
    assert not missing, f"pinned but not in the corpus (update the lists): {missing}"


def warnings_of(path, stderr):
    prefix = f"contactfs: warning: {path}: "
    return [line[len(prefix):] for line in stderr.splitlines() if line.startswith(prefix)]


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
        assert rel(path) in REFUSED, f"{rel(path)}: refused, but not on the list: {err!r}"
        assert m.group(0).strip() == REFUSED[rel(path)], (
            f"{rel(path)}: refused for another reason than the pinned one")
        return
    assert rel(path) not in REFUSED, f"{rel(path)}: accepted, but pinned as refused"
    assert warnings_of(path, err) == REPAIRED.get(rel(path), []), (
        f"{rel(path)}: repairs differ from the pinned ones:\n{err}")

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
