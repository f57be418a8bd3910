"""A file of several vCards (an address book exported by Google, Apple,
Android or Evolution) dropped into a folder: every card becomes a contact of
that folder in a file of its own, the file of cards goes after the grace
period, and a second drop of the same file changes nothing. Each test mounts
for real and looks at the server, not only at the files."""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import TESTDATA
from emulator_proc import Emulator
from mount_proc import Mount, mailbox, need_fuse, server_contacts, vcf_files, wait_until
from test_mount_sync import write_seed

ME = "me@contoso.example"
VCARDS = TESTDATA / "vcards"
GMAIL = VCARDS / "ez-vcard" / "gmail-list.vcf"            # Google: 3 cards, no UID
ANDROID = VCARDS / "android-vcard" / "v21_multiple_entry.vcf"  # vCard 2.1, 3 cards
EVOLUTION = VCARDS / "syncevolution" / "eds_contact.vcf"  # 17 cards with UIDs
GMAIL_NAMES = ["Arnold Smith.vcf", "Chris Beatle.vcf", "Doug White.vcf"]
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()
    if not GMAIL.exists():
        pytest.skip("shared testdata absent")


def seeded(tmp_path, contacts=(), folders=()):
    return write_seed(tmp_path, {"mailboxes": {ME: {"contacts": list(contacts),
                                                    "folders": list(folders)}}})


def writes(emu):
    """Write requests the server has seen ($batch items counted one by one)."""
    by_route = emu.requests()["by_route"]
    return sum(n for r, n in by_route.items()
               if r.split(" ", 1)[0] in WRITES and not r.endswith("/$batch"))


def names_on_server(emu):
    return sorted(c["displayName"] for c in server_contacts(emu, ME))


def gone(path):
    return lambda: not os.path.lexists(path)


