"""The Graph emulator (tests/graph_emulator/server.py) does what its README
says: the tests drive it over HTTP exactly as a client would, so a client
tested against it is tested against these rules.

One emulator serves the module (each test starts from a fresh seed, default
faults and zeroed counters); the generator and shutdown tests start their
own.
"""
import base64
import hashlib
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "tests" / "graph_emulator" / "server.py"
TESTDATA = REPO.parent / "shared" / "testdata" / "graph"
TOKEN = "test-token"
ME = "me@contoso.example"
OTHER = "garth@contoso.example"

sys.path.insert(0, str(SERVER.parent))
import generator  # noqa: E402  (the emulator's own JPEG writer, for photo bodies)


@pytest.fixture(autouse=True)
def _need_binary():
    """Overrides conftest's check: these tests need no contactfs binary."""


def start_emulator(*args):
    """Start server.py on a free port; returns (process, base URL)."""
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    line = proc.stdout.readline()
    m = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
    if not m:
        proc.kill()
        raise AssertionError(f"emulator did not start: {line!r} {proc.stderr.read()}")
    return proc, m.group(1)


def stop_emulator(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


class Emu:
    """A client of one emulator: Graph calls, identity calls, admin calls."""

    def __init__(self, base):
        self.base = base

    def raw(self, method, url, body=None, headers=None):
        """(status, headers, body bytes) of one request on a new connection."""
        req = urllib.request.Request(url if url.startswith("http") else self.base + url,
                                     data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def call(self, method, path, body=None, headers=None, token=TOKEN, raw_body=None, immutable=True):
        """A Graph call: (status, headers, parsed JSON or bytes or None).
        immutable: ask for immutable ids (Prefer: IdType="ImmutableId", on
        the same line as any Prefer given), as contactfs does."""
        h = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        if immutable:
            h["Prefer"] = 'IdType="ImmutableId"' + (f", {h['Prefer']}" if h.get("Prefer") else "")
        url = path if path.startswith("http") or path.startswith("/beta/") else "/v1.0" + path
        status, rh, data = self.raw(method, url, data, h)
        ctype = rh.get("Content-Type", "")
        if data and ctype.startswith("application/json"):
            return status, rh, json.loads(data)
        return status, rh, data or None

    def ok(self, method, path, body=None, want=200, **kw):
        status, _, data = self.call(method, path, body, **kw)
        assert status == want, f"{method} {path}: {status} {data}"
        return data

    def admin(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        status, _, out = self.raw(method, "/_emulator/" + path, data,
                                  {"Content-Type": "application/json"} if data else {})
        assert status == 200, f"admin {method} {path}: {status} {out}"
        return json.loads(out)

    def faults(self, **knobs):
        return self.admin("POST", "faults", knobs)

    def state(self, upn=ME):
        return self.admin("GET", "state")["mailboxes"][upn]

    def requests(self):
        return self.admin("GET", "requests")

    def form(self, path, fields):
        status, _, data = self.raw("POST", path, urllib.parse.urlencode(fields).encode(),
                                   {"Content-Type": "application/x-www-form-urlencoded"})
        return status, json.loads(data)


@pytest.fixture(scope="module")
def server():
    proc, base = start_emulator("--token", TOKEN)
    emu = Emu(base)
    emu.default_faults = emu.admin("GET", "faults")
    yield emu
    code, out, err = stop_emulator(proc)
    assert code == 0, err
    assert out == "", "nothing but the listening line may go to stdout"


@pytest.fixture
def emu(server):
    server.admin("POST", "reset", {"mailboxes": {ME: {}, OTHER: {}}})
    server.admin("POST", "faults", server.default_faults)
    server.admin("POST", "requests/reset")
    return server


def new_contact(emu, body=None, folder_path="/me/contacts"):
    return emu.ok("POST", folder_path, body or {"givenName": "Pavel", "surname": "Bansky"}, want=201)


def jpeg(n=0):
    return generator.sample_jpeg(n)


def in_threads(fns):
    """Run the callables at once; their results in order."""
    out = [None] * len(fns)

    def run(i):
        out[i] = fns[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# ---- contacts: create, read, update, delete, etags -------------------------------------------

def test_create_returns_201_with_the_full_contact_and_computed_display_name(emu):
    c = new_contact(emu, {"givenName": "Pavel", "surname": "Bansky",
                          "emailAddresses": [{"address": "pavelb@fabrikam.example", "name": "Pavel Bansky"}],
                          "businessPhones": ["+1 732 555 0102"]})
    for key in ("id", "changeKey", "createdDateTime", "lastModifiedDateTime", "parentFolderId",
                "@odata.etag", "@odata.context"):
        assert c[key], key
    assert c["@odata.etag"] == f'W/"{c["changeKey"]}"'
    assert c["displayName"] == "Pavel Bansky"
    assert c["parentFolderId"] == emu.state()["defaultFolderId"]
    assert c["homeAddress"] == {} and c["homePhones"] == [] and c["mobilePhone"] is None
    got = emu.ok("GET", f"/me/contacts/{c['id']}")
    assert got["emailAddresses"] == c["emailAddresses"] and got["changeKey"] == c["changeKey"]


def test_patch_merges_and_changes_the_change_key(emu):
    c = new_contact(emu, {"givenName": "Pavel", "surname": "Bansky", "jobTitle": "CEO"})
    u = emu.ok("PATCH", f"/me/contacts/{c['id']}",
               {"displayName": "P. B.", "homeAddress": {"city": "Seattle"}})
    assert u["jobTitle"] == "CEO" and u["homeAddress"] == {"city": "Seattle"}
    assert u["displayName"] == "P. B."
    assert u["changeKey"] != c["changeKey"]
    assert u["lastModifiedDateTime"] >= c["lastModifiedDateTime"]


def test_return_minimal_orderby_count_and_the_user(emu):
    for name in ("b", "C", "a"):
        new_contact(emu, {"givenName": name})
    page = emu.ok("GET", "/me/contacts?$orderby=givenName desc&$count=true".replace(" ", "%20"))
    assert [c["givenName"] for c in page["value"]] == ["C", "b", "a"] and page["@odata.count"] == 3
    c = page["value"][0]
    status, headers, body = emu.call("PATCH", f"/me/contacts/{c['id']}", {"nickName": "x"},
                                     headers={"Prefer": "return=minimal"})
    assert status == 204 and body is None
    assert headers["Preference-Applied"] == 'return=minimal, IdType="ImmutableId"'
    me = emu.ok("GET", "/me")
    assert me["userPrincipalName"] == ME and me["id"] == emu.state()["userId"]


def test_patch_of_name_parts_without_display_name_recomputes_it(emu):
    c = new_contact(emu, {"givenName": "Pavel", "surname": "Bansky", "displayName": "Boss"})
    u = emu.ok("PATCH", f"/me/contacts/{c['id']}", {"givenName": "Paul"})
    assert u["displayName"] == "Paul Bansky"


def test_if_match_must_be_the_current_etag(emu):
    c = new_contact(emu)
    path = f"/me/contacts/{c['id']}"
    u = emu.ok("PATCH", path, {"nickName": "a"}, headers={"If-Match": c["@odata.etag"]})
    status, _, err = emu.call("PATCH", path, {"nickName": "b"}, headers={"If-Match": c["@odata.etag"]})
    assert status == 412 and err["error"]["code"] == "ErrorIrresolvableConflict"
    emu.ok("PATCH", path, {"nickName": "c"}, headers={"If-Match": u["changeKey"]})      # bare key
    emu.ok("PATCH", path, {"nickName": "d"}, headers={"If-Match": "*"})
    status, _, err = emu.call("DELETE", path, headers={"If-Match": u["@odata.etag"]})
    assert status == 412
    emu.ok("DELETE", path, want=204)


def test_delete_moves_to_deleted_items_and_unknown_ids_are_404(emu):
    c = new_contact(emu)
    emu.ok("DELETE", f"/me/contacts/{c['id']}", want=204)
    status, _, err = emu.call("GET", f"/me/contacts/{c['id']}")
    assert status == 404 and err["error"]["code"] == "ErrorItemNotFound"
    st = emu.state()
    assert st["contacts"] == [] and [d["id"] for d in st["deletedItems"]["contacts"]] == [c["id"]]
    for method in ("GET", "PATCH", "DELETE"):
        status, _, err = emu.call(method, "/me/contacts/AAMkAnope=", {} if method == "PATCH" else None)
        assert status == 404 and err["error"]["code"] == "ErrorItemNotFound", method


def test_a_contact_cannot_be_moved(emu):
    folder = emu.ok("POST", "/me/contactFolders", {"displayName": "Work"}, want=201)
    c = new_contact(emu)
    status, _, err = emu.call("PATCH", f"/me/contacts/{c['id']}", {"parentFolderId": folder["id"]})
    assert status == 400
    assert emu.ok("GET", f"/me/contacts/{c['id']}")["parentFolderId"] == emu.state()["defaultFolderId"]


def test_error_envelope_echoes_client_request_id(emu):
    status, headers, err = emu.call("GET", "/me/contacts/nope", headers={"client-request-id": "abc-123"})
    assert status == 404
    assert headers["client-request-id"] == "abc-123" and headers["request-id"]
    inner = err["error"]["innerError"]
    assert inner["client-request-id"] == "abc-123" and inner["request-id"] == headers["request-id"]
    assert inner["date"] and err["error"]["message"]


def test_ids_are_regular_unless_the_request_asks_for_immutable_ones(emu):
    # concepts/outlook-immutable-id.md: the header applies to the request it
    # comes with; without it Outlook ids are the regular ones.
    c = emu.ok("POST", "/me/contacts", {"givenName": "Pavel"}, want=201, immutable=False)
    st = emu.state()["contacts"][0]
    imm, mut = st["id"], st["mutableId"]
    assert imm != mut and c["id"] == mut
    status, headers, got = emu.call("GET", f"/me/contacts/{imm}", immutable=False)
    assert status == 200 and got["id"] == mut and "Preference-Applied" not in headers
    status, headers, got = emu.call("GET", f"/me/contacts/{mut}")
    assert status == 200 and got["id"] == imm and headers["Preference-Applied"] == 'IdType="ImmutableId"'
    assert emu.ok("GET", "/me/contacts", immutable=False)["value"][0]["id"] == mut
    assert emu.ok("GET", "/me/contacts")["value"][0]["id"] == imm
    assert emu.ok("PATCH", f"/me/contacts/{mut}", {"nickName": "P"}, immutable=False)["id"] == mut
    assert emu.ok("PATCH", f"/me/contacts/{mut}", {"nickName": "Q"})["id"] == imm
    assert emu.ok("POST", "/me/contacts", {"givenName": "I"}, want=201)["id"] in \
        {x["id"] for x in emu.state()["contacts"]}
    meta = emu.ok("GET", f"/me/contacts/{imm}/extensions", immutable=False)
    assert f"contacts('{mut}')" in meta["@odata.context"]
    # The old reading: always immutable, and nothing to echo without the header.
    emu.faults(immutable_ids="always")
    status, headers, got = emu.call("GET", f"/me/contacts/{mut}", immutable=False)
    assert got["id"] == imm and "Preference-Applied" not in headers
    assert emu.admin("GET", "faults")["immutable_ids"] == "always"
    status, _, _ = emu.raw("POST", "/_emulator/faults", json.dumps({"immutable_ids": "never"}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 400


def test_a_regular_id_changes_when_the_contact_moves(emu):
    f = emu.ok("POST", "/me/contactFolders", {"displayName": "F"}, want=201)
    c = emu.ok("POST", "/me/contacts", {"givenName": "M"}, want=201, immutable=False)
    old = c["id"]
    st = emu.state()["contacts"][0]
    imm = st["id"]
    moved = emu.admin("POST", "move", {"contactId": old, "folderId": f["id"]})      # either id
    assert moved["id"] == imm and moved["mutableId"] != old
    new = emu.state()["contacts"][0]["mutableId"]
    assert new == moved["mutableId"]
    base = f"/me/contactFolders/{f['id']}/contacts"
    for path in (f"{base}/{old}", f"{base}/{old}/photo", f"{base}/{old}/extensions"):
        status, _, err = emu.call("GET", path)
        assert status == 404 and err["error"]["code"] == "ErrorItemNotFound", path
    assert emu.call("PATCH", f"{base}/{old}", {"nickName": "x"})[0] == 404
    assert emu.ok("GET", f"{base}/{new}", immutable=False)["id"] == new
    assert emu.ok("GET", f"{base}/{imm}")["id"] == imm
    emu.ok("PUT", f"{base}/{new}/photo/$value", raw_body=jpeg(2), headers={"Content-Type": "image/jpeg"})
    assert emu.admin("POST", "move", {"contactId": new, "folderId": emu.state()["defaultFolderId"]})["id"] == imm


def test_delta_ids_follow_the_header_of_each_page_request(emu):
    cs = [new_contact(emu, {"givenName": f"D{i}"}) for i in range(4)]
    st = {c["id"]: c["mutableId"] for c in emu.state()["contacts"]}
    url, seen = default_delta(emu), []
    for n in range(4):
        immutable = n % 2 == 0
        page = emu.ok("GET", url, headers={"Prefer": "odata.maxpagesize=1"}, immutable=immutable)
        seen.append((immutable, page["value"][0]["id"]))
        url = page.get("@odata.nextLink") or page["@odata.deltaLink"]
    for immutable, cid in seen:
        assert (cid in st) if immutable else (cid in st.values())
    emu.ok("DELETE", f"/me/contacts/{cs[0]['id']}", want=204)
    removed = emu.ok("GET", url, immutable=False)
    assert removed["value"] == [{"@odata.type": "#microsoft.graph.contact", "id": st[cs[0]["id"]],
                                 "@removed": {"reason": "deleted"}}]
    assert emu.state()["deletedItems"]["contacts"][0]["id"] == cs[0]["id"]


def test_batch_items_follow_their_own_prefer_header_only(emu):
    c = new_contact(emu)
    mut = emu.state()["contacts"][0]["mutableId"]
    out = emu.ok("POST", "/$batch", {"requests": [
        {"id": "plain", "method": "GET", "url": f"/me/contacts/{c['id']}"},
        {"id": "asks", "method": "GET", "url": f"/me/contacts/{mut}",
         "headers": {"Prefer": 'IdType="ImmutableId"'}}]},
        headers={"Prefer": 'IdType="ImmutableId"'})
    by_id = {r["id"]: r for r in out["responses"]}
    assert by_id["plain"]["body"]["id"] == mut, "the envelope's Prefer does not reach the items"
    assert "Preference-Applied" not in by_id["plain"]["headers"]
    assert by_id["asks"]["body"]["id"] == c["id"]
    assert by_id["asks"]["headers"]["Preference-Applied"] == 'IdType="ImmutableId"'
    status, headers, _ = emu.call("POST", "/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": "/me/contacts"}]})
    assert "Preference-Applied" not in headers, "not honoured for the envelope"


def raw_request(emu, method, path, header_lines):
    """One request with the header lines exactly as given (name, value),
    repeated names included: (status, headers, JSON body)."""
    conn = http.client.HTTPConnection(emu.base.split("//")[1], timeout=10)
    conn.putrequest(method, path)
    for name, value in [("Authorization", f"Bearer {TOKEN}")] + header_lines:
        conn.putheader(name, value)
    conn.endheaders()
    r = conn.getresponse()
    body = json.loads(r.read() or b"null")
    conn.close()
    return r.status, r.headers, body


def test_prefer_is_parsed_as_a_list_of_preferences_on_one_line_or_several(emu):
    for i in range(5):
        new_contact(emu, {"givenName": f"P{i}"})
    imm = {c["id"] for c in emu.state()["contacts"]}
    for line in ('IdType="ImmutableId", odata.maxpagesize=2', 'odata.maxpagesize=2,IdType="ImmutableId"',
                 ' IdType = "ImmutableId" ;x=y , odata.maxpagesize = "2" '):
        status, headers, page = raw_request(emu, "GET", "/v1.0/me/contacts", [("Prefer", line)])
        assert status == 200 and len(page["value"]) == 2, line
        assert {c["id"] for c in page["value"]} <= imm, line
        assert headers["Preference-Applied"] == 'odata.maxpagesize=2, IdType="ImmutableId"', line
    assert emu.requests()["prefer_lines_multi"] == 0
    status, headers, page = raw_request(emu, "GET", "/v1.0/me/contacts",
                                        [("Prefer", 'IdType="ImmutableId"'), ("Prefer", "odata.maxpagesize=3")])
    assert status == 200 and len(page["value"]) == 3 and {c["id"] for c in page["value"]} <= imm
    assert emu.requests()["prefer_lines_multi"] == 1, "a client can be pinned to one Prefer line"
    status, _, page = raw_request(emu, "GET", "/v1.0/me/contacts", [("Prefer", 'IdType="RestId"')])
    assert not {c["id"] for c in page["value"]} & imm


# ---- strict validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("prop,values,limit", [
    ("emailAddresses", [{"address": f"a{i}@x.example"} for i in range(4)], 3),
    ("businessPhones", ["1", "2", "3"], 2),
    ("homePhones", ["1", "2", "3"], 2),
    ("imAddresses", ["sip:a", "sip:b", "sip:c", "sip:d"], 3),
])
def test_slot_limits_are_enforced(emu, prop, values, limit):
    status, _, err = emu.call("POST", "/me/contacts", {"givenName": "X", prop: values})
    assert status == 400
    name = prop[0].upper() + prop[1:]
    assert err["error"]["message"] == (f"The multi value property {name} has {len(values)} entries, "
                                       f"that exceeds the max allowed value of {limit}")
    c = new_contact(emu, {"givenName": "X", prop: values[:limit]})
    status, _, _ = emu.call("PATCH", f"/me/contacts/{c['id']}", {prop: values})
    assert status == 400


def test_unknown_and_misstyped_properties_are_refused(emu):
    status, _, err = emu.call("POST", "/me/contacts", {"givenName": "X", "favouriteColour": "red"})
    assert status == 400 and err["error"]["code"] == "RequestBodyRead"
    assert "favouriteColour" in err["error"]["message"]
    for body in ({"givenName": 5}, {"businessPhones": "123"}, {"birthday": "yesterday"},
                 {"birthday": "2001-02-29"}, {"emailAddresses": [{"address": "a@b", "type": "work"}]},
                 {"homeAddress": {"postOfficeBox": "1"}}, {"id": "x"}, {"changeKey": "x"},
                 {"primaryEmailAddress": {"address": "a@b"}}):
        status, _, err = emu.call("POST", "/me/contacts", body)
        assert status == 400, body
    status, _, err = emu.call("POST", "/me/contacts", raw_body=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert status == 400 and err["error"]["code"] == "UnableToDeserializePostBody"
    # Instance and property annotations are not properties.
    c = new_contact(emu, {"@odata.type": "#microsoft.graph.contact", "givenName": "A",
                          "emailAddresses@odata.type": "#Collection(microsoft.graph.emailAddress)"})
    assert c["givenName"] == "A"


def test_birthdays_keep_their_date_including_1604_and_29_february(emu):
    for value, want in [("1604-03-14T00:00:00Z", "1604-03-14T00:00:00Z"),
                        ("1992-02-29", "1992-02-29T00:00:00Z"),
                        ("1974-07-22T01:00:00+02:00", "1974-07-21T23:00:00Z")]:
        assert new_contact(emu, {"givenName": "B", "birthday": value})["birthday"] == want


def test_contact_properties_match_the_openapi_subset(emu):
    spec = TESTDATA / "openapi-contacts.yaml"
    if not spec.exists():
        pytest.skip("shared testdata absent")
    text = spec.read_text()
    block = text[text.index("\n    microsoft.graph.contact:\n"):]
    block = block[:block.index("\n    microsoft.graph.outlookItem:")]
    props = set(re.findall(r"^          (\w+):$", block, re.M))
    nav = {"extensions", "multiValueExtendedProperties", "photo", "singleValueExtendedProperties"}
    c = new_contact(emu)
    got = {k for k in c if not k.startswith("@")}
    assert props - nav <= got
    assert got - props == {"id", "categories", "changeKey", "createdDateTime", "lastModifiedDateTime"}


def test_example_bodies_from_the_docs_are_accepted(emu):
    if not TESTDATA.exists():
        pytest.skip("shared testdata absent")
    body = json.loads((TESTDATA / "v1-create-contact-request.json").read_text())
    c = new_contact(emu, body)
    upd = json.loads((TESTDATA / "v1-update-contact-request.json").read_text())
    u = emu.ok("PATCH", f"/me/contacts/{c['id']}", upd)
    sample = json.loads((TESTDATA / "v1-get-contact-response.json").read_text())
    assert set(sample) <= set(u)
    status, _, _ = emu.call("POST", "/me/contacts",
                            json.loads((TESTDATA / "beta-create-contact-request.json").read_text()))
    assert status == 400, "a beta-shaped body (phones, typed emails) is not v1.0"


# ---- lists: paging, $select, $filter, $top ----------------------------------------------------------

def test_lists_page_by_ten_and_follow_next_links(emu):
    ids = {new_contact(emu, {"givenName": f"P{i}"})["id"] for i in range(25)}
    seen, pages, url = [], 0, "/me/contacts"
    while url:
        page = emu.ok("GET", url)
        assert len(page["value"]) <= 10
        seen += [c["id"] for c in page["value"]]
        url = page.get("@odata.nextLink")
        pages += 1
        if url:
            assert url.startswith(emu.base + "/v1.0/me/contacts?")
    assert pages == 3 and len(seen) == 25 and set(seen) == ids


def test_top_select_and_maxpagesize(emu):
    for i in range(12):
        new_contact(emu, {"givenName": f"P{i}", "jobTitle": "x"})
    page = emu.ok("GET", "/me/contacts?$top=5&$select=givenName")
    assert len(page["value"]) == 5 and "$top=5" in page["@odata.nextLink"]
    assert set(page["value"][0]) == {"@odata.etag", "id", "givenName"}
    status, headers, page = emu.call("GET", "/me/contacts", headers={"Prefer": "odata.maxpagesize=7"})
    assert len(page["value"]) == 7
    assert headers["Preference-Applied"] == 'odata.maxpagesize=7, IdType="ImmutableId"'
    for bad in ("$top=1001", "$select=nope", "$orderby=emailAddresses", "$search=x", "$top=x"):
        status, _, err = emu.call("GET", "/me/contacts?" + bad)
        assert status == 400, bad


def test_filter_by_email_and_by_extension_only(emu):
    a = new_contact(emu, {"givenName": "A", "emailAddresses": [{"address": "Garth@Contoso.example"}]})
    b = new_contact(emu, {"givenName": "B", "extensions": [
        {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "org.contactfs.vcard",
         "uid": "urn:uuid:1"}]})
    new_contact(emu, {"givenName": "C"})
    q = urllib.parse.quote("emailAddresses/any(a:a/address eq 'garth@contoso.example')")
    assert [c["id"] for c in emu.ok("GET", f"/me/contacts?$filter={q}")["value"]] == [a["id"]]
    flt = urllib.parse.quote("Extensions/any(f:f/id eq 'org.contactfs.vcard')")
    exp = urllib.parse.quote("Extensions($filter=id eq 'Microsoft.OutlookServices.OpenTypeExtension."
                             "org.contactfs.vcard')")
    page = emu.ok("GET", f"/me/contacts?$filter={flt}&$expand={exp}")
    assert [c["id"] for c in page["value"]] == [b["id"]]
    assert page["value"][0]["extensions"][0]["uid"] == "urn:uuid:1"
    for bad in ("displayName eq 'A'", "startswith(displayName,'A')",
                "emailAddresses/any(a:a/address ne 'x')"):
        status, _, err = emu.call("GET", "/me/contacts?$filter=" + urllib.parse.quote(bad))
        assert status == 400 and err["error"]["code"] == "ErrorInvalidUrlQueryFilter", bad


HAS_PICTURE_ID = "Boolean {00062004-0000-0000-C000-000000000046} Id 0x8015"
HAS_PICTURE_TRUE = ("singleValueExtendedProperties/Any(ep: ep/id eq '" + HAS_PICTURE_ID
                    + "' and cast(ep/value, Edm.Boolean) eq true)")


def test_has_picture_is_set_by_a_photo_put_or_seed_and_filtered_on(emu):
    """PidLidHasPicture: true once a photo is PUT (as Outlook sets it) or
    seeded; the documented $filter lists exactly those contacts, pages
    with $top, and an instance $expand shows the property
    (singlevaluelegacyextendedproperty-get.md)."""
    a = new_contact(emu, {"givenName": "A"})
    b = new_contact(emu, {"givenName": "B"})
    new_contact(emu, {"givenName": "C"})
    emu.ok("PUT", f"/me/contacts/{a['id']}/photo/$value", raw_body=jpeg(1), headers={"Content-Type": "image/jpeg"})
    emu.ok("PUT", f"/me/contacts/{b['id']}/photo/$value", raw_body=jpeg(2), headers={"Content-Type": "image/jpeg"})
    q = urllib.parse.quote(HAS_PICTURE_TRUE, safe="'(),")
    page = emu.ok("GET", f"/me/contacts?$select=id&$top=1&$filter={q}")
    got = [c["id"] for c in page["value"]]
    page = emu.ok("GET", page["@odata.nextLink"][len(emu.base) + len("/v1.0"):])
    got += [c["id"] for c in page["value"]]
    assert sorted(got) == sorted([a["id"], b["id"]]) and "@odata.nextLink" not in page
    exp = urllib.parse.quote(f"singleValueExtendedProperties($filter=id eq '{HAS_PICTURE_ID}')")
    one = emu.ok("GET", f"/me/contacts/{a['id']}?$expand={exp}")
    assert one["singleValueExtendedProperties"] == [
        {"id": "Boolean {00062004-0000-0000-c000-000000000046} Id 0x8015", "value": "true"}]
    emu.admin("POST", "remove_photo", {"contactId": a["id"]})
    one = emu.ok("GET", f"/me/contacts/{a['id']}?$expand={exp}")
    assert one["singleValueExtendedProperties"][0]["value"] == "false"
    page = emu.ok("GET", f"/me/contacts?$select=id&$filter={q}")
    assert [c["id"] for c in page["value"]] == [b["id"]]


def test_photos_may_carry_no_has_picture_flag(emu):
    """A seed (has_picture: null) or the knob photo_sets_has_picture=false
    model a client that keeps photos without the flag."""
    emu.admin("POST", "reset", {"generate": {"contacts": 10, "photos": 5, "has_picture": False}})
    q = urllib.parse.quote(HAS_PICTURE_TRUE, safe="'(),")
    assert emu.ok("GET", f"/me/contacts?$filter={q}")["value"] == []
    emu.admin("POST", "faults", {"photo_sets_has_picture": False})
    c = new_contact(emu)
    emu.ok("PUT", f"/me/contacts/{c['id']}/photo/$value", raw_body=jpeg(1), headers={"Content-Type": "image/jpeg"})
    assert emu.ok("GET", f"/me/contacts?$filter={q}")["value"] == []
    assert emu.ok("GET", f"/me/contacts/{c['id']}/photo")["width"] == 48


def test_extended_property_forms_the_docs_do_not_give_are_refused(emu):
    c = new_contact(emu)
    exp = f"singleValueExtendedProperties($filter=id eq '{HAS_PICTURE_ID}')"
    for path in (f"/me/contacts?$expand={urllib.parse.quote(exp)}",          # $expand on a collection
                 default_delta(emu) + "?$expand="
                 + urllib.parse.quote(exp)):                                    # $expand on delta
        status, _, err = emu.call("GET", path)
        assert status == 400 and "error" in err, path
    for bad in (HAS_PICTURE_TRUE.replace("eq true", "ne true"),
                HAS_PICTURE_TRUE.replace("cast(ep/value, Edm.Boolean) eq true", "ep/value eq 'true'"),
                HAS_PICTURE_TRUE.replace("cast(ep/value, Edm.Boolean) eq true", "ep/value gt 0"),
                HAS_PICTURE_TRUE.replace("Boolean {", "Boolean ")):
        status, _, err = emu.call("GET", "/me/contacts?$filter=" + urllib.parse.quote(bad))
        assert status == 400 and err["error"]["code"] in (
            "ErrorInvalidUrlQueryFilter", "ErrorInvalidProperty"), bad
    assert emu.ok("GET", f"/me/contacts/{c['id']}?$expand={urllib.parse.quote(exp)}")[
        "singleValueExtendedProperties"] == []


@pytest.mark.parametrize("status", [400, 501])
def test_the_has_picture_filter_can_be_refused_by_a_knob(emu, status):
    emu.admin("POST", "faults", {"has_picture_filter_error": status})
    got, _, err = emu.call("GET", "/me/contacts?$filter=" + urllib.parse.quote(HAS_PICTURE_TRUE))
    assert got == status and err["error"]["code"]
    assert emu.ok("GET", "/me/contacts")["value"] == []


# ---- folders -------------------------------------------------------------------------------------

def test_folders_nest_and_the_default_folder_is_not_listed(emu):
    default = emu.state()["defaultFolderId"]
    work = emu.ok("POST", "/me/contactFolders", {"displayName": "Work"}, want=201)
    assert work["parentFolderId"] == default
    status, _, err = emu.call("POST", "/me/contactFolders", {"displayName": "work"})
    assert status == 409 and err["error"]["code"] == "ErrorFolderExists"
    child = emu.ok("POST", f"/me/contactFolders/{work['id']}/childFolders", {"displayName": "Clients"},
                   want=201)
    grand = emu.ok("POST", f"/me/contactFolders/{work['id']}/childFolders/{child['id']}/childFolders",
                   {"displayName": "Key"}, want=201)
    assert [f["id"] for f in emu.ok("GET", "/me/contactFolders")["value"]] == [work["id"]]
    assert emu.ok("GET", f"/me/contactFolders/{default}")["displayName"] == "Contacts"
    deep = f"/me/contactFolders/{work['id']}/childFolders/{child['id']}/childFolders/{grand['id']}/contacts"
    c = new_contact(emu, folder_path=deep)
    assert c["parentFolderId"] == grand["id"]
    assert emu.ok("GET", f"{deep}/{c['id']}")["id"] == c["id"]
    assert emu.ok("GET", f"/me/contactFolders/{grand['id']}/contacts")["value"][0]["id"] == c["id"]
    status, _, _ = emu.call("GET", f"/me/contacts/{c['id']}")
    assert status == 404, "/me/contacts is the default folder only"
    status, _, _ = emu.call("GET", f"/me/contactFolders/{grand['id']}/childFolders/{child['id']}/contacts")
    assert status == 404, "a path whose folders are not parent and child names nothing"


def test_folder_rename_move_and_delete(emu):
    a = emu.ok("POST", "/me/contactFolders", {"displayName": "A"}, want=201)
    b = emu.ok("POST", "/me/contactFolders", {"displayName": "B"}, want=201)
    sub = emu.ok("POST", f"/me/contactFolders/{a['id']}/childFolders", {"displayName": "Sub"}, want=201)
    c = new_contact(emu, folder_path=f"/me/contactFolders/{sub['id']}/contacts")
    assert emu.ok("PATCH", f"/me/contactFolders/{a['id']}", {"displayName": "A2"})["displayName"] == "A2"
    moved = emu.ok("PATCH", f"/me/contactFolders/{sub['id']}", {"parentFolderId": b["id"]})
    assert moved["parentFolderId"] == b["id"]
    status, _, _ = emu.call("PATCH", f"/me/contactFolders/{b['id']}", {"parentFolderId": sub["id"]})
    assert status == 400, "no folder inside its own subfolder"
    status, _, _ = emu.call("DELETE", f"/me/contactFolders/{emu.state()['defaultFolderId']}")
    assert status == 400
    emu.ok("DELETE", f"/me/contactFolders/{b['id']}", want=204)
    st = emu.state()
    assert {f["displayName"] for f in st["folders"]} == {"Contacts", "A2"}
    assert st["contacts"] == [] and st["deletedItems"]["contacts"][0]["id"] == c["id"]


# ---- delta ---------------------------------------------------------------------------------------

def default_delta(emu, upn=ME):
    """The documented delta URL of the default folder (contact-delta.md has
    no folder-less form)."""
    prefix = "/me" if upn == ME else f"/users/{upn}"
    return f"{prefix}/contactFolders/{emu.state(upn)['defaultFolderId']}/contacts/delta"


def delta_round(emu, url, page_size=None):
    """Follow nextLinks to the deltaLink: (items, deltaLink, pages)."""
    items, pages = [], 0
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    while True:
        page = emu.ok("GET", url, headers=headers)
        items += page["value"]
        pages += 1
        if "@odata.deltaLink" in page:
            assert "@odata.nextLink" not in page
            return items, page["@odata.deltaLink"], pages
        url = page["@odata.nextLink"]
        assert "$skiptoken=" in url


def test_contact_delta_first_sync_then_changes_and_removals(emu):
    cs = [new_contact(emu, {"givenName": f"D{i}", "jobTitle": "t"}) for i in range(5)]
    fid = emu.state()["defaultFolderId"]
    items, link, pages = delta_round(emu, f"/me/contactFolders/{fid}/contacts/delta?$select=givenName", 2)
    assert pages == 3 and "$deltatoken=" in link
    assert sorted(i["id"] for i in items) == sorted(c["id"] for c in cs)
    assert set(items[0]) == {"@odata.etag", "id", "givenName"}
    # Changes since: one new, one updated, one deleted.
    new = new_contact(emu, {"givenName": "New"})
    upd = emu.ok("PATCH", f"/me/contacts/{cs[0]['id']}", {"givenName": "Changed"})
    emu.ok("DELETE", f"/me/contacts/{cs[1]['id']}", want=204)
    items, link2, _ = delta_round(emu, link)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {new["id"], cs[0]["id"], cs[1]["id"]}
    assert by_id[cs[0]["id"]]["givenName"] == "Changed" and "jobTitle" not in by_id[cs[0]["id"]]
    assert by_id[cs[0]["id"]]["@odata.etag"] == upd["@odata.etag"]
    assert by_id[cs[1]["id"]] == {"@odata.type": "#microsoft.graph.contact", "id": cs[1]["id"],
                                  "@removed": {"reason": "deleted"}}
    assert delta_round(emu, link2)[0] == []
    # The default folder's delta, asked again from scratch, has the five.
    assert len(delta_round(emu, default_delta(emu))[0]) == 5


def test_delta_page_size_is_capped_at_200(emu):
    emu.admin("POST", "reset", {"generate": {"contacts": 420}})
    status, headers, page = emu.call("GET", default_delta(emu), headers={"Prefer": "odata.maxpagesize=500"})
    assert len(page["value"]) == 200
    assert headers["Preference-Applied"] == 'odata.maxpagesize=200, IdType="ImmutableId"'


def test_delta_expired_and_bad_tokens(emu):
    new_contact(emu)
    _, link, _ = delta_round(emu, default_delta(emu) + "?$select=displayName")
    emu.faults(expire_delta=True)
    status, headers, err = emu.call("GET", link)
    assert status == 410 and err["error"]["code"] == "syncStateNotFound"
    assert headers["Location"].startswith(emu.base + "/v1.0" + default_delta(emu) + "?")
    items, _, _ = delta_round(emu, headers["Location"])          # the Location restarts the sync
    assert len(items) == 1 and set(items[0]) == {"@odata.etag", "id", "displayName"}
    status, _, err = emu.call("GET", default_delta(emu) + "?$deltatoken=garbage")
    assert status == 400 and "Badly formed token" in err["error"]["message"]
    status, _, _ = emu.call("GET", link.split("?")[0] + "?$skiptoken=" + link.split("=")[-1])
    assert status == 400, "a delta token is not a skip token"
    status, _, _ = emu.call("GET", link + "&$select=id")
    assert status == 400, "$select only on the first call"


def test_delta_token_cache_forgets_the_oldest(emu):
    emu.faults(delta_token_cap=4)
    _, first, _ = delta_round(emu, default_delta(emu))
    for _ in range(3):
        delta_round(emu, default_delta(emu))
    status, _, err = emu.call("GET", first)
    assert status == 410 and err["error"]["code"] == "syncStateNotFound"


def test_delta_replay_fault_repeats_items(emu):
    for i in range(10):
        new_contact(emu, {"givenName": f"R{i}"})
    _, link, _ = delta_round(emu, default_delta(emu))
    c = new_contact(emu)
    emu.faults(delta_replay=1.0, seed=3)
    items, link, _ = delta_round(emu, link)
    ids = [i["id"] for i in items]
    assert len(ids) > len(set(ids)), "items appear more than once"
    assert c["id"] in ids
    emu.faults(delta_replay=0.0)
    assert delta_round(emu, link)[0] == []


def test_folder_delta_is_mailbox_wide_with_removals(emu):
    a = emu.ok("POST", "/me/contactFolders", {"displayName": "A"}, want=201)
    sub = emu.ok("POST", f"/me/contactFolders/{a['id']}/childFolders", {"displayName": "Sub"}, want=201)
    items, link, _ = delta_round(emu, "/me/contactFolders/delta")
    assert {i["id"]: i["parentFolderId"] for i in items} == {a["id"]: a["parentFolderId"],
                                                             sub["id"]: a["id"]}
    emu.ok("PATCH", f"/me/contactFolders/{a['id']}", {"displayName": "A2"})
    emu.ok("DELETE", f"/me/contactFolders/{sub['id']}", want=204)
    items, _, _ = delta_round(emu, link)
    by_id = {i["id"]: i for i in items}
    assert by_id[a["id"]]["displayName"] == "A2"
    assert by_id[sub["id"]]["@removed"] == {"reason": "deleted"}


def test_outlook_side_move_shows_as_changed_removal(emu):
    f = emu.ok("POST", "/me/contactFolders", {"displayName": "F"}, want=201)
    c = new_contact(emu)
    _, src, _ = delta_round(emu, default_delta(emu))
    _, dst, _ = delta_round(emu, f"/me/contactFolders/{f['id']}/contacts/delta")
    emu.admin("POST", "move", {"contactId": c["id"], "folderId": f["id"]})
    assert delta_round(emu, src)[0] == [{"@odata.type": "#microsoft.graph.contact", "id": c["id"],
                                         "@removed": {"reason": "changed"}}]
    assert [i["id"] for i in delta_round(emu, dst)[0]] == [c["id"]]


def test_folder_less_contact_delta_is_refused(emu):
    # contact-delta.md documents only /contactFolders/{id}/contacts/delta;
    # Graph refuses a folder-less delta of Outlook items with 400 BadRequest
    # "Change tracking is not supported against ..." (field reports, README).
    new_contact(emu)
    for path in ("/me/contacts/delta", f"/users/{OTHER}/contacts/delta", "/me/contacts/delta?$select=id"):
        status, _, err = emu.call("GET", path)
        assert status == 400 and err["error"]["code"] == "BadRequest", path
        assert "Change tracking is not supported against 'microsoft.graph.contact'" in err["error"]["message"]
    assert emu.requests()["by_route"]["GET /me/contacts/delta"] == 2


def test_the_default_folder_is_reachable_by_its_id(emu):
    data = jpeg(4)
    c = new_contact(emu, {"givenName": "D", "extensions": [
        {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "org.x", "n": 1}]})
    default = emu.state()["defaultFolderId"]
    base = f"/me/contactFolders/{default}"
    assert emu.ok("GET", base)["id"] == default
    assert [x["id"] for x in emu.ok("GET", f"{base}/contacts")["value"]] == [c["id"]]
    assert emu.ok("GET", f"{base}/contacts/{c['id']}")["id"] == c["id"]
    emu.ok("PUT", f"{base}/contacts/{c['id']}/photo/$value", raw_body=data, headers={"Content-Type": "image/jpeg"})
    assert emu.ok("GET", f"{base}/contacts/{c['id']}/photo/$value") == data
    assert emu.ok("GET", f"{base}/contacts/{c['id']}/photo")["width"] == 48
    assert emu.ok("GET", f"{base}/contacts/{c['id']}/extensions/org.x")["n"] == 1
    items, _, _ = delta_round(emu, f"{base}/contacts/delta")
    assert [i["id"] for i in items] == [c["id"]]
    assert [x["id"] for x in emu.ok("GET", f"/users/{ME}/contactFolders/{default}/contacts")["value"]] \
        == [c["id"]]


def test_learning_the_default_folder_id(emu):
    # known-issues.md (Contacts, "Default contacts folder"): /me/contactFolders
    # leaves the default folder out; $top=1&$select=parentFolderId of a
    # contact (or of a top folder) names it.
    default = emu.state()["defaultFolderId"]
    assert emu.ok("GET", "/me/contacts?$top=1&$select=parentFolderId")["value"] == []
    emu.ok("POST", "/me/contactFolders", {"displayName": "Work"}, want=201)
    page = emu.ok("GET", "/me/contactFolders?$top=1&$select=parentFolderId")
    assert set(page["value"][0]) == {"id", "parentFolderId"} and page["value"][0]["parentFolderId"] == default
    new_contact(emu)
    page = emu.ok("GET", "/me/contacts?$top=1&$select=parentFolderId")
    assert set(page["value"][0]) == {"@odata.etag", "id", "parentFolderId"}
    assert page["value"][0]["parentFolderId"] == default


@pytest.mark.parametrize("reading", ["all", "top", "with_default"])
def test_folder_delta_readings_and_the_listings_they_leave_alone(emu, reading):
    emu.faults(folder_delta=reading)
    st = emu.state()
    default, root = st["defaultFolderId"], st["folders"][0]["parentFolderId"]
    a = emu.ok("POST", "/me/contactFolders", {"displayName": "A"}, want=201)
    b = emu.ok("POST", "/me/contactFolders", {"displayName": "B"}, want=201)
    sub = emu.ok("POST", f"/me/contactFolders/{a['id']}/childFolders", {"displayName": "Sub"}, want=201)
    items, link, _ = delta_round(emu, "/me/contactFolders/delta")
    got = {i["id"]: i["parentFolderId"] for i in items}
    want = {a["id"]: default, b["id"]: default}
    if reading != "top":
        want[sub["id"]] = a["id"]
    if reading == "with_default":
        want[default] = root
        status, _, err = emu.call("GET", f"/me/contactFolders/{root}")
        assert status == 404, "the mailbox root is not a contact folder"
    assert got == want
    # The listings are the same under every reading (user-list-contactfolders.md:
    # the folders in the default Contacts folder).
    assert sorted(f["id"] for f in emu.ok("GET", "/me/contactFolders")["value"]) == sorted([a["id"], b["id"]])
    assert [f["id"] for f in emu.ok("GET", f"/me/contactFolders/{a['id']}/childFolders")["value"]] == [sub["id"]]
    assert sorted(f["id"] for f in emu.ok("GET", f"/me/contactFolders/{default}/childFolders")["value"]) \
        == sorted([a["id"], b["id"]])
    # Changes: a nested folder renamed, B moved below A, Sub deleted.
    emu.ok("PATCH", f"/me/contactFolders/{b['id']}", {"parentFolderId": a["id"]})
    emu.ok("DELETE", f"/me/contactFolders/{sub['id']}", want=204)
    items, _, _ = delta_round(emu, link)
    by_id = {i["id"]: i for i in items}
    if reading == "top":
        assert by_id == {b["id"]: {"@odata.type": "#microsoft.graph.contactFolder", "id": b["id"],
                                   "@removed": {"reason": "changed"}}}
    else:
        assert by_id[b["id"]]["parentFolderId"] == a["id"]
        assert by_id[sub["id"]]["@removed"] == {"reason": "deleted"}
        assert set(by_id) == {b["id"], sub["id"]}


# ---- $batch --------------------------------------------------------------------------------------

def test_batch_runs_items_with_depends_on_and_shuffles_responses(emu):
    c = new_contact(emu)
    reqs = [{"id": str(i), "method": "GET", "url": f"/me/contacts/{c['id']}",
             "headers": {"Prefer": 'IdType="ImmutableId"'}} for i in range(1, 9)]
    reqs += [{"id": "p", "method": "POST", "url": "/me/contacts",
              "headers": {"Content-Type": "application/json"}, "body": {"givenName": "Batch"}},
             {"id": "bad", "method": "GET", "url": "/me/contacts/nope"},
             {"id": "after-bad", "method": "GET", "url": "/me/contacts", "dependsOn": ["bad"]},
             {"id": "after-p", "method": "GET", "url": "/me/contacts?$top=1", "dependsOn": ["p"]}]
    orders = set()
    for _ in range(4):
        out = emu.ok("POST", "/$batch", {"requests": reqs})
        by_id = {r["id"]: r for r in out["responses"]}
        orders.add(tuple(r["id"] for r in out["responses"]))
        assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["id"] == c["id"]
        assert by_id["p"]["status"] == 201 and by_id["p"]["body"]["givenName"] == "Batch"
        assert by_id["bad"]["status"] == 404
        assert by_id["after-bad"]["status"] == 424
        assert by_id["after-p"]["status"] == 200
    assert len(orders) > 1, "responses come back in varying order"
    req = emu.requests()
    assert req["batch_items"] == 4 * len(reqs) - 4 and req["by_route"]["POST /$batch"] == 4


def test_batch_limits_and_shape_errors(emu):
    too_many = [{"id": str(i), "method": "GET", "url": "/me/contacts"} for i in range(21)]
    assert emu.call("POST", "/$batch", {"requests": too_many})[0] == 400
    no_ctype = [{"id": "1", "method": "POST", "url": "/me/contacts", "body": {"givenName": "x"}}]
    assert emu.call("POST", "/$batch", {"requests": no_ctype})[0] == 400
    cycle = [{"id": "1", "method": "GET", "url": "/me/contacts", "dependsOn": ["2"]},
             {"id": "2", "method": "GET", "url": "/me/contacts", "dependsOn": ["1"]}]
    assert emu.call("POST", "/$batch", {"requests": cycle})[0] == 400
    absolute = [{"id": "1", "method": "GET", "url": emu.base + "/v1.0/me/contacts"}]
    out = emu.ok("POST", "/$batch", {"requests": absolute})
    assert out["responses"][0]["status"] == 400


def test_batch_items_run_four_at_a_time_and_each_can_be_throttled(emu):
    emu.faults(latency_ms=150)
    reqs = [{"id": str(i), "method": "GET", "url": "/me/contacts"} for i in range(8)]
    t0 = time.monotonic()
    out = emu.ok("POST", "/$batch", {"requests": reqs})
    assert time.monotonic() - t0 >= 3 * 0.15       # the batch itself + two rounds of four
    assert all(r["status"] == 200 for r in out["responses"])
    assert emu.requests()["max_in_flight"] == 4
    emu.faults(latency_ms=0, rate_429=1.0, retry_after=2)
    out = emu.ok("POST", "/$batch", {"requests": reqs[:3]})
    for r in out["responses"]:
        assert r["status"] == 429 and r["headers"]["Retry-After"] == "2"
        assert r["body"]["error"]["code"] == "TooManyRequests"
    assert emu.requests()["throttled"] == 3


def test_photo_upload_in_a_batch_is_base64(emu):
    c = new_contact(emu)
    data = jpeg(7)
    out = emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "PUT", "url": f"/me/contacts/{c['id']}/photo/$value",
         "headers": {"Content-Type": "image/jpeg"}, "body": base64.b64encode(data).decode()}]})
    assert out["responses"][0]["status"] == 200
    out = emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": f"/me/contacts/{c['id']}/photo/$value"}]})
    assert base64.b64decode(out["responses"][0]["body"]) == data
    # json-batching.md: a binary body is "base64 URL-encoded"; that alphabet works too.
    other = jpeg(8)
    out = emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "PUT", "url": f"/me/contacts/{c['id']}/photo/$value",
         "headers": {"Content-Type": "image/jpeg"}, "body": base64.urlsafe_b64encode(other).decode().rstrip("=")}]})
    assert out["responses"][0]["status"] == 200
    assert emu.state()["contacts"][0]["photo"]["sha256"] == hashlib.sha256(other).hexdigest()


