"""contactfs holds to Graph's documented contract, not to what our emulator once
allowed (docs/graph.md). The emulator is at least as strict as the docs:

- ids are mutable (they differ from the immutable ones) unless the request
  itself, or the $batch item itself, asks for immutable ones;
- /me/contacts/delta (no folder) is refused: contact delta is per folder;
- contactFolders/delta may list every folder ("all"), only the top level
  ("top"), or also the default folder ("with_default"): the tests run under
  each reading;
- a photo of 4 MB or more is refused;
- {} for an address changes nothing;
- an extension write and a photo PUT give the contact a new change key;
- another mailbox's people need People.Read.All, and its master categories
  cannot be read at all.

Each test mounts for real and checks the server's state.
"""
import base64
import errno
import json
import subprocess
import time

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, server_contacts, vcf_files, wait_until
from test_mount_sync import graph, prop_values, vcard, write_seed

ME = "me@contoso.example"
GARTH = "garth@contoso.example"
READINGS = ("all", "top", "with_default")


def person(given, surname, **more):
    c = {"givenName": given, "surname": surname, "displayName": "%s %s" % (given, surname),
         "emailAddresses": [{"address": "%s.%s@example.org" % (given.lower(), surname.lower()),
                             "name": "%s %s" % (given, surname)}]}
    c.update(more)
    return c


def deletes(emu):
    return {r: n for r, n in emu.requests()["by_route"].items()
            if r.startswith("DELETE") and n}


def route_count(emu, route):
    return emu.requests()["by_route"].get(route, 0)


# ---- 1. immutable ids, in $batch items too --------------------------------------

def test_cp_of_30_new_cards_under_mutable_default_ids_deletes_nothing_on_the_server(tmp_path):
    src = tmp_path / "cards"
    src.mkdir()
    for i in range(30):
        (src / ("Batch %02d.vcf" % i)).write_bytes(
            vcard("Batch Person%02d" % i, "b%02d@example.org" % i, "urn:uuid:batch-%02d" % i))
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"folders": [{"displayName": "Team"}]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        assert emu.faults({})["immutable_ids"] == "request"
        m.wait_synced()
        emu.admin("POST", "requests/reset", {})
        subprocess.run(["cp"] + [str(p) for p in sorted(src.iterdir())] + [str(m.root / "Team")],
                       check=True)
        m.wait_synced()
        m.wait_rounds(4)
        m.wait_synced()
        on_server = [c for c in server_contacts(emu) if c["displayName"].startswith("Batch")]
        assert len(on_server) == 30, len(on_server)
        assert deletes(emu) == {}
        assert len(vcf_files(m.root / "Team")) == 30
        # Every request asked for immutable ids in one Prefer line.
        assert emu.requests().get("prefer_lines_multi", 0) == 0


# ---- 2. the default folder's delta is the folder-scoped one ---------------------

