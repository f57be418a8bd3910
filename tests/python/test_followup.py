"""The contact's follow-up flag (-o followup; docs/mapping.md, "Follow-up flag";
docs/graph.md, "Follow-up flag").

Graph has the flag in beta only. With -o followup a contact's file shows it as
one property,

    X-CONTACTFS-FOLLOWUP;START="<dateTime> <timeZone>";DUE="...";COMPLETED="...":<flagStatus>

read from and written to Graph's beta; without the option nothing is sent to
beta and the property is an unknown one like any other. Each test mounts for
real against the emulator, whose beta models the flag (and, with the knob
beta_patch_error, refuses it).
"""
import errno
import json
import os
import re
import shutil

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, need_fuse, server_contacts, vcf_files, wait_until
from test_mount_sync import graph, unfold, write_seed

ME = "me@contoso.example"
TZ = "W. Europe Standard Time"
FLAG = {"flagStatus": "flagged",
        "startDateTime": {"dateTime": "2026-05-01T09:00:00", "timeZone": TZ},
        "dueDateTime": {"dateTime": "2026-05-03T17:30:00", "timeZone": TZ}}
# How the file shows FLAG (Graph writes seven digits of fractions).
FLAG_LINE = ('X-CONTACTFS-FOLLOWUP;START="2026-05-01T09:00:00.0000000 W. Europe Standard Time";'
             'DUE="2026-05-03T17:30:00.0000000 W. Europe Standard Time":flagged')


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


def person(given, surname, **more):
    c = {"givenName": given, "surname": surname, "displayName": "%s %s" % (given, surname),
         "emailAddresses": [{"address": "%s@example.org" % given.lower(),
                             "name": "%s %s" % (given, surname)}]}
    c.update(more)
    return c


def seed(tmp_path, contacts, folders=None):
    box = {"contacts": contacts}
    if folders:
        box["folders"] = folders
    return write_seed(tmp_path, {"mailboxes": {ME: box}})


def card(fn, uid, *extra, note=None):
    given, surname = fn.split(" ", 1)
    lines = ["BEGIN:VCARD", "VERSION:3.0", "FN:" + fn, "N:%s;%s;;;" % (surname, given),
             "UID:" + uid, "EMAIL;TYPE=INTERNET:%s@example.org" % given.lower()]
    if note is not None:
        lines.append("NOTE:" + note)
    lines += list(extra)
    lines.append("END:VCARD")
    return ("\r\n".join(lines) + "\r\n").encode()


def beta(emu, method, path, body=None):
    """A request to the emulator's beta, as Outlook or another client would."""
    return graph(emu, method, path, body, root="beta")


def contact_named(emu, name):
    return next(c for c in server_contacts(emu) if c["displayName"] == name)


def flag_lines(data):
    """The X-CONTACTFS-FOLLOWUP lines of a vCard, unfolded, as written."""
    return [l for l in re.split(r"\r?\n", unfold(data))
            if re.match(r"(?:[A-Za-z0-9-]+\.)?X-CONTACTFS-FOLLOWUP[;:]", l, re.I)]


def beta_routes(emu):
    return {r: n for r, n in emu.requests()["by_route"].items() if " beta " in r and n}


# ---- reading -----------------------------------------------------------------------------

def test_a_flag_set_in_outlook_shows_in_the_file_as_one_property(tmp_path):
    s = seed(tmp_path, [person("Flag", "Ged", flag=FLAG), person("Plain", "Person")],
             [{"displayName": "Work", "contacts": [person("Done", "Deal", flag={
                 "flagStatus": "complete",
                 "completedDateTime": {"dateTime": "2026-01-02T03:04:05", "timeZone": "UTC"}})]}])
    with Emulator("--seed", str(s)) as emu, Mount(emu, tmp_path, poll=1, followup=True) as m:
        m.wait_synced()
        assert flag_lines((m.root / "Flag Ged.vcf").read_bytes()) == [FLAG_LINE]
        assert flag_lines((m.root / "Work" / "Done Deal.vcf").read_bytes()) == [
            'X-CONTACTFS-FOLLOWUP;COMPLETED="2026-01-02T03:04:05.0000000 UTC":complete']
        # notFlagged: no property at all.
        assert flag_lines((m.root / "Plain Person.vcf").read_bytes()) == []
        assert "follow-up flags: shown" in (m.root / ".contactfs" / "status").read_text()
        # Read by the beta folder list, once per folder on the first round.
        routes = beta_routes(emu)
        assert routes.get("GET beta /me/contactFolders/{id}/contacts", 0) >= 2, routes
        assert not any(r.startswith(("PATCH", "POST beta /me")) for r in routes), routes