def test_cp_of_a_google_export_makes_one_contact_per_card_and_the_file_goes(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        dropped = m.root / "contacts.vcf"
        subprocess.run(["cp", str(GMAIL), str(dropped)], check=True)
        # Each card is a file of its own at once, named as any contact.
        assert sorted(set(vcf_files(m.root)) - {"contacts.vcf"}) == GMAIL_NAMES
        arnold = (m.root / "Arnold Smith.vcf").read_text()
        assert arnold.count("BEGIN:VCARD") == 1 and "asmithk@gmail.com" in arnold
        wait_until(gone(dropped), timeout=30, what="the file of cards to go")
        assert vcf_files(m.root) == GMAIL_NAMES
        m.wait_synced()
        wait_until(lambda: names_on_server(emu) == ["Arnold Smith", "Chris Beatle",
                                                    "Doug White"], what="3 contacts")
        # Cards without a UID got one derived from their text, kept on the
        # server in the contact's extension.
        uids = {p: [l for l in (m.root / p).read_text().splitlines() if l.startswith("UID:")]
                for p in GMAIL_NAMES}
        assert all(len(u) == 1 and u[0].startswith("UID:urn:uuid:") for u in uids.values())
        assert len({u[0] for u in uids.values()}) == 3
        st = m.status()
        assert st["pending changes"] == "0", st


@pytest.mark.parametrize("export,cards", [(GMAIL, 3), (ANDROID, 3), (EVOLUTION, 17)],
                         ids=["google", "android-2.1", "evolution"])
def test_a_second_drop_of_the_same_export_sends_nothing_and_duplicates_nothing(
        tmp_path, export, cards):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        shutil.copyfile(export, m.root / "export.vcf")
        wait_until(gone(m.root / "export.vcf"), what="the first drop to go")
        m.wait_synced()
        wait_until(lambda: len(server_contacts(emu, ME)) == cards, what="the contacts")
        ids = sorted(c["id"] for c in server_contacts(emu, ME))
        files = vcf_files(m.root)
        assert len(files) == cards
        before = writes(emu)
        mtimes = {p: os.stat(m.root / p).st_mtime_ns for p in files}
        # Again, under another name, with cp -p (times set after close).
        subprocess.run(["cp", "-p", str(export), str(m.root / "again.vcf")], check=True)
        wait_until(gone(m.root / "again.vcf"), what="the second drop to go")
        m.wait_synced()
        assert writes(emu) == before, emu.requests()["by_route"]
        assert sorted(c["id"] for c in server_contacts(emu, ME)) == ids
        assert vcf_files(m.root) == files
        assert {p: os.stat(m.root / p).st_mtime_ns for p in files} == mtimes


def test_a_card_whose_uid_the_folder_has_updates_that_contact(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        shutil.copyfile(EVOLUTION, m.root / "evolution.vcf")
        wait_until(gone(m.root / "evolution.vcf"), what="the file of cards to go")
        m.wait_synced()
        wait_until(lambda: len(server_contacts(emu, ME)) == 17, what="17 contacts")
        ids = sorted(c["id"] for c in server_contacts(emu, ME))
        # The same export with one note changed: that contact is updated,
        # nothing else is sent.
        text = EVOLUTION.read_text()
        note = "NOTE:triggers parser bug in Funambol 3.0"
        assert text.count(note) == 1
        changed = text.replace(note, "NOTE:changed by the second export")
        before = emu.requests()["by_route"]
        (m.root / "evolution2.vcf").write_text(changed)
        wait_until(gone(m.root / "evolution2.vcf"), what="the second file to go")
        m.wait_synced()
        after = emu.requests()["by_route"]
        sent = {r: after.get(r, 0) - before.get(r, 0) for r in after
                if r.split(" ", 1)[0] in WRITES and not r.endswith("/$batch")}
        assert {r: n for r, n in sent.items() if n} == {"PATCH /me/contacts/{id}": 1}, sent
        assert sorted(c["id"] for c in server_contacts(emu, ME)) == ids
        notes = [c for c in server_contacts(emu, ME)
                 if "changed by the second export" in (c.get("personalNotes") or "")]
        assert len(notes) == 1
        assert len(vcf_files(m.root)) == 17


def test_rsync_gio_and_tar_drop_an_export_into_a_folder(tmp_path):
    """rsync writes a hidden temporary file and renames it; gio copies;
    tar x writes then sets the times by name after closing."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(GMAIL, src / "google.vcf")
    shutil.copyfile(ANDROID, src / "android.vcf")
    with tarfile.open(tmp_path / "export.tar", "w") as t:
        t.add(EVOLUTION, arcname="evolution.vcf")
    folders = [{"displayName": n, "contacts": []} for n in ("Rsync", "Gio", "Tar")]
    with Emulator("--seed", str(seeded(tmp_path, folders=folders))) as emu, \
            Mount(emu, tmp_path) as m:
        m.wait_synced()
        subprocess.run(["rsync", "-a", str(src / "google.vcf"), str(m.root / "Rsync") + "/"],
                       check=True)
        if shutil.which("gio"):
            subprocess.run(["gio", "copy", str(src / "android.vcf"), str(m.root / "Gio")],
                           check=True)
        subprocess.run(["tar", "xf", str(tmp_path / "export.tar"), "-C", str(m.root / "Tar")],
                       check=True)
        for p in ("Rsync/google.vcf", "Gio/android.vcf", "Tar/evolution.vcf"):
            wait_until(gone(m.root / p), what="%s to go" % p)
        files = vcf_files(m.root)
        assert [f for f in files if f.startswith("Rsync/")] == ["Rsync/" + n for n in GMAIL_NAMES]
        assert len([f for f in files if f.startswith("Tar/")]) == 17
        if shutil.which("gio"):
            assert len([f for f in files if f.startswith("Gio/")]) == 3
        m.wait_synced()
        box = mailbox(emu, ME)
        by_folder = {}
        for c in server_contacts(emu, ME):
            by_folder.setdefault(c["parentFolderId"], []).append(c["displayName"])
        counts = sorted(len(v) for v in by_folder.values())
        assert counts == ([3, 3, 17] if shutil.which("gio") else [3, 17]), by_folder
        assert not any(n.startswith(".") for n in os.listdir(m.root / "Rsync"))
        assert box is not None


def test_an_export_with_a_broken_card_is_refused_whole_and_kept(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, \
            Mount(emu, tmp_path, expect_errors=[r"not a valid vCard"]) as m:
        m.wait_synced()
        text = GMAIL.read_text()
        broken = text.replace("FN:Chris Beatle\n", "FN:Chris Beatle\nthis line is no property\n")
        assert broken != text
        p = subprocess.run(["cp", "/dev/stdin", str(m.root / "broken.vcf")],
                           input=broken.encode(), capture_output=True)
        assert p.returncode != 0 and b"Invalid argument" in p.stderr, p
        assert "broken.vcf" in m.errors() and "line 10" in m.errors(), m.errors()
        # Nothing imported, the bytes kept as they were written.
        assert vcf_files(m.root) == ["broken.vcf"]
        assert (m.root / "broken.vcf").read_text() == broken
        m.wait_synced()
        assert server_contacts(emu, ME) == []


def test_an_export_written_over_a_contacts_file_is_refused_and_the_contact_stays(tmp_path):
    ada = {"displayName": "Ada Lovelace", "givenName": "Ada", "surname": "Lovelace",
           "emailAddresses": [{"address": "ada@example.org", "name": "Ada Lovelace"}]}
    with Emulator("--seed", str(seeded(tmp_path, [ada]))) as emu, \
            Mount(emu, tmp_path, expect_errors=[r"holds 3 cards"]) as m:
        m.wait_synced()
        p = subprocess.run(["cp", str(GMAIL), str(m.root / "Ada Lovelace.vcf")],
                           capture_output=True)
        assert p.returncode != 0 and b"Invalid argument" in p.stderr, p
        assert "holds 3 cards" in m.errors()
        m.wait_synced()
        assert names_on_server(emu) == ["Ada Lovelace"]
        assert vcf_files(m.root) == ["Ada Lovelace.vcf"]


def test_a_thousand_card_export_lands_once_each(tmp_path):
    cards = "".join("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person %04d\r\nN:%04d;Person;;;\r\n"
                    "EMAIL:p%04d@example.org\r\nEND:VCARD\r\n" % (i, i, i) for i in range(1000))
    (tmp_path / "big.vcf").write_text(cards)
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        shutil.copyfile(tmp_path / "big.vcf", m.root / "big.vcf")
        wait_until(gone(m.root / "big.vcf"), what="the file of cards to go")
        m.wait_synced(timeout=300)
        wait_until(lambda: len(server_contacts(emu, ME)) == 1000, timeout=300,
                   what="1000 contacts")
        names = names_on_server(emu)
        assert names == ["Person %04d" % i for i in range(1000)]
        assert len(vcf_files(m.root)) == 1000
        st = json.dumps(emu.requests()["by_route"])
        assert "DELETE" not in st, st


def test_fsync_of_a_file_of_cards_returns_when_every_card_is_on_the_server(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        emu.faults({"latency_ms": 200})   # the creates are not there at once
        fd = os.open(m.root / "export.vcf", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, GMAIL.read_bytes())
            os.fsync(fd)
            # No waiting here: fsync's return is the promise.
            assert names_on_server(emu) == ["Arnold Smith", "Chris Beatle", "Doug White"]
        finally:
            os.close(fd)
        emu.faults({"latency_ms": 0})
        wait_until(gone(m.root / "export.vcf"), what="the file of cards to go")