# ---- throttling: concurrency, Retry-After, early retries ------------------------------------------------

def test_a_fifth_concurrent_request_to_a_mailbox_is_throttled(emu):
    emu.faults(latency_ms=400)
    results = in_threads([lambda: emu.call("GET", "/me/contacts") for _ in range(5)])
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 200, 200, 429]
    throttled = next(r for r in results if r[0] == 429)
    assert throttled[1]["Retry-After"] == "1"
    assert throttled[2]["error"]["code"] == "ApplicationThrottled"
    req = emu.requests()
    assert req["max_in_flight"] == 5 and req["throttled"] == 1
    # Another mailbox has its own limit.
    emu.requests_reset = emu.admin("POST", "requests/reset")
    results = in_threads([lambda: emu.call("GET", "/me/contacts") for _ in range(4)]
                         + [lambda: emu.call("GET", f"/users/{OTHER}/contacts") for _ in range(4)])
    assert all(r[0] == 200 for r in results)
    assert emu.requests()["max_in_flight"] == 4


def test_early_retries_are_counted(emu):
    emu.faults(rate_429=1.0, retry_after=0.4)
    conn = http.client.HTTPConnection(emu.base.split("//")[1], timeout=10)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    conn.request("GET", "/v1.0/me/contacts", headers=auth)
    r = conn.getresponse()
    r.read()
    assert r.status == 429 and r.getheader("Retry-After") == "0.4"
    emu.faults(rate_429=0.0)
    conn.request("GET", "/v1.0/me/contacts", headers=auth)      # same connection, at once
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    assert emu.requests()["early_retries"] == 1
    time.sleep(0.45)
    conn.request("GET", "/v1.0/me/contacts", headers=auth)      # after waiting: fine
    r = conn.getresponse()
    r.read()
    conn.close()
    req = emu.requests()
    assert req["early_retries"] == 1 and req["throttled"] == 1
    # Another connection counts once the grace period is over.
    emu.faults(rate_429=1.0)
    emu.call("GET", "/me/contacts")
    emu.faults(rate_429=0.0)
    time.sleep(0.1)
    emu.call("GET", "/me/contacts")
    assert emu.requests()["early_retries"] == 2
    emu.admin("POST", "requests/reset")
    assert emu.requests()["early_retries"] == 0