def test_a_flag_only_change_on_the_server_shows_in_the_file(tmp_path):
    s = seed(tmp_path, [person("Later", "Flagged")],
             [{"displayName": "Work", "contacts": [person("Deep", "Folder")]}])
    with Emulator("--seed", str(s)) as emu, Mount(emu, tmp_path, poll=1, followup=True) as m:
        m.wait_synced()
        path, deep = m.root / "Later Flagged.vcf", m.root / "Work" / "Deep Folder.vcf"
        assert flag_lines(path.read_bytes()) == []
        beta(emu, "PATCH", "/contacts/" + contact_named(emu, "Later Flagged")["id"],
             {"flag": FLAG})
        beta(emu, "PATCH", "/contacts/" + contact_named(emu, "Deep Folder")["id"],
             {"flag": {"flagStatus": "complete"}})
        wait_until(lambda: flag_lines(path.read_bytes()) == [FLAG_LINE], timeout=20,
                   what="the flag set in Outlook in the file")
        wait_until(lambda: flag_lines(deep.read_bytes()) == ["X-CONTACTFS-FOLLOWUP:complete"],
                   timeout=20, what="the flag in a folder's file")
        # Delta said which contacts changed; their flags came by a beta $batch.
        assert beta_routes(emu).get("POST beta /$batch", 0) >= 1, beta_routes(emu)
        # And cleared in Outlook: the property goes.
        beta(emu, "PATCH", "/contacts/" + contact_named(emu, "Later Flagged")["id"],
             {"flag": {"flagStatus": "notFlagged", "startDateTime": None, "dueDateTime": None}})
        wait_until(lambda: flag_lines(path.read_bytes()) == [], timeout=20,
                   what="the cleared flag gone from the file")


# ---- writing ------------------------------------------------------------------------------

def test_a_flag_written_in_the_file_reaches_the_server_and_survives_a_remount_byte_exact(
        tmp_path):
    s = seed(tmp_path, [person("Ada", "Lovelace")])
    written = card("Grace Hopper", "urn:uuid:grace",
                   # As a person types it: lower case, any order, minutes only.
                   'x-contactfs-followup;due="2026-06-02T17:00 Romance Standard Time";'
                   'start="2026-06-01T08:30 Romance Standard Time":Flagged')
    with Emulator("--seed", str(s)) as emu:
        with Mount(emu, tmp_path, poll=1, followup=True) as m:
            m.wait_synced()
            emu.admin("POST", "requests/reset")
            (m.root / "Grace Hopper.vcf").write_bytes(written)
            ada = m.root / "Ada Lovelace.vcf"
            edited = ada.read_bytes().replace(
                b"END:VCARD", b"X-CONTACTFS-FOLLOWUP:complete\r\nEND:VCARD")
            ada.write_bytes(edited)
            m.wait_synced()
            grace = contact_named(emu, "Grace Hopper")
            assert grace["flag"] == {
                "flagStatus": "flagged",
                "startDateTime": {"dateTime": "2026-06-01T08:30:00.0000000",
                                  "timeZone": "Romance Standard Time"},
                "dueDateTime": {"dateTime": "2026-06-02T17:00:00.0000000",
                                "timeZone": "Romance Standard Time"}}
            assert contact_named(emu, "Ada Lovelace")["flag"] == {"flagStatus": "complete"}
            # The flag went to beta only: not in the v1.0 body (which would
            # be refused), not in the open extension.
            for c in (grace, contact_named(emu, "Ada Lovelace")):
                assert "FOLLOWUP" not in json.dumps(c.get("extensions", [])), c
            routes = beta_routes(emu)
            assert routes.get("PATCH beta /me/contacts/{id}", 0) == 2, routes
            assert "X-CONTACTFS-FOLLOWUP" not in m.errors()
            # Graph's form says the same: the files keep the bytes written.
            m.wait_rounds(2)
            assert (m.root / "Grace Hopper.vcf").read_bytes() == written
            assert ada.read_bytes() == edited
            before = {p: (m.root / p).read_bytes() for p in vcf_files(m.root)}
        with Mount(emu, tmp_path, poll=1, followup=True) as m:
            m.wait_synced()
            m.wait_rounds(1)
            assert {p: (m.root / p).read_bytes() for p in vcf_files(m.root)} == before
        # A new cache renders Graph's values; read back and written again,
        # they send nothing.
        shutil.rmtree(tmp_path / "cache")
        with Mount(emu, tmp_path, poll=1, followup=True) as m:
            m.wait_synced()
            path = m.root / "Grace Hopper.vcf"
            rendered = path.read_bytes()
            assert flag_lines(rendered) == [
                'X-CONTACTFS-FOLLOWUP;START="2026-06-01T08:30:00.0000000 Romance Standard '
                'Time";DUE="2026-06-02T17:00:00.0000000 Romance Standard Time":flagged']
            emu.admin("POST", "requests/reset")
            path.write_bytes(rendered)
            m.wait_synced()
            m.wait_rounds(1)
            assert "PATCH beta /me/contacts/{id}" not in beta_routes(emu)
            assert path.read_bytes() == rendered
            assert contact_named(emu, "Grace Hopper")["flag"] == grace["flag"]


