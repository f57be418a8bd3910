"""`convert --to json | convert --to vcard` loses nothing.

The issue: "Piping one into the other must preserve every property value of
the input." Compared with vobject on both sides (normalisations:
conftest.normalise and conftest.compare_cards), for every property of rich
hand-written cards, except our own bookkeeping, which docs/mapping.md says
is rewritten from the server, never carried:
 - VERSION: the output is the version asked for;
 - REV and X-CONTACTFS-CREATED: the server's lastModifiedDateTime and
   createdDateTime, which a create body cannot set;
 - a PRODID naming contactfs. A PRODID from another producer is compared
   (rich-3.0.vcf has one): it rides in the open extension.
UID is compared like any other property: the original UID rides in the open
extension too.
"""
import collections
import json

import pytest

from conftest import FIXTURES, compare_cards, convert_ok, normalise, vobject_lines

RICH = ["sample-2.1.vcf", "rich-3.0.vcf", "rich-4.0.vcf", "unicode-3.0.vcf"]
NOT_COMPARED = ("REV", "X-CONTACTFS-CREATED")


def without_our_prodid(lines):
    return [line for line in lines
            if not (line.name.upper() == "PRODID" and "contactfs" in line.value.lower())]


def round_trip(data, version="3.0"):
    js = convert_ok(["--to", "json"], data)
    out = convert_ok(["--to", "vcard", "--vcard-version", version], js)
    assert out.startswith(b"BEGIN:VCARD\r\nVERSION:" + version.encode() + b"\r\n")
    return out


@pytest.mark.parametrize("version", ["3.0", "4.0"])
@pytest.mark.parametrize("fixture", RICH)
def test_json_round_trip_keeps_every_property_value(fixture, version):
    data = (FIXTURES / fixture).read_bytes()
    want = vobject_lines(data)
    got = vobject_lines(round_trip(data, version), our_output=True)
    assert len(got) == len(want)
    for i, (w, g) in enumerate(zip(want, got), 1):
        d = compare_cards(without_our_prodid(w), without_our_prodid(g), exclude=NOT_COMPARED)
        assert not d, f"{fixture} -> JSON -> {version}, card {i}:\n{d}"


def groups(lines):
    """The grouped properties of a card as a multiset of groups, each the
    frozenset of its (name, value) pairs: group names may be renumbered,
    but a label must stay with its phone."""
    by = collections.defaultdict(list)
    for line in lines:
        if line.group:
            by[line.group.lower()].append((line.name.upper(), normalise(line)))
    return collections.Counter(frozenset(v) for v in by.values())


@pytest.mark.parametrize("fixture", ["sample-2.1.vcf", "rich-3.0.vcf"])
def test_json_round_trip_keeps_labels_with_their_property(fixture):
    data = (FIXTURES / fixture).read_bytes()
    (want,) = vobject_lines(data)
    (got,) = vobject_lines(round_trip(data), our_output=True)
    assert groups(want), "fixture has no grouped property"
    assert groups(got) == groups(want)


@pytest.mark.parametrize("version", ["3.0", "4.0"])
@pytest.mark.parametrize("fixture", RICH)
def test_second_round_trip_changes_no_byte(fixture, version):
    once = round_trip((FIXTURES / fixture).read_bytes(), version)
    twice = round_trip(once, version)
    assert twice == once


# ---- Graph JSON -> vCard -> Graph JSON ---------------------------------------------

GRAPH = FIXTURES / "graph-contact-full.json"
# Set by the server, never part of a create body.
SERVER_ONLY = {"id", "changeKey", "parentFolderId", "createdDateTime", "lastModifiedDateTime",
               "@odata.context", "@odata.etag"}


def writable(contact):
    """The contact's writable fields, with empty values dropped (an empty
    string, list or address is the same as none) and the birthday as its
    date (Graph stores a time of day in it that means nothing)."""
    out = {}
    for k, v in contact.items():
        if k in SERVER_ONLY or k == "extensions":
            continue
        if isinstance(v, dict):
            v = {a: b for a, b in v.items() if b not in (None, "")}
        elif isinstance(v, list):
            v = [({a: b for a, b in x.items() if b not in (None, "")} if isinstance(x, dict)
                  else x) for x in v]
        if v in (None, "", [], {}):
            continue
        if k == "birthday":
            v = v[:10]
        out[k] = v
    return out


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_graph_contact_round_trip_keeps_every_field(version):
    src = json.loads(GRAPH.read_bytes())
    vcf = convert_ok(["--to", "vcard", "--vcard-version", version, GRAPH])
    back = json.loads(convert_ok(["--to", "json"], vcf))
    want, got = writable(src), writable(back)
    assert set(got) == set(want), (f"lost {sorted(set(want) - set(got))}, "
                                   f"gained {sorted(set(got) - set(want))}")
    for k in want:
        assert got[k] == want[k], k


def test_graph_contact_id_becomes_the_uid():
    src = json.loads(GRAPH.read_bytes())
    (card,) = vobject_lines(convert_ok(["--to", "vcard", GRAPH]), our_output=True)
    uids = [line.value for line in card if line.name == "UID"]
    assert uids == [src["id"]]
