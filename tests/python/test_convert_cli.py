"""The command-line contract of `contactfs convert`.

--to json [FILE]: vCard in (stdin without FILE), Graph create-contact body out
(an object, or an array for several cards). --to vcard [--vcard-version
3.0|4.0] [FILE]: Graph contact JSON in, vCard out. Exit 0 on success, 65 on
invalid input with "line N: ..." on stderr, 64 on bad usage.
"""
import json
import re

import pytest

from conftest import (EX_DATAERR, EX_USAGE, FIXTURES, TESTDATA, convert_ok, run_convert,
                      vobject_read)

CRLF = b"\r\n"


def card(*lines, version="3.0"):
    return CRLF.join([b"BEGIN:VCARD", b"VERSION:" + version.encode(), *lines,
                      b"END:VCARD", b""])


ALICE = card(b"N:Liddell;Alice;;;", b"FN:Alice Liddell", b"EMAIL;TYPE=INTERNET:alice@example.org",
             b"TEL;TYPE=CELL:+44 1865 555 0100")
BOB = card(b"N:Builder;Bob;;;", b"FN:Bob Builder", b"EMAIL:bob@example.net")
CAROL = card(b"FN:Carol Zh\xc3\xa0o", b"N:Zh\xc3\xa0o;Carol;;;", b"ORG:Rivers Ltd")


def to_json(data):
    return json.loads(convert_ok(["--to", "json"], data))


# ---- exit codes and messages --------------------------------------------------

def test_line_without_colon_is_refused_with_65_naming_the_line():
    data = card(b"FN:Broken Card", b"this line has no colon", b"EMAIL:x@example.org")
    r = run_convert(["--to", "json"], data)
    assert r.returncode == EX_DATAERR, r.stderr
    # BEGIN is line 1, VERSION 2, FN 3: the bad line is line 4.
    assert re.search(rb"\bline 4: ", r.stderr), r.stderr
    assert r.stdout == b""


def test_error_line_counts_from_the_start_of_the_input_not_the_card():
    data = ALICE + card(b"FN:Second", b"no colon in the second card")
    first_card_lines = ALICE.count(CRLF)
    r = run_convert(["--to", "json"], data)
    assert r.returncode == EX_DATAERR, r.stderr
    assert re.search(rb"\bline %d: " % (first_card_lines + 4), r.stderr), r.stderr


def test_error_line_counts_physical_lines_with_lf_line_ends():
    data = b"BEGIN:VCARD\nVERSION:3.0\nFN:Folded\n  continued\nNOTE:ok\nbad line\nEND:VCARD\n"
    r = run_convert(["--to", "json"], data)
    assert r.returncode == EX_DATAERR, r.stderr
    assert re.search(rb"\bline 6: ", r.stderr), r.stderr


def test_empty_input_is_refused_with_65():
    r = run_convert(["--to", "json"], b"")
    assert r.returncode == EX_DATAERR
    assert r.stderr.strip(), "an empty input must be refused with a message"
    assert r.stdout == b""


def test_input_without_any_card_is_refused_with_65():
    r = run_convert(["--to", "json"], b"just some text\nthat is no vcard\n")
    assert r.returncode == EX_DATAERR
    assert re.search(rb"\bline \d+: ", r.stderr), r.stderr


def test_garbage_json_is_refused_with_65():
    r = run_convert(["--to", "vcard"], b'{"displayName": "x",,, garbage')
    assert r.returncode == EX_DATAERR
    assert r.stderr.strip()
    assert r.stdout == b""


def test_garbage_json_error_names_the_line():
    r = run_convert(["--to", "vcard"], b'{\n  "displayName": "x",\n  oops\n}\n')
    assert r.returncode == EX_DATAERR
    assert re.search(rb"\bline 3: ", r.stderr), r.stderr


def test_json_that_is_not_a_contact_is_refused_with_65():
    for doc in (b'"a string"', b"42", b"[]", b"[1, 2]", b"null"):
        r = run_convert(["--to", "vcard"], doc)
        assert r.returncode == EX_DATAERR, (doc, r.returncode, r.stderr)
        assert r.stderr.strip(), doc