def test_clearing_or_completing_the_flag_in_the_file_does_so_on_the_server(tmp_path):
    s = seed(tmp_path, [person("Clear", "Me", flag=FLAG), person("Finish", "Me", flag=FLAG)])
    with Emulator("--seed", str(s)) as emu, Mount(emu, tmp_path, poll=1, followup=True) as m:
        m.wait_synced()
        clear, finish = m.root / "Clear Me.vcf", m.root / "Finish Me.vcf"
        data = clear.read_bytes()
        assert flag_lines(data) == [FLAG_LINE]
        clear.write_bytes(re.sub(rb"X-CONTACTFS-FOLLOWUP[^\r\n]*\r\n( [^\r\n]*\r\n)*", b"",
                                 data))
        data = finish.read_bytes()
        finish.write_bytes(unfold(data).replace(
            ":flagged", ';COMPLETED="2026-05-02T10:00:00 ' + TZ + '":complete').encode())
        m.wait_synced()
        # Every date named, null where the file has none: nothing is left over.
        assert contact_named(emu, "Clear Me")["flag"] == {"flagStatus": "notFlagged"}
        got = contact_named(emu, "Finish Me")["flag"]
        assert got["flagStatus"] == "complete"
        assert got["completedDateTime"] == {"dateTime": "2026-05-02T10:00:00.0000000",
                                            "timeZone": TZ}
        assert got["startDateTime"] == {"dateTime": "2026-05-01T09:00:00.0000000",
                                        "timeZone": TZ}
        m.wait_rounds(1)
        assert flag_lines(clear.read_bytes()) == []
        assert "complete" in flag_lines(finish.read_bytes())[0]


def test_the_flag_follows_a_contact_moved_to_another_folder(tmp_path):
    s = seed(tmp_path, [person("Move", "Along", flag=FLAG)], [{"displayName": "Work"}])
    with Emulator("--seed", str(s)) as emu, Mount(emu, tmp_path, poll=1, followup=True) as m:
        m.wait_synced()
        os.rename(m.root / "Move Along.vcf", m.root / "Work" / "Move Along.vcf")
        m.wait_synced()
        moved = contact_named(emu, "Move Along")
        folders = {f["id"]: f["displayName"] for f in mailbox(emu)["folders"]}
        assert folders[moved["parentFolderId"]] == "Work"
        # Graph has no move: the copy made in Work carries the flag again.
        assert moved["flag"]["flagStatus"] == "flagged"
        assert moved["flag"]["dueDateTime"] == {"dateTime": "2026-05-03T17:30:00.0000000",
                                                "timeZone": TZ}
        assert flag_lines((m.root / "Work" / "Move Along.vcf").read_bytes()) == [FLAG_LINE]


# ---- refusals ------------------------------------------------------------------------------