def test_the_default_folder_is_read_by_its_id_never_with_the_folderless_delta(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {
        "contacts": [person("Root", "One"), person("Root", "Two")],
        "folders": [{"displayName": "Team", "contacts": [person("Team", "Three")]}]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        assert vcf_files(m.root) == ["Root One.vcf", "Root Two.vcf", "Team/Team Three.vcf"]
        by_route = emu.requests()["by_route"]
        assert by_route.get("GET /me/contacts/delta", 0) == 0, by_route
        assert by_route.get("GET /me/contactFolders/{id}/contacts/delta", 0) >= 2, by_route
        # A change there comes in.
        rid = next(c["id"] for c in server_contacts(emu) if c["displayName"] == "Root One")
        graph(emu, "PATCH", "/contacts/" + rid, {"personalNotes": "from the phone"})
        wait_until(lambda: b"from the phone" in (m.root / "Root One.vcf").read_bytes(),
                   what="the server's change in the file")


def test_an_empty_mailbox_mounts_and_its_first_contact_syncs_both_ways(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        assert vcf_files(m.root) == []
        (m.root / "First.vcf").write_bytes(vcard("First Person", "f@example.org",
                                                 "urn:uuid:first"))
        m.wait_synced()
        assert [c["displayName"] for c in server_contacts(emu)] == ["First Person"]
        graph(emu, "POST", "/contacts", person("From", "Outlook"))
        wait_until(lambda: "From Outlook.vcf" in vcf_files(m.root), what="the remote contact")
        assert deletes(emu) == {}


def test_export_reads_the_default_folder_by_its_id(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {
        "contacts": [person("Root", "One")],
        "folders": [{"displayName": "Work", "childFolders": [
            {"displayName": "Clients", "contacts": [person("Deep", "Client")]}]}]}}})
    from conftest import contactfs_bin
    from mount_proc import mount_options
    with Emulator("--seed", str(seed)) as emu:
        emu.faults({"folder_delta": "top"})
        out = tmp_path / "export"
        opts = mount_options(emu)
        r = subprocess.run([str(contactfs_bin()), "export", "-o", opts, str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        assert vcf_files(out) == ["Root One.vcf", "Work/Clients/Deep Client.vcf"]
        assert emu.requests()["by_route"].get("GET /me/contacts/delta", 0) == 0


# ---- 3. nested folders, whatever contactFolders/delta lists ---------------------

NESTED = {"contacts": [person("Root", "Person")],
          "folders": [{"displayName": "Work", "contacts": [person("Work", "Person")],
                       "childFolders": [{"displayName": "Clients",
                                         "contacts": [person("Client", "Person")],
                                         "childFolders": [{"displayName": "Key accounts",
                                                           "contacts": [person("Key",
                                                                               "Person")]}]}]},
                      {"displayName": "Family", "contacts": [person("Family", "Person")]}]}
NESTED_FILES = ["Family/Family Person.vcf", "Root Person.vcf", "Work/Clients/Client Person.vcf",
                "Work/Clients/Key accounts/Key Person.vcf", "Work/Work Person.vcf"]


@pytest.mark.parametrize("reading", READINGS)
def test_nested_folders_show_and_stay_under_every_reading_of_folder_delta(tmp_path, reading):
    seed = write_seed(tmp_path, {"mailboxes": {ME: NESTED}})
    with Emulator("--seed", str(seed)) as emu:
        emu.faults({"folder_delta": reading})
        with Mount(emu, tmp_path, poll=1) as m:
            m.wait_synced()
            assert vcf_files(m.root) == NESTED_FILES
            # A full round (the cursors forgotten) drops nothing, and the
            # default folder never shows as a folder of itself.
            emu.faults({"expire_delta": True})
            m.wait_rounds(2)
            assert vcf_files(m.root) == NESTED_FILES
            assert sorted(p.name for p in m.root.iterdir() if p.is_dir()) == ["Family", "Work"]
            # A folder made in Outlook inside a nested one comes in.
            box = mailbox(emu)
            clients = next(f["id"] for f in box["folders"] if f["displayName"] == "Clients")
            made = graph(emu, "POST", "/contactFolders/%s/childFolders" % clients,
                         {"displayName": "Prospects"})
            graph(emu, "POST", "/contactFolders/%s/contacts" % made["id"],
                  person("New", "Prospect"))
            want = "Work/Clients/Prospects/New Prospect.vcf"
            wait_until(lambda: want in vcf_files(m.root), timeout=40, what=want)
            # And one removed there goes.
            graph(emu, "DELETE", "/contactFolders/%s" % made["id"])
            wait_until(lambda: not (m.root / "Work/Clients/Prospects").exists(), timeout=40,
                       what="the removed folder gone")
            assert vcf_files(m.root) == NESTED_FILES
            # The one DELETE is the test's own: the client deleted nothing.
            assert deletes(emu) == {"DELETE /me/contactFolders/{id}": 1}, deletes(emu)


# ---- 4. photos -------------------------------------------------------------------

def jpeg(size):
    """size bytes that read as a 1x1 JPEG: SOI, JFIF, a frame header, filler, EOI."""
    head = bytes.fromhex("ffd8" "ffe000104a46494600010100000100010000"
                         "ffc0000b080001000101011100")
    return head + b"\0" * (size - len(head) - 2) + b"\xff\xd9"


def card_with_photo(fn, uid, data):
    b64 = base64.b64encode(data).decode()
    lines = ["BEGIN:VCARD", "VERSION:3.0", "FN:" + fn, "N:%s;%s;;;" % (fn.split()[-1],
                                                                  fn.split()[0]),
             "UID:" + uid, "PHOTO;ENCODING=b;TYPE=JPEG:" + b64, "END:VCARD"]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_a_photo_of_4_mb_is_refused_where_it_is_written_and_nothing_reaches_the_server(
        tmp_path):
    big = tmp_path / "Big Photo.vcf"
    big.write_bytes(card_with_photo("Big Photo", "urn:uuid:big", jpeg(4 << 20)))
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"folders": [{"displayName": "Team"}]}}})
    with Emulator("--seed", str(seed)) as emu, \
            Mount(emu, tmp_path, poll=1, expect_errors=[r"photo"]) as m:
        m.wait_synced()
        r = subprocess.run(["cp", str(big), str(m.root / "Team")], stderr=subprocess.PIPE)
        assert r.returncode != 0
        assert b"File too large" in r.stderr, r.stderr
        assert "4194304 bytes" in m.errors() or "under 4194304" in m.errors(), m.errors()
        # Kept here, byte for byte; nothing sent.
        assert (m.root / "Team" / "Big Photo.vcf").read_bytes() == big.read_bytes()
        m.wait_rounds(2)
        assert server_contacts(emu) == []
        # Just under the limit goes.
        ok = card_with_photo("Fits Photo", "urn:uuid:fits", jpeg((4 << 20) - 4096))
        (m.root / "Team" / "Fits Photo.vcf").write_bytes(ok)
        m.wait_synced()
        c = [c for c in mailbox(emu)["contacts"] if c["displayName"] == "Fits Photo"]
        assert len(c) == 1 and c[0]["photo"], (c, m.errors(), m.log_text()[-3000:])
        assert c[0]["photo"]["size"] == (4 << 20) - 4096