def test_array_with_a_non_object_after_contacts_is_refused_with_65():
    # Not exit 0 with an empty output: the whole input is refused.
    r = run_convert(["--to", "vcard"], b'[{"displayName": "A"}, 42]')
    assert r.returncode == EX_DATAERR, (r.returncode, r.stderr)
    assert b"element 2" in r.stderr, r.stderr
    assert r.stdout == b""


@pytest.mark.parametrize("args", [
    ["--to", "json", "--no-such-option"],
    ["--bogus"],
    ["--to", "xml"],
    ["--to", "vcard", "--vcard-version", "2.1"],
    ["--to", "vcard", "--vcard-version", "5.0"],
    [],
], ids=["unknown-option", "only-unknown-option", "bad-target", "version-2.1-not-writable",
        "bad-version", "no-target"])
def test_bad_usage_exits_64(args):
    r = run_convert(args, ALICE)
    assert r.returncode == EX_USAGE, (args, r.returncode, r.stderr)
    assert r.stderr.strip()
    assert r.stdout == b""


def test_missing_file_exits_66(tmp_path):
    r = run_convert(["--to", "json", tmp_path / "no-such.vcf"])
    assert r.returncode == 66, (r.returncode, r.stderr)
    assert b"no-such.vcf" in r.stderr


# ---- shapes ---------------------------------------------------------------------

def test_one_card_gives_one_json_object():
    body = to_json(ALICE)
    assert isinstance(body, dict)
    assert body["displayName"] == "Alice Liddell"
    assert body["givenName"] == "Alice"
    assert body["surname"] == "Liddell"
    assert [e["address"] for e in body["emailAddresses"]] == ["alice@example.org"]
    assert body["mobilePhone"] == "+44 1865 555 0100"


def test_several_cards_give_a_json_array_in_input_order():
    body = to_json(ALICE + BOB + CAROL)
    assert isinstance(body, list)
    assert [c["displayName"] for c in body] == ["Alice Liddell", "Bob Builder", "Carol Zhào"]
    assert body[2]["companyName"] == "Rivers Ltd"


def test_create_body_holds_no_server_only_fields():
    body = to_json(ALICE)
    for key in ("id", "changeKey", "parentFolderId", "createdDateTime",
                "lastModifiedDateTime", "@odata.etag"):
        assert key not in body, key


def test_overflow_goes_into_the_open_extension_inline():
    # sample-2.1.vcf has four emails; Graph v1.0 holds three.
    body = to_json((FIXTURES / "sample-2.1.vcf").read_bytes())
    assert len(body["emailAddresses"]) == 3
    exts = body.get("extensions")
    assert isinstance(exts, list) and len(exts) == 1, body
    ext = exts[0]
    assert ext["extensionName"] == "org.contactfs.vcard"
    assert ext["@odata.type"].lstrip("#") == "microsoft.graph.openTypeExtension"
    assert "mjg@old.example" in json.dumps(ext), "the fourth email must be in the extension"


def test_stdin_and_file_forms_agree(tmp_path):
    vcf = tmp_path / "in.vcf"
    vcf.write_bytes(ALICE + BOB)
    via_stdin = convert_ok(["--to", "json"], ALICE + BOB)
    via_file = convert_ok(["--to", "json", vcf])
    assert via_stdin == via_file

    js = tmp_path / "in.json"
    js.write_bytes(via_file)
    assert convert_ok(["--to", "vcard"], via_file) == convert_ok(["--to", "vcard", js])
    assert (convert_ok(["--to", "vcard", "--vcard-version", "4.0"], via_file)
            == convert_ok(["--to", "vcard", "--vcard-version", "4.0", js]))


# ---- the vCard we write -----------------------------------------------------------