def test_due_without_start_is_refused_at_close_with_einval_and_says_why(tmp_path):
    s = seed(tmp_path, [person("Ada", "Lovelace")])
    with Emulator("--seed", str(s)) as emu, \
            Mount(emu, tmp_path, poll=1, followup=True,
                  expect_errors=[r"Ada Lovelace\.vcf: the follow-up flag"]) as m:
        m.wait_synced()
        path = m.root / "Ada Lovelace.vcf"
        emu.admin("POST", "requests/reset")
        bad = path.read_bytes().replace(
            b"END:VCARD", b'X-CONTACTFS-FOLLOWUP;DUE="2026-05-03T17:00 UTC":flagged\r\n'
                          b"NOTE:also edited\r\nEND:VCARD")
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        assert os.write(fd, bad) == len(bad)
        with pytest.raises(OSError) as e:
            os.close(fd)
        assert e.value.errno == errno.EINVAL
        line = next(l for l in m.errors().splitlines() if "Ada Lovelace.vcf" in l)
        assert "DUE without START" in line, line
        m.wait_rounds(2)
        # Nothing of the card was sent; the bytes stay as a local draft.
        writes = {r: n for r, n in emu.requests()["by_route"].items()
                  if r.split(" ", 1)[0] in ("POST", "PATCH", "PUT", "DELETE") and n}
        assert writes == {}, writes
        assert path.read_bytes() == bad
        assert "flag" not in contact_named(emu, "Ada Lovelace")


@pytest.mark.parametrize("how", ["knob 403", "invalid date 400"])
def test_a_beta_refusal_logs_an_error_keeps_the_rest_of_the_card_and_the_bytes(tmp_path, how):
    s = seed(tmp_path, [person("Ada", "Lovelace")])
    with Emulator("--seed", str(s)) as emu, \
            Mount(emu, tmp_path, poll=1, followup=True,
                  expect_errors=[r"Ada Lovelace\.vcf: Outlook refused its follow-up flag"]) as m:
        m.wait_synced()
        path = m.root / "Ada Lovelace.vcf"
        if how == "knob 403":
            emu.faults({"beta_patch_error": 403})
            flag = 'X-CONTACTFS-FOLLOWUP;START="2026-05-01T09:00 UTC":flagged'
        else:
            flag = 'X-CONTACTFS-FOLLOWUP;START="2026-02-30T09:00 UTC":flagged'
        edited = path.read_bytes().replace(
            b"END:VCARD", b"NOTE:call back about the flag\r\n" + flag.encode() + b"\r\nEND:VCARD")
        path.write_bytes(edited)
        wait_until(lambda: "Outlook refused its follow-up flag" in m.errors(), timeout=30,
                   what="the refusal in .contactfs/errors")
        line = next(l for l in m.errors().splitlines() if "refused its follow-up flag" in l)
        assert "Ada Lovelace.vcf" in line and ("403" in line or "400" in line), line
        assert "the rest of the card is on the server" in line, line
        # The rest of the card is on the server; the flag is not; the file
        # keeps what was written.
        ada = contact_named(emu, "Ada Lovelace")
        assert ada["personalNotes"] == "call back about the flag"
        assert "flag" not in ada
        m.wait_rounds(2)
        assert path.read_bytes() == edited
        # The refused flag holds nothing else back: another edit goes.
        edited = edited.replace(b"call back about the flag", b"called back")
        path.write_bytes(edited)
        wait_until(lambda: contact_named(emu, "Ada Lovelace")["personalNotes"] == "called back",
                   timeout=20, what="the next edit on the server despite the refused flag")
        assert path.read_bytes() == edited
        # Fixed and saved again, it goes.
        emu.faults({"beta_patch_error": None})
        fixed = edited.replace(b"2026-02-30", b"2026-03-02")
        path.write_bytes(fixed)
        m.wait_synced()
        assert contact_named(emu, "Ada Lovelace")["flag"]["flagStatus"] == "flagged"
        assert path.read_bytes() == fixed