def png_bytes():
    import struct
    import zlib
    raw = b"\0\xff\0\0"  # one red pixel
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_a_png_photo_read_in_a_batch_is_shown_as_png(tmp_path):
    png = png_bytes()
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"contacts": [
        dict(person("Png", "Face"), photo_base64=base64.b64encode(png).decode(),
             photo_content_type="image/png")]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        p = m.root / "Png Face.vcf"
        wait_until(lambda: prop_values(p.read_bytes(), "PHOTO"), what="the photo")
        line = [l for l in p.read_bytes().decode().replace("\r\n ", "").split("\r\n")
                if l.startswith("PHOTO")][0]
        assert "PNG" in line.upper().split(":")[0] or "image/png" in line, line
        assert "JPEG" not in line.upper(), line


# ---- 5. clearing an address --------------------------------------------------------

def test_an_address_removed_from_the_file_is_cleared_on_the_server_and_stays_gone(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"contacts": [
        person("Addr", "Ess", homeAddress={"street": "2 Elm St", "city": "Oslo"},
               businessAddress={"street": "1 Main St", "city": "Bergen", "postalCode": "5003"})]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        p = m.root / "Addr Ess.vcf"
        text = p.read_bytes().decode()
        lines = text.split("\r\n")
        # Drop the home address; the work address loses its city.
        lines = [l for l in lines if not (l.startswith("ADR") and "Oslo" in l)]
        lines = [l.replace("Bergen", "") if l.startswith("ADR") else l for l in lines]
        p.write_bytes("\r\n".join(lines).encode())
        m.wait_synced()
        c = server_contacts(emu)[0]
        assert not any((c.get("homeAddress") or {}).values()), c["homeAddress"]
        assert c["businessAddress"].get("street") == "1 Main St", c["businessAddress"]
        assert not c["businessAddress"].get("city"), c["businessAddress"]
        m.wait_rounds(2)
        assert "Oslo" not in p.read_bytes().decode()
        assert "Bergen" not in p.read_bytes().decode()


# ---- 6. change keys after an extension write and a photo PUT ----------------------

def test_edits_after_an_extension_write_and_a_photo_put_meet_no_stale_change_key(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"contacts": [person("Key", "Fresh")]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        assert emu.faults({})["ext_changes_key"] is True
        m.wait_synced()
        p = m.root / "Key Fresh.vcf"

        def edit(add):
            lines = p.read_bytes().decode().split("\r\n")
            end = lines.index("END:VCARD")
            p.write_bytes("\r\n".join(lines[:end] + add + lines[end:]).encode())
            m.wait_synced()

        emu.admin("POST", "requests/reset", {})
        edit(["X-PET:Rex"])              # kept in our open extension
        edit(["X-PET-AGE:4"])            # the extension again
        edit(["PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(jpeg(2000)).decode()])
        edit(["NOTE:after the photo"])   # a plain field
        st = emu.requests()
        assert st["by_status"].get("412", 0) == 0, st["by_status"]
        c = server_contacts(emu)[0]
        assert c["personalNotes"] == "after the photo"
        ext = [x for x in c.get("extensions", []) if x.get("extensionName") ==
               "org.contactfs.vcard" or x.get("id", "").endswith("org.contactfs.vcard")]
        assert ext and "X-PET-AGE:4" in json.dumps(ext), ext
        assert c["photo"] and c["photo"]["size"] == 2000
        # The delta round sees our own change keys: no photo read again.
        emu.admin("POST", "requests/reset", {})
        m.wait_rounds(2)
        photo_gets = sum(n for r, n in emu.requests()["by_route"].items()
                         if r.startswith("GET") and "photo" in r)
        assert photo_gets == 0, emu.requests()["by_route"]


def test_a_change_made_elsewhere_between_our_write_and_the_read_back_still_comes_in(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"contacts": [person("Race", "Window")]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        p = m.root / "Race Window.vcf"
        cid = server_contacts(emu)[0]["id"]
        # Slow answers, so the remote change lands while our write is on its way.
        emu.faults({"latency_ms": 400})
        lines = p.read_bytes().decode().split("\r\n")
        end = lines.index("END:VCARD")
        p.write_bytes("\r\n".join(lines[:end] + ["X-PET:Rex"] + lines[end:]).encode())
        time.sleep(0.5)
        graph(emu, "PATCH", "/contacts/" + cid, {"jobTitle": "Changed Elsewhere"})
        emu.faults({"latency_ms": 0})
        m.wait_synced()
        wait_until(lambda: b"Changed Elsewhere" in p.read_bytes(), timeout=30,
                   what="the remote title in the file")
        c = server_contacts(emu)[0]
        assert c["jobTitle"] == "Changed Elsewhere"


# ---- 7. another mailbox: people and categories ---------------------------------

def shared_seed(tmp_path):
    return write_seed(tmp_path, {"mailboxes": {
        ME: {"contacts": [person("Mine", "Only")]},
        GARTH: {"contacts": [person("Gina", "Garth"), person("Gus", "Garth")]}}})


def test_another_mailboxs_people_need_people_read_all_and_say_so(tmp_path):
    with Emulator("--seed", str(shared_seed(tmp_path))) as emu:
        with Mount(emu, tmp_path, poll=1, user=GARTH,
                   expect_errors=[r"people", r"People\.Read\.All", r"403|EACCES|denied"]) as m:
            m.wait_synced()
            assert sorted(p.name for p in (m.root / ".contactfs" / "people").iterdir()) == []
            assert "People.Read.All" in m.errors(), m.errors()
        emu.faults({"extra_scopes": ["People.Read.All"]})
        with Mount(emu, tmp_path, poll=1, user=GARTH) as m:
            m.wait_synced()
            time.sleep(1.5)  # the stored (empty) answer ages past poll
            names = wait_until(lambda: sorted(p.name for p in
                                              (m.root / ".contactfs" / "people").iterdir()),
                               what="people listed")
            assert any("Gina Garth" in n for n in names), names


def test_another_mailboxs_master_categories_are_never_asked_for(tmp_path):
    with Emulator("--seed", str(shared_seed(tmp_path))) as emu, \
            Mount(emu, tmp_path, poll=1, user=GARTH, expect_errors=[r"categor"]) as m:
        m.wait_synced()
        text = (m.root / ".contactfs" / "categories").read_text()
        assert "no delegated permission" in text, text
        with pytest.raises(OSError) as e:
            with open(m.root / ".contactfs" / "categories", "w") as f:
                f.write("Red: Red\n")
        assert e.value.errno == errno.EACCES
        assert not [r for r in emu.requests()["by_route"] if "masterCategories" in r], \
            emu.requests()["by_route"]


# ---- 8. the extension's URL and one Prefer header ---------------------------------

def test_the_extension_is_written_by_its_short_name_and_prefer_is_one_header(tmp_path):
    seed = write_seed(tmp_path, {"mailboxes": {ME: {"contacts": [person("Ext", "Name")]}}})
    with Emulator("--seed", str(seed)) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        p = m.root / "Ext Name.vcf"
        for value in ("one", "two"):
            lines = [l for l in p.read_bytes().decode().split("\r\n")
                     if not l.startswith("X-TAG")]
            end = lines.index("END:VCARD")
            p.write_bytes("\r\n".join(lines[:end] + ["X-TAG:" + value] + lines[end:]).encode())
            m.wait_synced()
        c = server_contacts(emu)[0]
        assert "X-TAG:two" in json.dumps(c.get("extensions")), c.get("extensions")
        st = emu.requests()
        # By its short name: the first PATCH finds none (404) and creates it,
        # the second finds it.
        assert st["by_route"].get("POST /me/contacts/{id}/extensions") == 1, st["by_route"]
        assert st["by_route"].get("PATCH /me/contacts/{id}/extensions/{id}") == 2, st["by_route"]
        assert st.get("prefer_lines_multi", 0) == 0
        # Nothing about the extension failed (write_bytes truncates first, and a
        # slow daemon may log that empty moment as "no vCard": not this test's).
        assert not [l for l in m.errors().splitlines() if "HTTP" in l or "xtension" in l], \
            m.errors()