LONG = card(
    b"N:Wolfeschlegelsteinhausenbergerdorff;Hubert;Blaine;;Sr.",
    b"FN:Hubert Blaine Wolfeschlegelsteinhausenbergerdorff Sr.",
    # 3-byte and 4-byte UTF-8 characters so a fold that splits one shows.
    "NOTE:{}".format("\u6f22\u5b57\u304b\u306a\U0001F600 long note, with; specials\\n " * 12)
    .encode("utf-8"),
    "ORG:{}".format("\u00c9tablissements " * 10).encode("utf-8"),
    b"ADR;TYPE=HOME:;;" + b"1234 Very Long Street Name That Goes On And On " * 3 +
    b";Springfield;;12345;USA")


@pytest.fixture(scope="module", params=["3.0", "4.0"])
def written(request):
    js = convert_ok(["--to", "json"], LONG + ALICE)
    out = convert_ok(["--to", "vcard", "--vcard-version", request.param], js)
    assert out.count(b"BEGIN:VCARD\r\n") == 2
    return request.param, out


def test_vcard_output_uses_crlf_only(written):
    _, out = written
    assert out.endswith(b"END:VCARD\r\n")
    body = out.replace(CRLF, b"")
    assert b"\r" not in body and b"\n" not in body, "bare CR or LF in output"


def test_vcard_output_lines_are_at_most_75_octets(written):
    _, out = written
    for n, line in enumerate(out.split(CRLF), 1):
        assert len(line) <= 75, f"line {n} has {len(line)} octets: {line!r}"