def test_503_fault(emu):
    emu.faults(rate_503=1.0)
    status, _, err = emu.call("GET", "/me/contacts")
    assert status == 503 and err["error"]["code"] == "serviceNotAvailable"


def test_dropped_connections_lose_the_answer_and_sometimes_the_change(emu):
    emu.faults(rate_drop=1.0, seed=11)
    lost = 0
    for i in range(24):
        try:
            emu.call("POST", "/me/contacts", {"givenName": f"Drop{i}"})
        except (http.client.HTTPException, ConnectionError, urllib.error.URLError):
            lost += 1
    assert lost == 24
    made = len(emu.state()["contacts"])
    assert 3 <= made <= 21, f"{made} of 24 applied: about half should be"
    assert emu.requests()["dropped"] == 24


LOST = (http.client.HTTPException, ConnectionError, urllib.error.URLError)


def test_drop_after_applies_the_request_and_loses_the_answer(emu):
    emu.faults(rate_drop_after=1.0)
    with pytest.raises(LOST):
        emu.call("POST", "/me/contacts", {"givenName": "Lost"})
    assert [c["givenName"] for c in emu.state()["contacts"]] == ["Lost"]
    with pytest.raises(LOST):
        emu.call("POST", "/$batch", {"requests": [
            {"id": "1", "method": "POST", "url": "/me/contacts",
             "headers": {"Content-Type": "application/json"}, "body": {"givenName": "Batched"}}]})
    assert sorted(c["givenName"] for c in emu.state()["contacts"]) == ["Batched", "Lost"]
    req = emu.requests()
    assert req["dropped"] == 2 and req["batch_items"] == 1
    emu.faults(rate_drop_after=0.0)
    for _ in range(5):
        new_contact(emu)
    emu.ok("POST", "/$batch", {"requests": [{"id": "1", "method": "GET", "url": "/me/contacts"}]})
    assert emu.requests()["dropped"] == 2 and len(emu.state()["contacts"]) == 7