def test_a_flag_fixed_while_its_refused_patch_is_in_flight_still_goes(tmp_path):
    """The flag's PATCH was planned from the bad file and is on its way when
    the user saves the fix: the refusal that comes back must not park the
    entry in front of the fixed one (the fix and every later edit of the card
    would wait behind it until the parked entry's retry, ten minutes)."""
    s = seed(tmp_path, [person("Ada", "Lovelace")])
    with Emulator("--seed", str(s)) as emu, \
            Mount(emu, tmp_path, poll=1, followup=True,
                  expect_errors=[r"Ada Lovelace\.vcf: Outlook refused its follow-up flag"]) as m:
        m.wait_synced()
        path = m.root / "Ada Lovelace.vcf"
        bad = path.read_bytes().replace(
            b"END:VCARD", b'X-CONTACTFS-FOLLOWUP;START="2026-02-30T09:00 UTC":flagged\r\nEND:VCARD')
        emu.faults({"latency_ms": 1500})
        emu.admin("POST", "requests/reset")
        path.write_bytes(bad)
        wait_until(lambda: beta_routes(emu), timeout=30, what="the flag's PATCH on its way")
        fixed = bad.replace(b"2026-02-30", b"2026-03-02").replace(
            b"END:VCARD", b"NOTE:fixed\r\nEND:VCARD")
        path.write_bytes(fixed)
        emu.faults({"latency_ms": 0})
        wait_until(lambda: "Outlook refused its follow-up flag" in m.errors(), timeout=30,
                   what="the refusal of the PATCH in flight")
        m.wait_synced(timeout=30)
        ada = contact_named(emu, "Ada Lovelace")
        assert ada["flag"]["flagStatus"] == "flagged"
        assert ada["flag"]["startDateTime"]["dateTime"].startswith("2026-03-02")
        assert ada["personalNotes"] == "fixed"
        assert m.status()["parked changes"].startswith("0"), m.status()
        assert path.read_bytes() == fixed


# ---- the option off --------------------------------------------------------------------------

def test_without_the_option_nothing_touches_beta_and_the_property_is_kept_as_unknown(tmp_path):
    s = seed(tmp_path, [person("Ada", "Lovelace"), person("Flag", "Ged", flag=FLAG)],
             [{"displayName": "Work"}])
    prop = 'X-CONTACTFS-FOLLOWUP;START="2026-05-01T09:00 UTC":flagged'
    with Emulator("--seed", str(s)) as emu:
        with Mount(emu, tmp_path, poll=1) as m:
            m.wait_synced()
            # The server's flag is not shown.
            assert flag_lines((m.root / "Flag Ged.vcf").read_bytes()) == []
            new = card("Grace Hopper", "urn:uuid:grace", prop)
            (m.root / "Grace Hopper.vcf").write_bytes(new)
            ada = m.root / "Ada Lovelace.vcf"
            edited = ada.read_bytes().replace(b"END:VCARD", prop.encode() + b"\r\nEND:VCARD")
            ada.write_bytes(edited)
            flagged = m.root / "Flag Ged.vcf"
            flagged.write_bytes(flagged.read_bytes().replace(
                b"END:VCARD", b"NOTE:edited\r\nEND:VCARD"))
            m.wait_synced()
            os.rename(m.root / "Grace Hopper.vcf", m.root / "Work" / "Grace Hopper.vcf")
            m.wait_synced()
            os.unlink(flagged)
            m.wait_synced()
            m.wait_rounds(2)
            by_route = emu.requests()["by_route"]
            assert not [r for r in by_route if "beta" in r], by_route
            # Kept losslessly, as any unknown property: in the extension.
            for name in ("Grace Hopper", "Ada Lovelace"):
                c = contact_named(emu, name)
                assert "flag" not in c, c
                extra = [e.get("extra", "") for e in c.get("extensions", [])]
                assert any("X-CONTACTFS-FOLLOWUP;START=" in x for x in extra), c
            assert (m.root / "Work" / "Grace Hopper.vcf").read_bytes() == new
            assert ada.read_bytes() == edited
        # Read again from the server (a new cache): the property comes back.
        shutil.rmtree(tmp_path / "cache")
        with Mount(emu, tmp_path, poll=1) as m:
            m.wait_synced()
            for p in (m.root / "Work" / "Grace Hopper.vcf", m.root / "Ada Lovelace.vcf"):
                assert flag_lines(p.read_bytes()) == [prop], p
            assert not [r for r in emu.requests()["by_route"] if "beta" in r]


def test_followup_needs_a_graph_url_with_a_beta_sibling(tmp_path):
    from conftest import contactfs_bin
    from mount_proc import mount_options
    import subprocess
    with Emulator() as emu:
        (tmp_path / "mnt").mkdir()
        opts = mount_options(emu, graph_url=emu.url + "/graph", followup=True,
                             cache_dir=str(tmp_path / "cache"))
        r = subprocess.run([str(contactfs_bin()), "-f", "-o", opts, str(tmp_path / "mnt")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert r.returncode == 64, r
        assert b"-o followup needs graph_url to end in /v1.0" in r.stderr, r.stderr