def test_vcard_output_folds_on_character_boundaries(written):
    _, out = written
    for n, line in enumerate(out.split(CRLF), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            pytest.fail(f"line {n} splits a UTF-8 character: {line!r}")


def test_vcard_output_is_folded_where_needed(written):
    # The NOTE is far longer than 75 octets: it must be continued.
    _, out = written
    assert any(line.startswith((b" ", b"\t")) for line in out.split(CRLF))


def test_vcard_output_unfolds_to_the_same_text(written):
    version, out = written
    cards = vobject_read(out, our_output=True)
    assert len(cards) == 2
    assert "\u6f22\u5b57\u304b\u306a\U0001F600 long note" in cards[0].note.value
    assert cards[0].fn.value == "Hubert Blaine Wolfeschlegelsteinhausenbergerdorff Sr."


def test_vcard_output_is_deterministic(written):
    version, out = written
    js = convert_ok(["--to", "json"], LONG + ALICE)
    assert convert_ok(["--to", "json"], LONG + ALICE) == js
    again = convert_ok(["--to", "vcard", "--vcard-version", version], js)
    assert again == out


def test_default_output_is_vcard_3_0():
    js = convert_ok(["--to", "json"], ALICE)
    out = convert_ok(["--to", "vcard"], js)
    assert out.startswith(b"BEGIN:VCARD\r\nVERSION:3.0\r\n")
    assert out == convert_ok(["--to", "vcard", "--vcard-version", "3.0"], js)


def test_version_4_0_output_starts_with_version_4_0():
    js = convert_ok(["--to", "json"], ALICE)
    out = convert_ok(["--to", "vcard", "--vcard-version", "4.0"], js)
    assert out.startswith(b"BEGIN:VCARD\r\nVERSION:4.0\r\n")


def test_json_array_gives_one_card_per_contact():
    js = convert_ok(["--to", "json"], ALICE + BOB + CAROL)
    out = convert_ok(["--to", "vcard"], js)
    assert out.count(b"BEGIN:VCARD\r\n") == 3
    assert [c.fn.value for c in vobject_read(out, our_output=True)] == [
        "Alice Liddell", "Bob Builder", "Carol Zhào"]


# ---- Graph JSON as GET returns it ---------------------------------------------------

GARTH = TESTDATA / "graph" / "v1-get-contact-response.json"


@pytest.mark.skipif(not GARTH.is_file(), reason=f"shared test data absent: {GARTH.name}")
def test_graph_get_response_converts_to_the_same_values():
    # The v1.0 "get contact" example from the Graph docs.
    src = json.loads(GARTH.read_bytes())
    (c,) = vobject_read(convert_ok(["--to", "vcard", GARTH]), our_output=True)
    assert c.fn.value == src["displayName"]
    assert c.n.value.family == src["surname"]
    assert c.n.value.given == src["givenName"]
    assert [e.value for e in c.contents["email"]] == [src["emailAddresses"][0]["address"]]
    assert [t.value for t in c.contents["tel"]] == src["businessPhones"]
    assert c.org.value[0] == src["companyName"]
    assert c.org.value[1] == src["department"]
    assert c.title.value == src["jobTitle"]
    assert c.bday.value == "1974-07-22"
    assert [u.value for u in c.contents["url"]] == [src["businessHomePage"]]
    (adr,) = c.contents["adr"]
    a = src["businessAddress"]
    assert (adr.value.street, adr.value.city, adr.value.region, adr.value.code,
            adr.value.country) == (a["street"], a["city"], a["state"], a["postalCode"],
                                   a["countryOrRegion"])
    assert "WORK" in [t.upper() for t in adr.params.get("TYPE", [])]


@pytest.mark.parametrize("tz", ["UTC", "America/Los_Angeles", "Pacific/Kiritimati",
                                "Pacific/Pago_Pago"])
def test_birthday_never_shifts_a_day_whatever_the_time_zone(tz):
    contact = {"displayName": "Birthday Person", "birthday": "1990-01-01T00:00:00Z"}
    out = convert_ok(["--to", "vcard"], json.dumps(contact).encode(), env={"TZ": tz})
    (c,) = vobject_read(out, our_output=True)
    assert c.bday.value.replace("-", "")[:8] == "19900101"
    card = convert_ok(["--to", "json"], card_with_bday(b"1990-01-01"), env={"TZ": tz})
    assert json.loads(card)["birthday"].startswith("1990-01-01")


def card_with_bday(bday):
    return card(b"FN:Birthday Person", b"N:Person;Birthday;;;", b"BDAY:" + bday)


# ---- what other readers take: repaired with a warning, or refused ----------
# One row per leniency of docs/vcard.md: the input, the warnings convert must
# print ("line N: what"), and values the JSON must hold. Each card is small
# and our own.

def lf(*lines):
    return b"\n".join(lines) + b"\n"


REPAIRS = [
    ("no_begin", lf(b"VERSION:3.0", b"FN:Frank Dawson", b"END:vCard"),
     ["line 1: no BEGIN:VCARD before this VERSION line; card begun here"],
     {"displayName": "Frank Dawson"}),
    ("grouped_markers", lf(b"TEST.BEGIN:VCARD", b"TEST.VERSION:3.0", b"TEST.N:Doe;John;;Mr;",
                           b"FN:John Doe", b"TEST.END:VCARD"),
     ["line 1: BEGIN:VCARD with a group or blanks; read as BEGIN:VCARD",
      "line 2: VERSION with a group or blanks; read as VERSION:3.0",
      "line 5: END:VCARD with a group or blanks; read as END:VCARD"],
     {"displayName": "John Doe", "surname": "Doe", "givenName": "John", "title": "Mr"}),
    ("empty_group", lf(b"BEGIN:VCARD", b"VERSION:3.0", b".FN:Dot Ted", b"END:VCARD"),
     ['line 3: empty group before "FN" dropped'], {"displayName": "Dot Ted"}),
    ("version_blank", lf(b"BEGIN:VCARD", b"VERSION: 4.0", b"FN:Four", b"BDAY:19740722",
                         b"END:VCARD"),
     ["line 2: VERSION with a group or blanks; read as VERSION:4.0"],
     {"displayName": "Four", "birthday": "1974-07-22T11:59:00Z"}),
    ("name_without_colon", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"N", b"FN:John Doe",
                              b"END:VCARD"),
     ["line 3: no ':' after \"N\"; read as an empty value"], {"displayName": "John Doe"}),
    ("cut_end", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Cut", b"EMAIL:cut@example.org", b"E"),
     ['line 5: "E" at end of input read as a cut END:VCARD'],
     {"displayName": "Cut", "emailAddresses": [{"address": "cut@example.org"}]}),
    ("missing_end", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Open"),
     ["line 3: missing END:VCARD at end of input; card closed"], {"displayName": "Open"}),
    ("comments", lf(b"# from a phone", b"BEGIN:VCARD", b"VERSION:2.1", b"# note", b"FN:Hash",
                    b"END:VCARD"),
     ["line 1: comment lines before the card skipped", "line 4: comment line skipped"],
     {"displayName": "Hash"}),
    ("param_blanks", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Tel", b"TEL;TYPE = cell:+1 555 0100",
                        b"END:VCARD"),
     ["line 4: TEL: blanks around '=' of TYPE dropped"],
     {"displayName": "Tel", "mobilePhone": "+1 555 0100"}),
    ("bare_param_30", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Bare", b"TEL;CELL:+1 555 0100",
                         b"PHOTO;BASE64:", b"  QUJD", b"END:VCARD"),
     ['line 4: TEL: parameter "CELL" without a name; read as TYPE=CELL',
      'line 5: PHOTO: parameter "BASE64" without a name; read as ENCODING=BASE64'],
     {"displayName": "Bare", "mobilePhone": "+1 555 0100",
      "@contactfs.photo": "data:image/jpeg;base64,QUJD"}),
    ("quoted_type_list", lf(b"BEGIN:VCARD", b"VERSION:4.0", b"FN:Home",
                            b'TEL;VALUE=uri;TYPE="voice,home":tel:+1-555-0100', b"END:VCARD"),
     ['line 4: TEL: commas inside the quotes of TYPE="voice,home" read as separating types'],
     {"displayName": "Home", "homePhones": ["+1-555-0100"]}),
    ("escaped_quote", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Quote",
                         b'NOTE:provided \\"AS IS\\"', b"END:VCARD"),
     ["line 4: NOTE: backslash before '\"' dropped"],
     {"displayName": "Quote", "personalNotes": 'provided "AS IS"'}),
    ("bad_base64", lf(b"BEGIN:VCARD", b"VERSION:2.1", b"FN:Pic",
                      b"PHOTO;ENCODING=BASE64;TYPE=JPEG:QUJD:REVG", b"", b"END:VCARD"),
     ["line 4: PHOTO: invalid base64 from character 5 of the value; characters outside the "
      "alphabet skipped"],
     {"displayName": "Pic", "@contactfs.photo": "data:image/jpeg;base64,QUJDREVG"}),
    ("data_uri_under_b", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Uri",
                            b"PHOTO;ENCODING=b:data:image/png;base64,QUJD", b"END:VCARD"),
     ["line 4: PHOTO: a data: URI under ENCODING=b; its bytes taken"],
     {"displayName": "Uri", "@contactfs.photo": "data:image/png;base64,QUJD"}),
    ("unknown_charset", lf(b"BEGIN:VCARD", b"VERSION:2.1", b"FN;CHARSET=X-NOPE:Caf\xe9",
                           b"END:VCARD"),
     ["line 3: unknown CHARSET, read as Windows-1252"], {"displayName": "Caf\u00e9"}),
    ("no_version", lf(b"BEGIN:VCARD", b"FN:Old", b"END:VCARD"),
     ["line 1: no VERSION; read as 3.0"], {"displayName": "Old"}),
    ("control_characters", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"FN:Es\x1bcape",
                              b"NOTE:bell\x07 gone\x7f, tab\tkept", b"TEL;TYPE=ce\x01ll:+1 555 0100",
                              b"END:VCARD"),
     ["line 3: FN: 1 control character removed from the value (the first U+001B)",
      "line 4: NOTE: 2 control characters removed from the value (the first U+0007)",
      "line 5: TEL: 1 control character removed from parameter TYPE (the first U+0001)"],
     {"displayName": "Escape", "personalNotes": "bell gone, tab\tkept",
      "mobilePhone": "+1 555 0100"}),
]