def test_drop_after_must_be_a_probability(emu):
    for bad in (2, -0.5, "x", True, None):
        status, _, _ = emu.raw("POST", "/_emulator/faults", json.dumps({"rate_drop_after": bad}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 400, bad
    assert emu.admin("GET", "faults")["rate_drop_after"] == 0


def test_drop_after_route_loses_only_that_routes_answers_after_applying_them(emu):
    emu.faults(drop_after_route="POST /me/contactFolders")
    with pytest.raises(LOST):
        emu.call("POST", "/me/contactFolders", {"displayName": "Lost Answer"})
    assert "Lost Answer" in [f["displayName"] for f in emu.state()["folders"]]
    with pytest.raises(LOST):
        emu.call("POST", "/$batch", {"requests": [
            {"id": "1", "method": "POST", "url": "/me/contactFolders",
             "headers": {"Content-Type": "application/json"}, "body": {"displayName": "In Batch"}}]})
    assert "In Batch" in [f["displayName"] for f in emu.state()["folders"]]
    new_contact(emu)                                    # another route: answered
    emu.ok("POST", "/$batch", {"requests": [{"id": "1", "method": "GET", "url": "/me/contactFolders"}]})
    assert emu.requests()["dropped"] == 2
    emu.faults(drop_after_route=None)
    emu.call("POST", "/me/contactFolders", {"displayName": "Answered"})
    assert emu.requests()["dropped"] == 2
    for bad in (3, "contactFolders", True):
        status, _, _ = emu.raw("POST", "/_emulator/faults", json.dumps({"drop_after_route": bad}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 400, bad


def test_fail_route_answers_503_without_carrying_it_out_for_those_routes_only(emu):
    c = new_contact(emu)
    emu.faults(fail_route=["DELETE /me/contacts/{id}", "GET /me/contacts/{id}"])
    status, _, _ = emu.call("DELETE", "/me/contacts/" + c["id"])
    assert status == 503
    status, _, _ = emu.call("GET", "/me/contacts/" + c["id"])
    assert status == 503
    answer = emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "DELETE", "url": "/me/contacts/" + c["id"]},
        {"id": "2", "method": "PATCH", "url": "/me/contacts/" + c["id"],
         "headers": {"Content-Type": "application/json"}, "body": {"jobTitle": "Still Here"}}]})
    assert sorted(r["status"] for r in answer["responses"]) == [200, 503]
    assert [x["jobTitle"] for x in emu.state()["contacts"] if x["id"] == c["id"]] == ["Still Here"]
    emu.faults(fail_route=None)
    assert emu.call("DELETE", "/me/contacts/" + c["id"])[0] == 204
    for bad in ("DELETE /me/contacts/{id}", [3], True):
        status, _, _ = emu.raw("POST", "/_emulator/faults", json.dumps({"fail_route": bad}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 400, bad


def test_route_latency_delays_that_route_before_it_reads_the_mailbox(emu):
    c = new_contact(emu)
    emu.faults(route_latency={"GET /me/contacts/{id}": 1500})
    got = {}
    reader = threading.Thread(target=lambda: got.update(
        emu.ok("GET", "/me/contacts/" + c["id"])))
    reader.start()
    time.sleep(0.5)
    # Another route is not delayed, and the slow GET reads what it left.
    t0 = time.monotonic()
    emu.ok("PATCH", "/me/contacts/" + c["id"], {"jobTitle": "Changed Meanwhile"})
    assert time.monotonic() - t0 < 1.0
    reader.join(10)
    assert got["jobTitle"] == "Changed Meanwhile"
    emu.faults(route_latency=None)
    for bad in ({"GET /me/contacts/{id}": -1}, {"nonsense": 5}, ["GET /me/contacts"],
                {"GET /me/contacts": True}):
        status, _, _ = emu.raw("POST", "/_emulator/faults",
                               json.dumps({"route_latency": bad}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 400, bad


def test_the_sequence_lists_http_requests_in_the_order_they_came(emu):
    c = new_contact(emu)
    emu.raw("POST", "/_emulator/requests/reset", b"{}", {"Content-Type": "application/json"})
    emu.ok("GET", "/me/contacts/" + c["id"])
    emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": "/me/contacts/" + c["id"]}]})
    emu.ok("GET", "/me/contactFolders")
    status, _, body = emu.raw("GET", "/_emulator/requests/sequence", None, {})
    assert status == 200
    assert json.loads(body)["sequence"] == [
        "GET /me/contacts/{id}", "POST /$batch", "GET /me/contactFolders"]


def test_keep_alive_connection_serves_many_requests(emu):
    conn = http.client.HTTPConnection(emu.base.split("//")[1], timeout=10)
    for _ in range(5):
        conn.request("GET", "/v1.0/me/contacts", headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["value"] == []
    conn.request("DELETE", "/v1.0/me/contacts/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.close()


def test_request_counts_by_route(emu):
    c = new_contact(emu)
    emu.ok("GET", f"/me/contacts/{c['id']}")
    emu.ok("GET", f"/users/{OTHER}/contactFolders/delta")
    req = emu.requests()
    assert req["by_route"]["POST /me/contacts"] == 1
    assert req["by_route"]["GET /me/contacts/{id}"] == 1
    assert req["by_route"]["GET /users/{upn}/contactFolders/delta"] == 1
    assert req["total"] == 3


# ---- photos -------------------------------------------------------------------------------------

def test_photos(emu):
    c = new_contact(emu)
    path = f"/me/contacts/{c['id']}/photo"
    status, _, err = emu.call("GET", path + "/$value")
    assert status == 404 and err["error"]["code"] == "ErrorItemNotFound"
    assert emu.call("GET", path)[0] == 404
    data = jpeg(1)
    status, _, _ = emu.call("PUT", path + "/$value", raw_body=data, headers={"Content-Type": "image/jpeg"})
    assert status == 200
    status, headers, got = emu.call("GET", path + "/$value")
    assert status == 200 and got == data and headers["Content-Type"] == "image/jpeg"
    meta = emu.ok("GET", path)
    assert meta["@odata.mediaContentType"] == "image/jpeg" and meta["width"] == meta["height"] == 48
    assert meta["id"] == "48X48" and meta["@odata.mediaEtag"]
    photo = emu.state()["contacts"][0]["photo"]
    assert photo == {"sha256": hashlib.sha256(data).hexdigest(), "contentType": "image/jpeg",
                     "size": len(data), "width": 48, "height": 48}
    assert emu.ok("GET", f"/me/contacts/{c['id']}")["changeKey"] != c["changeKey"], "a photo bumps changeKey"
    assert emu.call("DELETE", path + "/$value")[0] == 405
    assert emu.call("DELETE", path)[0] == 405
    assert emu.call("PUT", path + "/$value", raw_body=data, headers={"Content-Type": "text/plain"})[0] == 400
    assert emu.call("PUT", path + "/$value", raw_body=b"\x89PNG\r\n\x1a\n....",
                    headers={"Content-Type": "image/jpeg"})[0] == 400
    big = data + b"\0" * (4 * 1024 * 1024)
    assert emu.call("PUT", path + "/$value", raw_body=big, headers={"Content-Type": "image/jpeg"})[0] == 413


def tiny_png(width=2, height=2):
    """A valid RGB PNG of one grey shade."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\0" + b"\x80\x80\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_a_photo_of_4_mb_or_more_is_refused(emu):
    # profilephoto-update.md: requests are limited to 4 MB, so a photo must be under 4 MB.
    c = new_contact(emu)
    path = f"/me/contacts/{c['id']}/photo/$value"
    data = jpeg(1)
    status, _, err = emu.call("PUT", path, raw_body=data + b"\0" * (4 * 1024 * 1024 - len(data)),
                              headers={"Content-Type": "image/jpeg"})
    assert status == 413 and err["error"]["code"] == "RequestEntityTooLarge"
    assert emu.state()["contacts"][0]["photo"] is None
    almost = data + b"\0" * (4 * 1024 * 1024 - 1 - len(data))
    assert emu.call("PUT", path, raw_body=almost, headers={"Content-Type": "image/jpeg"})[0] == 200
    assert emu.state()["contacts"][0]["photo"]["size"] == len(almost)


def test_a_batch_photo_answer_carries_the_photo_content_type(emu):
    c = new_contact(emu)
    png = tiny_png()
    emu.ok("PUT", f"/me/contacts/{c['id']}/photo/$value", raw_body=png, headers={"Content-Type": "image/png"})
    out = emu.ok("POST", "/$batch", {"requests": [
        {"id": "v", "method": "GET", "url": f"/me/contacts/{c['id']}/photo/$value"},
        {"id": "m", "method": "GET", "url": f"/me/contacts/{c['id']}/photo"}]})
    by_id = {r["id"]: r for r in out["responses"]}
    assert by_id["v"]["status"] == 200 and by_id["v"]["headers"]["Content-Type"] == "image/png"
    assert base64.b64decode(by_id["v"]["body"]) == png
    assert by_id["m"]["body"]["@odata.mediaContentType"] == "image/png" and by_id["m"]["body"]["width"] == 2


@pytest.mark.parametrize("prop", ["businessAddress", "homeAddress", "otherAddress"])
def test_address_patch_merges_fields(emu, prop):
    c = new_contact(emu, {"givenName": "A", prop: {"street": "1 Main St", "city": "Seattle",
                                                   "postalCode": "98101"}})
    path = f"/me/contacts/{c['id']}"
    full = {"street": "1 Main St", "city": "Seattle", "postalCode": "98101"}
    assert c[prop] == full
    assert emu.ok("PATCH", path, {prop: {}})[prop] == full, "{} changes nothing"
    assert emu.ok("PATCH", path, {prop: {"city": "Redmond"}})[prop] == dict(full, city="Redmond")
    assert emu.ok("PATCH", path, {prop: {"street": None, "state": "WA"}})[prop] == \
        {"city": "Redmond", "state": "WA", "postalCode": "98101"}
    assert emu.ok("PATCH", path, {prop: {"city": None, "state": "", "postalCode": None}})[prop] == {}
    assert emu.ok("GET", path)[prop] == {}
    emu.ok("PATCH", path, {prop: {"countryOrRegion": "US"}})
    assert emu.ok("PATCH", path, {prop: None})[prop] == {}, "null clears the address"
    assert new_contact(emu, {"givenName": "B", prop: {"city": None}})[prop] == {}


def test_extension_writes_and_photos_give_the_contact_a_new_change_key(emu):
    emu.admin("POST", "reset", {"mailboxes": {ME: {"contacts": [
        {"id": "AAMkAseeded=", "givenName": "E", "lastModifiedDateTime": "2020-01-01T00:00:00Z"}]}, OTHER: {}}})
    path = "/me/contacts/AAMkAseeded="
    _, link, _ = delta_round(emu, default_delta(emu))
    ext = {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "org.x", "n": 1}
    steps = [("POST", path + "/extensions", ext, 201),
             ("PATCH", path + "/extensions/org.x", dict(ext, n=2), 200),
             ("DELETE", path + "/extensions/org.x", None, 204)]
    before = emu.ok("GET", path)
    for method, url, body, want in steps:
        emu.ok(method, url, body, want=want)
        after = emu.ok("GET", path)
        assert after["changeKey"] != before["changeKey"], method
        assert after["lastModifiedDateTime"] > "2020-01-01T00:00:00Z", method
        items, link, _ = delta_round(emu, link)
        assert [i["id"] for i in items] == ["AAMkAseeded="], f"delta reports the {method}"
        assert items[0]["changeKey"] == after["changeKey"]
        before = after
    emu.ok("PUT", path + "/photo/$value", raw_body=jpeg(3), headers={"Content-Type": "image/jpeg"})
    assert emu.ok("GET", path)["changeKey"] != before["changeKey"]
    assert [i["id"] for i in delta_round(emu, link)[0]] == ["AAMkAseeded="]


# ---- open extensions -------------------------------------------------------------------------------

def test_extensions_inline_by_both_ids_merge_and_not_in_delta(emu):
    emu.faults(ext_changes_key=False)              # the reading in which the contact does not change
    ext = {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "org.contactfs.vcard",
           "version": 1, "uid": "urn:uuid:42", "extra": "X-A:1\r\n"}
    c = new_contact(emu, {"givenName": "E", "extensions": [ext]})
    long_id = "Microsoft.OutlookServices.OpenTypeExtension.org.contactfs.vcard"
    for ext_id in ("org.contactfs.vcard", long_id):
        got = emu.ok("GET", f"/me/contacts/{c['id']}/extensions/{ext_id}")
        assert got["id"] == long_id and got["uid"] == "urn:uuid:42" and got["version"] == 1
    _, link, _ = delta_round(emu, default_delta(emu))
    upd = emu.ok("PATCH", f"/me/contacts/{c['id']}/extensions/org.contactfs.vcard",
                 {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "org.contactfs.vcard",
                  "orig": "FN:E\r\n"})
    assert upd["uid"] == "urn:uuid:42" and upd["orig"] == "FN:E\r\n"
    assert emu.ok("GET", f"/me/contacts/{c['id']}")["changeKey"] == c["changeKey"]
    assert delta_round(emu, link)[0] == [], "extensions are not tracked by delta"
    st = emu.state()["contacts"][0]
    assert st["extensions"][0]["orig"] == "FN:E\r\n"
    exp = emu.ok("GET", f"/me/contacts/{c['id']}?$expand=extensions")
    assert [e["extensionName"] for e in exp["extensions"]] == ["org.contactfs.vcard"]
    assert "extensions" not in emu.ok("GET", f"/me/contacts/{c['id']}")
    status, _, _ = emu.call("POST", f"/me/contacts/{c['id']}/extensions", ext)
    assert status == 409
    other = emu.ok("POST", f"/me/contacts/{c['id']}/extensions",
                   {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "com.example.x",
                    "n": 5}, want=201)
    assert other["id"].endswith(".com.example.x")
    assert len(emu.ok("GET", f"/me/contacts/{c['id']}/extensions")["value"]) == 2
    emu.ok("DELETE", f"/me/contacts/{c['id']}/extensions/com.example.x", want=204)
    assert emu.call("GET", f"/me/contacts/{c['id']}/extensions/com.example.x")[0] == 404
    status, _, _ = emu.call("PATCH", f"/me/contacts/{c['id']}", {"extensions": [ext]})
    assert status == 400, "extensions change through their own URL only"
    status, _, _ = emu.call("POST", f"/me/contacts/{c['id']}/extensions",
                            {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "n",
                             "nested": {"a": 1}})
    assert status == 400


# ---- categories, people, users -------------------------------------------------------------------------

def test_master_categories(emu):
    cats = emu.ok("GET", "/me/outlook/masterCategories")["value"]
    assert [c["displayName"] for c in cats][:2] == ["Red category", "Orange category"]
    new = emu.ok("POST", "/me/outlook/masterCategories", {"displayName": "VIP", "color": "preset9"}, want=201)
    assert emu.call("POST", "/me/outlook/masterCategories", {"displayName": "vip"})[0] == 409
    assert emu.call("POST", "/me/outlook/masterCategories", {"displayName": "X", "color": "pink"})[0] == 400
    path = f"/me/outlook/masterCategories/{new['id']}"
    assert emu.ok("PATCH", path, {"color": "preset15"})["color"] == "preset15"
    assert emu.call("PATCH", path, {"displayName": "VIP2"})[0] == 400
    emu.ok("DELETE", path, want=204)
    assert emu.call("GET", path)[0] == 404


def test_people_are_ranked_and_paged(emu):
    for i in range(15):
        new_contact(emu, {"givenName": f"P{i}", "emailAddresses": [{"address": f"p{i}@x.example"}]})
    page = emu.ok("GET", "/me/people")["value"]
    assert len(page) == 10
    scores = [p["scoredEmailAddresses"][0]["relevanceScore"] for p in page]
    assert scores == sorted(scores, reverse=True)
    everyone = emu.ok("GET", "/me/people?$top=100")["value"]
    assert len(everyone) == 18
    assert emu.ok("GET", "/me/people?$top=5&$skip=5")["value"] == everyone[5:10]
    if TESTDATA.exists():
        sample = json.loads((TESTDATA / "v1-list-people-response.json").read_text())["value"][1]
        assert set(sample) == set(everyone[0])
    assert emu.call("POST", "/me/people", {})[0] == 405


def test_other_mailboxes_by_upn(emu):
    c = emu.ok("POST", f"/users/{OTHER}/contacts", {"givenName": "G"}, want=201)
    got = emu.ok("GET", f"/users/{OTHER.upper()}/contacts/{c['id']}")
    assert got["id"] == c["id"]
    assert emu.state(OTHER)["contacts"][0]["id"] == c["id"] and emu.state()["contacts"] == []
    assert emu.call("GET", f"/me/contacts/{c['id']}")[0] == 404
    status, _, err = emu.call("GET", "/users/nobody@contoso.example/contacts")
    assert status == 404 and err["error"]["code"] == "ErrorInvalidUser"
    assert emu.state(OTHER)["defaultFolderId"] != emu.state()["defaultFolderId"]


def test_read_only_mailbox_refuses_writes(emu):
    emu.faults(readonly_users=[OTHER])
    status, _, err = emu.call("POST", f"/users/{OTHER}/contacts", {"givenName": "G"})
    assert status == 403 and err["error"]["code"] == "ErrorAccessDenied"
    emu.ok("GET", f"/users/{OTHER}/contacts")
    emu.admin("POST", "reset", {"mailboxes": {ME: {}, OTHER: {"readonly": True}}})
    emu.faults(readonly_users=[])
    assert emu.call("POST", f"/users/{OTHER}/contactFolders", {"displayName": "x"})[0] == 403


def test_another_users_people_need_people_read_all(emu):
    # people-insights-overview.md (Authorization): People.Read for /me/people,
    # People.Read.All for /users/{id}/people.
    new_contact(emu, {"givenName": "P", "emailAddresses": [{"address": "p@x.example"}]})
    status, _, err = emu.call("GET", f"/users/{OTHER}/people")
    assert status == 403 and err["error"]["code"] == "ErrorAccessDenied"
    emu.ok("GET", f"/users/{ME}/people")
    emu.ok("GET", "/me/people")
    emu.faults(extra_scopes=["People.Read.All"])
    emu.ok("GET", f"/users/{OTHER}/people")
    emu.faults(extra_scopes=[])
    granted = emu.admin("POST", "tokens", {"scopes": ["Contacts.ReadWrite", "People.Read.All"]})["access_token"]
    emu.ok("GET", f"/users/{OTHER}/people", token=granted)
    emu.faults(device_pending_polls=0)
    for scope, want in (("offline_access https://graph.microsoft.com/People.Read.All", 200),
                        ("offline_access https://graph.microsoft.com/People.Read", 403)):
        tok = poll(emu, device_flow(emu, scope=scope))[1]
        assert emu.call("GET", f"/users/{OTHER}/people", token=tok["access_token"])[0] == want, scope
        new = emu.form("/common/oauth2/v2.0/token", {
            "grant_type": "refresh_token", "client_id": "cid", "refresh_token": tok["refresh_token"]})[1]
        assert emu.call("GET", f"/users/{OTHER}/people", token=new["access_token"])[0] == want, "refreshed"
    status, _, _ = emu.raw("POST", "/_emulator/faults", json.dumps({"extra_scopes": "People.Read.All"}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 400


def test_another_users_master_categories_are_refused(emu):
    # outlookuser-list-mastercategories.md: MailboxSettings.Read only, no
    # .Shared permission, so no delegated token reaches another mailbox's list.
    emu.faults(extra_scopes=["MailboxSettings.ReadWrite", "People.Read.All", "Contacts.ReadWrite.Shared"])
    for method, path, body in (("GET", "/outlook/masterCategories", None),
                               ("POST", "/outlook/masterCategories", {"displayName": "X"}),
                               ("GET", "/outlook/masterCategories/nope", None)):
        status, _, err = emu.call(method, f"/users/{OTHER}{path}", body)
        assert status == 403 and err["error"]["code"] == "ErrorAccessDenied", (method, path)
    assert emu.ok("GET", f"/users/{ME}/outlook/masterCategories")["value"]
    assert emu.ok("GET", "/me/outlook/masterCategories")["value"]
    out = emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{OTHER}/outlook/masterCategories"}]})
    assert out["responses"][0]["status"] == 403


def test_token_scopes_flag():
    proc, base = start_emulator("--token", TOKEN, "--token-scopes", "Contacts.ReadWrite People.Read.All")
    try:
        emu = Emu(base)
        emu.admin("POST", "reset", {"mailboxes": {ME: {}, OTHER: {}}})
        emu.ok("GET", f"/users/{OTHER}/people")
    finally:
        assert stop_emulator(proc)[0] == 0
    proc, base = start_emulator("--token", TOKEN)
    try:
        emu = Emu(base)
        emu.admin("POST", "reset", {"mailboxes": {ME: {}, OTHER: {}}})
        assert emu.call("GET", f"/users/{OTHER}/people")[0] == 403, "the default set has People.Read only"
    finally:
        assert stop_emulator(proc)[0] == 0


def test_extension_ids_as_the_docs_show_them(emu):
    # opentypeextension-get.md / -update.md / -delete.md: {extensionId} is
    # the extension's name or its fully qualified name (both in examples);
    # $filter=Extensions/any(f:f/id eq '…') and $expand=Extensions($filter=id
    # eq '…') show the name and the fully qualified name.
    c = new_contact(emu, {"givenName": "X", "extensions": [
        {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "Com.Contoso.Referral", "n": 1}]})
    forms = ("Com.Contoso.Referral", "Microsoft.OutlookServices.OpenTypeExtension.Com.Contoso.Referral",
             "microsoft.graph.openTypeExtension.Com.Contoso.Referral")
    for ext_id in forms:
        got = emu.ok("GET", f"/me/contacts/{c['id']}/extensions/{ext_id}")
        assert got["id"] == "Microsoft.OutlookServices.OpenTypeExtension.Com.Contoso.Referral", ext_id
        emu.ok("PATCH", f"/me/contacts/{c['id']}/extensions/{ext_id}",
               {"@odata.type": "microsoft.graph.openTypeExtension", "extensionName": "Com.Contoso.Referral"})
        flt = urllib.parse.quote(f"Extensions/any(f:f/id eq '{ext_id}')")
        exp = urllib.parse.quote(f"Extensions($filter=id eq '{ext_id}')")
        page = emu.ok("GET", f"/me/contacts?$filter={flt}&$expand={exp}")
        assert [x["id"] for x in page["value"]] == [c["id"]] and page["value"][0]["extensions"][0]["n"] == 1
        assert emu.ok("GET", f"/me/contacts/{c['id']}?$expand={exp}")["extensions"][0]["n"] == 1
    for bad in ("Contoso.Referral", "Other.Prefix.Com.Contoso.Referral"):
        assert emu.call("GET", f"/me/contacts/{c['id']}/extensions/{bad}")[0] == 404, bad
    emu.ok("DELETE", f"/me/contacts/{c['id']}/extensions/{forms[1]}", want=204)


# ---- beta: the follow-up flag ----------------------------------------------------------------------------

FLAG = {"flagStatus": "flagged", "startDateTime": {"dateTime": "2026-05-01T09:00:00", "timeZone": "UTC"},
        "dueDateTime": {"dateTime": "2026-05-08T09:00:00.5", "timeZone": "UTC"}}


def flag_seed(emu):
    emu.admin("POST", "reset", {"mailboxes": {ME: {
        "contacts": [{"givenName": f"R{i}"} for i in range(3)],
        "folders": [{"displayName": "Work", "contacts": [
            {"givenName": "W", "flag": {"flagStatus": "complete",
                                        "completedDateTime": {"dateTime": "2026-01-02T03:04:05",
                                                              "timeZone": "Pacific Standard Time"}}}]}]},
        OTHER: {"contacts": [{"givenName": "G"}]}}})
    st = emu.state()
    return st, next(c for c in st["contacts"] if c["givenName"] == "W")


def test_beta_serves_the_flag_of_a_contact_in_any_folder(emu):
    st, w = flag_seed(emu)
    assert w["flag"] == {"flagStatus": "complete", "completedDateTime": {
        "dateTime": "2026-01-02T03:04:05.0000000", "timeZone": "Pacific Standard Time"}}
    assert "flag" not in st["contacts"][0], "state shows a flag only where there is one"
    got = emu.ok("GET", f"/beta/me/contacts/{w['id']}?$select=flag")
    assert set(got) == {"@odata.context", "@odata.etag", "id", "flag"} and got["id"] == w["id"]
    assert got["@odata.context"].startswith(emu.base + "/beta/$metadata#")
    assert got["flag"] == w["flag"]
    plain = emu.ok("GET", f"/beta/me/contacts/{st['contacts'][0]['id']}?$select=flag")
    assert plain["flag"] == {"flagStatus": "notFlagged"}
    assert emu.ok("GET", f"/beta/me/contacts/{w['id']}?$select=flag", immutable=False)["id"] == w["mutableId"]
    assert emu.ok("GET", f"/beta/users/{OTHER}/contacts?$select=flag")["value"][0]["flag"] == \
        {"flagStatus": "notFlagged"}
    # v1.0 never shows it, and refuses it.
    assert "flag" not in emu.ok("GET", f"/me/contactFolders/{w['parentFolderId']}/contacts/{w['id']}")
    assert emu.call("GET", f"/me/contacts/{st['contacts'][0]['id']}?$select=flag")[0] == 400
    status, _, err = emu.call("PATCH", f"/me/contacts/{st['contacts'][0]['id']}", {"flag": FLAG})
    assert status == 400 and "flag" in err["error"]["message"]
    # Only the flag is modelled.
    status, _, err = emu.call("GET", f"/beta/me/contacts/{w['id']}")
    assert status == 501 and "flag" in err["error"]["message"]
    assert emu.call("GET", f"/beta/me/contacts/{w['id']}?$select=flag,phones")[0] == 501
    assert emu.call("GET", f"/beta/me/contacts/{w['id']}?$select=nope")[0] == 400
    assert emu.call("GET", "/beta/me/contactFolders")[0] == 501
    assert emu.call("POST", "/beta/me/contacts", {"givenName": "x"})[0] == 501


def test_beta_lists_page_like_v1(emu):
    st, w = flag_seed(emu)
    ids, url = [], "/beta/me/contacts?$select=flag&$top=2"
    while url:
        page = emu.ok("GET", url)
        assert len(page["value"]) <= 2 and all(set(x) == {"@odata.etag", "id", "flag"} for x in page["value"])
        ids += [x["id"] for x in page["value"]]
        url = page.get("@odata.nextLink")
        assert url is None or url.startswith(emu.base + "/beta/me/contacts?")
    assert sorted(ids) == sorted(c["id"] for c in st["contacts"]), "beta /contacts spans the mailbox"
    page = emu.ok("GET", f"/beta/me/contactFolders/{w['parentFolderId']}/contacts?$select=flag")
    assert [x["id"] for x in page["value"]] == [w["id"]]
    status, headers, page = emu.call("GET", "/beta/me/contacts?$select=flag",
                                     headers={"Prefer": "odata.maxpagesize=3"})
    assert len(page["value"]) == 3 and "odata.maxpagesize=3" in headers["Preference-Applied"]


def test_beta_patch_of_the_flag(emu):
    st, w = flag_seed(emu)
    c = st["contacts"][0]
    path = f"/beta/me/contacts/{c['id']}"
    _, link, _ = delta_round(emu, default_delta(emu))
    emu.admin("POST", "requests/reset")
    u = emu.ok("PATCH", path, {"flag": FLAG}, headers={"If-Match": c["@odata.etag"]})
    assert u["flag"] == {"flagStatus": "flagged",
                         "startDateTime": {"dateTime": "2026-05-01T09:00:00.0000000", "timeZone": "UTC"},
                         "dueDateTime": {"dateTime": "2026-05-08T09:00:00.5000000", "timeZone": "UTC"}}
    assert u["changeKey"] != c["changeKey"] and u["@odata.etag"] == f'W/"{u["changeKey"]}"'
    items, link, _ = delta_round(emu, link)
    assert [i["id"] for i in items] == [c["id"]] and "flag" not in items[0], "delta (v1.0) reports it"
    assert emu.state()["contacts"][0]["flag"] == u["flag"]
    # If-Match as in v1.0; a stale etag is 412.
    status, _, err = emu.call("PATCH", path, {"flag": {"flagStatus": "complete"}},
                              headers={"If-Match": c["@odata.etag"]})
    assert status == 412 and err["error"]["code"] == "ErrorIrresolvableConflict"
    # Merged like any complex property; null resets it.
    assert emu.ok("PATCH", path, {"flag": {"flagStatus": "complete"}})["flag"]["startDateTime"]
    assert emu.ok("PATCH", path, {"flag": None})["flag"] == {"flagStatus": "notFlagged"}
    for body in ({"flag": {"dueDateTime": FLAG["dueDateTime"]}},           # due needs start
                 {"flag": {"flagStatus": "urgent"}},
                 {"flag": {"startDateTime": {"dateTime": "2026-13-01T00:00:00", "timeZone": "UTC"}}},
                 {"flag": {"startDateTime": {"dateTime": "2026-05-01T00:00:00"}}},
                 {"flag": FLAG, "givenName": "x"}, {"givenName": "x"}, {}):
        status, _, err = emu.call("PATCH", path, body)
        assert status == 400, body
    status, _, err = emu.call("PATCH", path, {"flag": FLAG, "phones": []})
    assert "only flag" in err["error"]["message"]
    status, headers, _ = emu.call("PATCH", path, {"flag": FLAG}, headers={"Prefer": "return=minimal"})
    assert status == 204
    routes = emu.requests()["by_route"]
    assert routes["PATCH beta /me/contacts/{id}"] == 13
    assert not any(r.split()[1] == "beta" for r in routes if r.startswith("GET")), routes


def test_beta_patch_error_refuses_the_flag_and_changes_nothing(emu):
    st, w = flag_seed(emu)
    c = st["contacts"][0]
    path = f"/beta/me/contacts/{c['id']}"
    emu.faults(beta_patch_error=403)
    status, _, err = emu.call("PATCH", path, {"flag": FLAG})
    assert status == 403 and err["error"]["code"] == "ErrorAccessDenied"
    assert emu.call("PATCH", path, {"flag": {"flagStatus": "urgent"}})[0] == 400, "the body first"
    after = emu.state()["contacts"][0]
    assert "flag" not in after and after["changeKey"] == c["changeKey"]
    status, _, _ = emu.raw("POST", "/_emulator/faults", json.dumps({"beta_patch_error": 200}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 400
    emu.faults(beta_patch_error=None)
    assert emu.ok("PATCH", path, {"flag": FLAG})["flag"]["flagStatus"] == "flagged"


def test_beta_batch_items_are_relative_to_beta(emu):
    st, w = flag_seed(emu)
    c = st["contacts"][0]
    out = emu.ok("POST", "/beta/$batch", {"requests": [
        {"id": "get", "method": "GET", "url": f"/me/contacts/{w['id']}?$select=flag",
         "headers": {"Prefer": 'IdType="ImmutableId"'}},
        {"id": "set", "method": "PATCH", "url": f"/me/contacts/{c['id']}",
         "headers": {"Content-Type": "application/json"}, "body": {"flag": {"flagStatus": "flagged"}}}]})
    by_id = {r["id"]: r for r in out["responses"]}
    assert by_id["get"]["status"] == 200 and by_id["get"]["body"]["flag"]["flagStatus"] == "complete"
    assert by_id["set"]["status"] == 200 and by_id["set"]["body"]["id"] == c["mutableId"]
    assert emu.state()["contacts"][0]["flag"] == {"flagStatus": "flagged"}
    routes = emu.requests()["by_route"]
    assert routes["POST beta /$batch"] == 1 and routes["GET beta /me/contacts/{id}"] == 1
    v1 = emu.ok("POST", "/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": f"/me/contacts/{c['id']}?$select=flag"}]})
    assert v1["responses"][0]["status"] == 400, "a v1.0 batch item is v1.0"


# ---- identity: device code, refresh, expiry ------------------------------------------------------------

def device_flow(emu, scope="offline_access openid https://graph.microsoft.com/Contacts.ReadWrite"):
    status, dc = emu.form("/common/oauth2/v2.0/devicecode", {"client_id": "cid", "scope": scope})
    assert status == 200
    assert set(dc) >= {"device_code", "user_code", "verification_uri", "expires_in", "interval", "message"}
    return dc


def poll(emu, dc):
    return emu.form("/common/oauth2/v2.0/token", {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": "cid",
        "device_code": dc["device_code"]})


def test_device_code_flow_pending_slow_down_then_tokens(emu):
    emu.faults(device_interval_s=0.2)
    dc = device_flow(emu)
    status, err = poll(emu, dc)
    assert status == 400 and err["error"] == "authorization_pending"
    status, err = poll(emu, dc)
    assert status == 400 and err["error"] == "slow_down", "polled again at once"
    time.sleep(0.25)
    status, err = poll(emu, dc)
    assert status == 400 and err["error"] == "authorization_pending"
    assert err["error_codes"] and err["error_description"].startswith("AADSTS")
    time.sleep(0.25)
    status, tok = poll(emu, dc)
    assert status == 200, tok
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600
    assert tok["access_token"] and tok["refresh_token"] and tok["id_token"]
    emu.ok("GET", "/me/contacts", token=tok["access_token"])
    status, err = poll(emu, dc)
    assert status == 400, "a device code is used once"
    # Without offline_access there is no refresh token.
    dc = device_flow(emu, scope="https://graph.microsoft.com/Contacts.ReadWrite")
    for _ in range(3):
        status, tok = poll(emu, dc)
        time.sleep(0.21)
    assert status == 200 and "refresh_token" not in tok


@pytest.mark.parametrize("outcome,error", [("declined", "authorization_declined"),
                                           ("expired", "expired_token")])
def test_device_code_flow_can_be_declined_or_expire(emu, outcome, error):
    emu.faults(device_interval_s=0.05, next_device_flow=outcome)
    dc = device_flow(emu)
    errors = []
    for _ in range(3):
        time.sleep(0.06)
        errors.append(poll(emu, dc)[1]["error"])
    assert errors == ["authorization_pending", "authorization_pending", error]
    assert emu.admin("GET", "faults")["next_device_flow"] is None, "one flow only"


def test_refresh_tokens_rotate_and_can_be_revoked(emu):
    emu.faults(device_interval_s=0.05, device_pending_polls=0)
    tok = poll(emu, device_flow(emu))[1]
    status, new = emu.form("/organizations/oauth2/v2.0/token", {
        "grant_type": "refresh_token", "client_id": "cid", "refresh_token": tok["refresh_token"]})
    assert status == 200 and new["refresh_token"] != tok["refresh_token"]
    assert new["access_token"] != tok["access_token"]
    emu.ok("GET", "/me/contacts", token=new["access_token"])
    status, err = emu.form("/common/oauth2/v2.0/token", {
        "grant_type": "refresh_token", "client_id": "cid", "refresh_token": "bogus"})
    assert status == 400 and err["error"] == "invalid_grant"
    emu.faults(revoke_refresh_tokens=True)
    status, err = emu.form("/common/oauth2/v2.0/token", {
        "grant_type": "refresh_token", "client_id": "cid", "refresh_token": new["refresh_token"]})
    assert status == 400 and err["error"] == "invalid_grant"


def test_access_tokens_expire(emu):
    emu.faults(token_ttl_s=0.6, device_pending_polls=0)
    tok = poll(emu, device_flow(emu))[1]
    emu.ok("GET", "/me/contacts", token=tok["access_token"])
    time.sleep(0.65)
    status, headers, err = emu.call("GET", "/me/contacts", token=tok["access_token"])
    assert status == 401 and err["error"]["code"] == "InvalidAuthenticationToken"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert emu.call("GET", "/me/contacts", token=None)[0] == 401
    assert emu.call("GET", "/me/contacts", token="made-up")[0] == 401
    short = emu.admin("POST", "tokens", {"ttl_s": 60})["access_token"]
    emu.ok("GET", "/me/contacts", token=short)
    emu.faults(expire_tokens=True)
    assert emu.call("GET", "/me/contacts", token=short)[0] == 401


def test_device_user_chooses_the_mailbox_of_me(emu):
    emu.faults(device_pending_polls=0, device_user=OTHER)
    tok = poll(emu, device_flow(emu))[1]
    emu.ok("POST", "/me/contacts", {"givenName": "Mine"}, token=tok["access_token"], want=201)
    assert emu.state(OTHER)["contacts"][0]["givenName"] == "Mine"


# ---- seeds, the generator, the process ---------------------------------------------------------------

def test_seed_format_round_trip(emu):
    data = jpeg(3)
    emu.admin("POST", "reset", {"mailboxes": {ME: {
        "categories": [{"displayName": "Family", "color": "preset5"}],
        "contacts": [{"givenName": "Root", "photo_base64": base64.b64encode(data).decode()}],
        "folders": [{"displayName": "Work", "contacts": [{"givenName": "W"}],
                     "childFolders": [{"displayName": "Team", "contacts": [{"givenName": "T"}]}]}]}}})
    st = emu.state()
    assert [c["displayName"] for c in st["categories"]] == ["Family"]
    names = {c["givenName"]: c for c in st["contacts"]}
    assert names["Root"]["photo"]["sha256"] == hashlib.sha256(data).hexdigest()
    folders = {f["displayName"]: f for f in st["folders"]}
    assert folders["Team"]["parentFolderId"] == folders["Work"]["id"]
    assert names["T"]["parentFolderId"] == folders["Team"]["id"]
    status, _, _ = emu.raw("POST", "/_emulator/reset", json.dumps(
        {"mailboxes": {ME: {"contacts": [{"emailAddresses": [{"address": "x"}] * 4}]}}}).encode())
    assert status == 400, "a seed is validated like a request"
    assert len(emu.state()["contacts"]) == 3, "a refused seed leaves the state alone"


def test_generator_makes_a_varied_mailbox():
    proc, base = start_emulator("--token", TOKEN, "--contacts", "200", "--folders", "5", "--photos", "20")
    try:
        emu = Emu(base)
        st = emu.state()
        assert len(st["contacts"]) == 200
        assert len(st["folders"]) == 6                     # the default folder and five more
        assert sum(1 for c in st["contacts"] if c["photo"]) == 20
        folders = {f["id"]: f for f in st["folders"]}
        nested = [f for f in st["folders"] if f["parentFolderId"] in folders
                  and not folders[f["parentFolderId"]]["isDefault"]]
        assert nested, "some folders are nested"
        names = [c["displayName"] for c in st["contacts"]]
        text = " ".join(names)
        for script in (r"[\u3040-\u30ff\u4e00-\u9fff]", r"[\u0370-\u03ff]", r"[\u0600-\u06ff]", "[äöüß]"):
            assert re.search(script, text), script
        assert len(names) > len(set(names)), "some display names repeat"
        bdays = [c["birthday"] for c in st["contacts"] if c["birthday"]]
        assert any(b.startswith("1604-") for b in bdays) and any(b[5:10] == "02-29" for b in bdays)
        assert any("\n" in (c["personalNotes"] or "") for c in st["contacts"])
        assert any(len(c["emailAddresses"]) == 3 for c in st["contacts"])
        assert any(not c["emailAddresses"] for c in st["contacts"])
        assert all(len(c["emailAddresses"]) <= 3 for c in st["contacts"])
        in_folders = {c["parentFolderId"] for c in st["contacts"]}
        assert len(in_folders) == 6
        # Photos are real JPEGs with the size the metadata reports.
        c = next(c for c in st["contacts"] if c["photo"])
        assert emu.ok("GET", f"/me/contacts/{c['id']}/photo/$value")[:2] == b"\xff\xd8"
        # The same arguments make the same mailbox.
        again = Emu(base)
        again.admin("POST", "reset", {"generate": {"contacts": 200, "folders": 5, "photos": 20}})
        assert [x["id"] for x in again.state()["contacts"]] == [x["id"] for x in st["contacts"]]
    finally:
        code, out, _ = stop_emulator(proc)
    assert code == 0 and out == ""


def test_sigterm_and_sigint_exit_cleanly_and_verbose_logs_to_stderr():
    proc, base = start_emulator("--verbose", "--latency-ms", "5")
    Emu(base).call("GET", "/me/contacts", token=None)
    assert Emu(base).admin("GET", "faults")["latency_ms"] == 5
    code, out, err = stop_emulator(proc)
    assert code == 0 and out == "" and "GET /v1.0/me/contacts" in err
    proc, base = start_emulator()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert proc.stdout.read() == ""


def test_bad_seed_file_exits_with_an_error(tmp_path):
    bad = tmp_path / "seed.json"
    bad.write_text(json.dumps({"mailboxes": {ME: {"contacts": [{"nope": 1}]}}}))
    r = subprocess.run([sys.executable, str(SERVER), "--port", "0", "--seed", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == "" and "nope" in r.stderr
