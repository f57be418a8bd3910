"""-o user=UPN: a mailbox someone shared or delegated to you (docs/design.md §13).

The emulator answers /users/{upn}/... for any mailbox it holds; a mailbox
seeded "readonly" refuses every write with 403 ErrorAccessDenied, as Graph
does for a read-only grant. Each test mounts for real.
"""
import errno
import os
import subprocess

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, server_contacts, vcf_files
from test_mount_sync import write_seed

ME = "me@contoso.example"
GARTH = "garth@contoso.example"   # shares his contacts read-only
ALEX = "alex@contoso.example"     # has delegated hers with write access


def person(given, surname, email, **more):
    c = {"givenName": given, "surname": surname, "displayName": "%s %s" % (given, surname),
         "emailAddresses": [{"address": email, "name": "%s %s" % (given, surname)}]}
    c.update(more)
    return c


def seed(tmp_path, garth_readonly=True):
    return write_seed(tmp_path, {"mailboxes": {
        ME: {"contacts": [person("Mine", "Only", "mine@example.org")]},
        GARTH: {"readonly": garth_readonly,
                "contacts": [person("Gina", "Garth", "gina@example.org",
                                    personalNotes="from Garth's book")],
                "folders": [{"displayName": "Suppliers",
                             "contacts": [person("Sam", "Supply", "sam@example.org")]}]},
        ALEX: {"contacts": [person("Ada", "Alex", "ada@example.org")]},
    }})


def edit_and_fsync(path, old, new):
    """Rewrite path in place with old replaced by new; fsync; return the
    fsync error (or None) after closing."""
    data = path.read_bytes().replace(old, new)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    err = None
    try:
        os.write(fd, data)
        try:
            os.fsync(fd)
        except OSError as e:
            err = e
    finally:
        os.close(fd)
    return data, err


def test_user_mounts_the_shared_mailbox_and_nothing_of_ones_own(tmp_path):
    with Emulator("--seed", str(seed(tmp_path))) as emu, \
            Mount(emu, tmp_path, user=GARTH) as m:
        m.wait_synced()
        files = vcf_files(m.root)
        assert sorted(files) == ["Gina Garth.vcf", "Suppliers/Sam Supply.vcf"], sorted(files)
        assert b"from Garth's book" in (m.root / "Gina Garth.vcf").read_bytes()
        s = m.status()
        assert s["mailbox"] == GARTH, s
        # The cache of one mailbox is not the cache of another.
        out = subprocess.run(["ls", "-lR", str(m.root)], stdout=subprocess.PIPE, check=True)
        assert b"Mine Only" not in out.stdout


def test_a_write_to_a_read_only_share_fails_with_eacces_and_keeps_the_bytes(tmp_path):
    refused = [r"ErrorAccessDenied|403|refused"]
    with Emulator("--seed", str(seed(tmp_path))) as emu:
        with Mount(emu, tmp_path, user=GARTH, expect_errors=refused) as m:
            m.wait_synced()
            before = {c["id"]: c["changeKey"] for c in server_contacts(emu, GARTH)}
            p = m.root / "Gina Garth.vcf"
            data, err = edit_and_fsync(p, b"from Garth's book", b"my own note")
            assert err is not None and err.errno == errno.EACCES, err
            # Nothing lost locally: the file shows what was written, and
            # the refusal is in the status and in the errors.
            assert p.read_bytes() == data
            s = m.status()
            assert s["parked changes"].startswith("1"), s
            errors = (m.root / ".contactfs" / "errors").read_text()
            assert "Gina Garth.vcf" in errors, errors
            assert "403" in errors or "denied" in errors.lower(), errors
            # A new contact in the share is refused the same way and kept.
            q = m.root / "Suppliers" / "New Supplier.vcf"
            card = ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:new-supplier-1\r\nFN:New Supplier\r\n"
                    "N:Supplier;New;;;\r\nEND:VCARD\r\n").encode()
            fd = os.open(q, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, card)
                with pytest.raises(OSError) as e:
                    os.fsync(fd)
                assert e.value.errno == errno.EACCES
            finally:
                os.close(fd)
            assert q.read_bytes() == card
            assert m.status()["parked changes"].startswith("2"), m.status()
            # The server is as it was, and one's own mailbox untouched.
            after = {c["id"]: c["changeKey"] for c in server_contacts(emu, GARTH)}
            assert after == before
            assert [c["displayName"] for c in server_contacts(emu, ME)] == ["Mine Only"]
        # Mounted again: both changes still there, still refused, still kept.
        with Mount(emu, tmp_path, user=GARTH, expect_errors=refused) as m:
            m.wait_synced()
            assert (m.root / "Gina Garth.vcf").read_bytes() == data
            assert (m.root / "Suppliers" / "New Supplier.vcf").read_bytes() == card
            assert {c["id"]: c["changeKey"] for c in server_contacts(emu, GARTH)} == before


def test_a_delegated_mailbox_with_write_access_takes_the_changes(tmp_path):
    with Emulator("--seed", str(seed(tmp_path))) as emu, \
            Mount(emu, tmp_path, user=ALEX) as m:
        m.wait_synced()
        p = m.root / "Ada Alex.vcf"
        data, err = edit_and_fsync(p, b"END:VCARD", b"NOTE:written by a delegate\r\nEND:VCARD")
        assert err is None, err
        (ada,) = server_contacts(emu, ALEX)
        assert ada["personalNotes"] == "written by a delegate"
        assert [c["displayName"] for c in server_contacts(emu, ME)] == ["Mine Only"]
        assert all("personalNotes" not in c or c["personalNotes"] != "written by a delegate"
                   for c in server_contacts(emu, GARTH))
        assert mailbox(emu, ALEX)["contacts"][0]["id"] == ada["id"]