@pytest.mark.parametrize("data,warnings,values", [r[1:] for r in REPAIRS],
                         ids=[r[0] for r in REPAIRS])
def test_a_repair_is_printed_with_its_line_and_the_values_are_kept(data, warnings, values):
    r = run_convert(["--to", "json"], data)
    assert r.returncode == 0, r.stderr
    got = [line.split(": ", 3)[3] for line in r.stderr.decode().splitlines()
           if line.startswith("contactfs: warning: ")]
    assert got == warnings
    body = json.loads(r.stdout)
    for key, want in values.items():
        assert body.get(key) == want, key
    # What is written back is strict and reads again without any repair.
    for version in ("3.0", "4.0"):
        out = convert_ok(["--to", "vcard", "--vcard-version", version], r.stdout)
        again = run_convert(["--to", "json"], out)
        assert again.returncode == 0 and b"warning" not in again.stderr, again.stderr
        assert json.loads(again.stdout) == body


def test_a_21_agent_card_stays_one_contact_with_the_agent_kept():
    data = card(b"FN:Boss", b"AGENT:", b"BEGIN:VCARD", b"VERSION:2.1", b"FN:Assistant",
                b"TEL;WORK:+1 555 0100", b"END:VCARD", b"EMAIL:boss@example.org", version="2.1")
    r = run_convert(["--to", "json"], data)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert isinstance(body, dict), "one contact, not two"
    assert body["displayName"] == "Boss"
    out = convert_ok(["--to", "vcard"], r.stdout)
    assert out.count(b"BEGIN:VCARD\r\n") == 1, "the nested card is a value, not a card"
    agent = vobject_read(out, our_output=True)[0].contents["agent"][0].value
    assert agent == ("BEGIN:VCARD\nVERSION:2.1\nFN:Assistant\nTEL;WORK:+1 555 0100\n"
                     "END:VCARD\n")


REFUSALS = [
    ("begin_of_another_object", lf(b"BEGIN:VCARDinvalid", b"VERSION:3.0", b"FN:x", b"END:VCARD"),
     'line 1: expected BEGIN:VCARD, found "BEGIN:VCARDinvalid"'),
    ("text_before_the_card", lf(b"Hello,", b"BEGIN:VCARD", b"FN:x", b"END:VCARD"),
     'line 1: expected BEGIN:VCARD, found "Hello,"'),
    ("stray_word", lf(b"BEGIN:VCARD", b"VERSION:3.0", b"NOTE:folded badly", b"continued",
                      b"END:VCARD"),
     'line 4: not a property (no \':\'): "continued"'),
    ("begin_inside_a_card", lf(b"BEGIN:VCARD", b"FN:x", b"BEGIN:VCARD", b"FN:y", b"END:VCARD"),
     "line 3: BEGIN:VCARD inside the card begun at line 1 (missing END:VCARD?)"),
    ("agent_without_end", lf(b"BEGIN:VCARD", b"VERSION:2.1", b"AGENT:", b"BEGIN:VCARD",
                             b"FN:x"),
     "line 3: AGENT: the vCard it carries has no END:VCARD"),
    ("unknown_encoding", lf(b"BEGIN:VCARD", b"VERSION:2.1", b"FN;ENCODING=UUENCODE:x",
                            b"END:VCARD"),
     "line 3: FN: unknown ENCODING"),
    ("unknown_version", lf(b"BEGIN:VCARD", b"VERSION:5.0", b"FN:x", b"END:VCARD"),
     'line 2: unsupported VERSION "5.0" (2.1, 3.0 and 4.0 are)'),
]


@pytest.mark.parametrize("data,reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_what_no_reader_agrees_on_is_refused_with_65_and_the_reason(data, reason):
    r = run_convert(["--to", "json"], data)
    assert r.returncode == EX_DATAERR, r.stderr
    assert r.stderr.decode().rstrip().endswith(reason), r.stderr
    assert r.stdout == b""
