"""Which contacts have a photo, without asking each: Outlook's PidLidHasPicture
listed per folder (docs/graph.md, "Reading contacts"), a sample of the others
probed, and every photo probed when the server refuses the list or the sample
finds a photo the flag does not show. A photo is never missed. Every test
mounts for real against the emulator (or runs contactfs export)."""
import base64
import json
import os
import subprocess

import pytest

from conftest import contactfs_bin
from emulator_proc import Emulator
from mount_proc import Mount, mailbox, need_fuse, vcf_files, wait_until
from test_export import expected_uid

ME = "me@contoso.example"
SAMPLE = 20  # CACHE_PHOTO_SAMPLE


def share(folders):
    """A folder's part of the sample (cache_photo_sample)."""
    return -(-SAMPLE // folders)


def photo_gets(emu):
    """Photo requests, top-level and $batch items, of every folder."""
    routes = emu.requests()["by_route"]
    return sum(n for r, n in routes.items() if r.startswith("GET ") and r.endswith("/photo/$value"))


def uids_with_photo(root):
    """UID of every file under root -> whether it shows a PHOTO."""
    out = {}
    for rel in vcf_files(root):
        try:
            text = (root / rel).read_text()
        except FileNotFoundError:  # renamed meanwhile (its name follows its fields)
            continue
        uid = next(line[4:] for line in text.splitlines() if line.startswith("UID:"))
        out[uid] = "\nPHOTO" in text
    return out


def server_photos(emu):
    """UID a file of each server contact shows -> whether it has a photo."""
    return {expected_uid(c): bool(c["photo"]) for c in mailbox(emu)["contacts"]}


def photos_checked(m):
    wait_until(lambda: "photos still to check" not in
               (m.root / ".contactfs" / "status").read_text(), timeout=120, what="photos")


def seed_file(tmp_path, contacts):
    p = tmp_path / "seed.json"
    p.write_text(json.dumps({"seed": 3, "mailboxes": {ME: {"contacts": contacts}}}))
    return p


def jpeg_b64(n):
    import sys
    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "graph_emulator")))
    import generator
    return base64.b64encode(generator.sample_jpeg(n)).decode()


def half_unflagged():
    """60 contacts: 10 with a photo the flag shows, 25 with one it does not
    (has_picture null, as a client that does not set it leaves it), 25
    without. A sample of 20 of the 50 the flag calls photo-less misses all
    25 with a chance of C(25,20)/C(50,20), about 1e-9."""
    contacts = []
    for n in range(60):
        c = {"givenName": "Person", "surname": "N%02d" % n}
        if n < 35:
            c["photo_base64"] = jpeg_b64(n)
            if n >= 10:
                c["has_picture"] = None
        contacts.append(c)
    return contacts


@pytest.fixture
def fuse():
    need_fuse()


def test_a_first_sync_fetches_the_flagged_photos_and_a_sample_and_nothing_else(tmp_path, fuse):
    """300 contacts in three folders (150, 75, 75), 30 with a photo: per
    folder one list of the contacts the flag marks (beside the extension
    list, on the same route), then the 30 photos and a sample of 7 others
    of each folder (20 shared out, rounded up), in 3 $batch requests; every
    photo is in its file and no other file has one."""
    with Emulator("--contacts", "300", "--folders", "2", "--photos", "30") as emu, \
            Mount(emu, tmp_path) as m:
        m.wait_synced()
        photos_checked(m)
        assert uids_with_photo(m.root) == server_photos(emu)
        assert sum(server_photos(emu).values()) == 30
        routes = emu.requests()["by_route"]
        assert photo_gets(emu) == 30 + 3 * share(3), routes
        assert routes["POST /$batch"] == 3, routes
        # Per folder: extensions before and after its read, flags.
        assert routes["GET /me/contacts"] == 3, routes
        assert routes["GET /me/contactFolders/{id}/contacts"] == 2 * 3, routes
        assert "probing every contact" not in m.log_text()


def test_a_folder_larger_than_a_marking_chunk_has_every_photo_less_contact_marked(tmp_path, fuse):
    """2,500 contacts in the default folder, 10 with a photo: the contacts the
    flag calls photo-less are marked a thousand to a transaction (a folder
    marked in one held all its pages in memory); every chunk is marked, so
    only the 10 photos and the sample are fetched, not the contacts past
    the first chunk."""
    with Emulator("--contacts", "2500", "--folders", "0", "--photos", "10") as emu, \
            Mount(emu, tmp_path) as m:
        m.wait_synced(timeout=120)
        photos_checked(m)
        assert sum(server_photos(emu).values()) == 10
        assert uids_with_photo(m.root) == server_photos(emu)
        assert photo_gets(emu) == 10 + share(1), emu.requests()["by_route"]


def test_photos_that_carry_no_flag_are_all_found_through_the_sample(tmp_path, fuse):
    """A client that does not set the flag (half_unflagged): the sample
    finds a photo the flag does not show, and every contact is probed."""
    contacts = half_unflagged()
    with Emulator("--seed", str(seed_file(tmp_path, contacts))) as emu, \
            Mount(emu, tmp_path) as m:
        m.wait_synced()
        photos_checked(m)
        assert uids_with_photo(m.root) == server_photos(emu)
        assert sum(server_photos(emu).values()) == 35
        assert "has a photo that its PidLidHasPicture does not show" in m.log_text()
        assert photo_gets(emu) == 60


@pytest.mark.parametrize("status", [400, 501])
def test_a_refused_flag_list_falls_back_to_probing_every_photo_once_a_mount(tmp_path, fuse, status):
    with Emulator("--contacts", "60", "--folders", "2", "--photos", "10") as emu:
        emu.faults({"has_picture_filter_error": status})
        with Mount(emu, tmp_path, poll=1) as m:
            m.wait_synced()
            photos_checked(m)
            assert uids_with_photo(m.root) == server_photos(emu)
            routes = emu.requests()["by_route"]
            assert photo_gets(emu) == 60
            # The first round reads its folders side by side: those already
            # asking when the first refusal came ask too (one list each, 6
            # extension lists beside them, two a folder); none asks after
            # it, this mount.
            lists = routes["GET /me/contacts"] + routes["GET /me/contactFolders/{id}/contacts"]
            assert 6 + 1 <= lists <= 6 + 3, routes
            m.wait_rounds(2)
            routes = emu.requests()["by_route"]
            assert routes["GET /me/contacts"] + \
                routes["GET /me/contactFolders/{id}/contacts"] == lists, routes
        assert m.log_text().count("does not list contacts by PidLidHasPicture") == 1


def test_a_delta_round_probes_a_changed_contact_only_when_its_flag_or_stored_photo_says_so(
        tmp_path, fuse):
    """Three contacts change on the server: one gains a photo (flag true),
    one loses its photo in Outlook (flag false, a photo was stored), one
    has only its name changed (no photo, flag not true): two probes, and
    the third is not asked about."""
    with Emulator("--contacts", "30", "--photos", "5") as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        photos_checked(m)
        box = mailbox(emu)
        with_photo = [c for c in box["contacts"] if c["photo"]]
        without = [c for c in box["contacts"] if not c["photo"]]
        gains, renamed, loses = without[0], without[1], with_photo[0]
        token = emu.token
        import urllib.request

        def call(method, path, body, ctype):
            req = urllib.request.Request(emu.url + "/v1.0" + path, data=body, method=method,
                                         headers={"Authorization": "Bearer " + token,
                                                  "Content-Type": ctype})
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        call("PUT", "/me/contacts/%s/photo/$value" % gains["id"],
             base64.b64decode(jpeg_b64(99)), "image/jpeg")
        call("PATCH", "/me/contacts/%s" % renamed["id"],
             json.dumps({"displayName": "Renamed Person", "givenName": "Renamed"}).encode(),
             "application/json")
        emu.admin("POST", "remove_photo", {"contactId": loses["id"]})
        emu.admin("POST", "requests/reset")
        wait_until(lambda: uids_with_photo(m.root).get(expected_uid(gains)) is True and
                   uids_with_photo(m.root).get(expected_uid(loses)) is False, timeout=60,
                   what="the photo changes")
        m.wait_rounds(1)
        photos_checked(m)
        assert uids_with_photo(m.root) == server_photos(emu)
        assert photo_gets(emu) == 2, emu.requests()["by_route"]


def card_with_photo(fn, uid, n):
    lines = ["BEGIN:VCARD", "VERSION:3.0", "FN:" + fn, "N:%s;%s;;;" % (fn.split()[-1], fn.split()[0]),
             "UID:" + uid, "PHOTO;ENCODING=b;TYPE=JPEG:" + jpeg_b64(n), "END:VCARD"]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_a_photo_written_here_stays_when_the_server_does_not_set_the_flag(tmp_path, fuse):
    """Our own PUT means the contact has a photo, whatever the flag says
    afterwards: a stored photo is always checked by probing, never dropped
    on the flag's word, in this mount and the next."""
    with Emulator("--contacts", "25") as emu:
        emu.faults({"photo_sets_has_picture": False})
        with Mount(emu, tmp_path, poll=1) as m:
            m.wait_synced()
            (m.root / "Photo Person.vcf").write_bytes(
                card_with_photo("Photo Person", "urn:uuid:photo-person", 7))
            m.wait_synced()
            wait_until(lambda: any(c["photo"] for c in mailbox(emu)["contacts"]), timeout=60,
                       what="the photo upload")
            m.wait_rounds(2)
            photos_checked(m)
            assert "\nPHOTO" in (m.root / "Photo Person.vcf").read_text()
        assert all(not c["hasPicture"] for c in mailbox(emu)["contacts"])
        with Mount(emu, tmp_path, poll=1) as m:
            m.wait_rounds(2)
            photos_checked(m)
            assert "\nPHOTO" in (m.root / "Photo Person.vcf").read_text()


def export(emu, dest):
    opts = "graph_url={0}/v1.0,auth_url={0},token_cmd=echo {1}".format(emu.url, emu.token)
    return subprocess.run([str(contactfs_bin()), "export", "-o", opts, str(dest)],
                          capture_output=True, timeout=900)


def exported_photos(root):
    return uids_with_photo(root)


def test_export_fetches_the_flagged_photos_and_a_sample_and_nothing_else(tmp_path):
    with Emulator("--contacts", "300", "--folders", "2", "--photos", "30") as emu:
        r = export(emu, tmp_path / "out")
        assert r.returncode == 0, r.stderr
        assert exported_photos(tmp_path / "out") == server_photos(emu)
        routes = emu.requests()["by_route"]
        # A sample of each folder's contacts the flag calls photo-less, as
        # for a mount.
        assert photo_gets(emu) == 30 + 3 * share(3), routes
        assert routes["GET /me/contacts"] == 2, routes
        assert routes["GET /me/contactFolders/{id}/contacts"] == 2 * 2, routes


def test_export_finds_photos_that_carry_no_flag(tmp_path):
    contacts = half_unflagged()
    with Emulator("--seed", str(seed_file(tmp_path, contacts))) as emu:
        r = export(emu, tmp_path / "out")
        assert r.returncode == 0, r.stderr
        assert exported_photos(tmp_path / "out") == server_photos(emu)
        assert b"PidLidHasPicture does not show" in r.stderr


@pytest.mark.parametrize("status", [400, 501])
def test_export_falls_back_to_probing_when_the_flag_list_is_refused(tmp_path, status):
    with Emulator("--contacts", "60", "--folders", "2", "--photos", "10") as emu:
        emu.faults({"has_picture_filter_error": status})
        r = export(emu, tmp_path / "out")
        assert r.returncode == 0, r.stderr
        assert exported_photos(tmp_path / "out") == server_photos(emu)
        routes = emu.requests()["by_route"]
        assert photo_gets(emu) == 60
        # Folders are read in parallel: those already asking when the first
        # refusal came ask too; none asks after it. Told once.
        lists = routes["GET /me/contacts"] + routes["GET /me/contactFolders/{id}/contacts"]
        assert 3 + 1 <= lists <= 3 + 3, routes
        assert r.stderr.count(b"does not list contacts by PidLidHasPicture") == 1


def test_export_reads_again_the_folders_it_wrote_on_the_flags_word_when_a_sample_shows_it_wrong(
        tmp_path):
    """The default folder: 200 contacts without a photo and one whose photo
    carries no flag, which its own share of the sample (10) almost surely
    misses; "Phone": 10 contacts whose photos carry no flag, which its
    share finds. Whichever folder is read first, the export has every
    photo."""
    default = [{"givenName": "Plain", "surname": "P%03d" % n} for n in range(200)]
    default.append({"givenName": "Hidden", "surname": "Photo", "photo_base64": jpeg_b64(1),
                    "has_picture": None})
    phone = [{"givenName": "Phone", "surname": "F%02d" % n, "photo_base64": jpeg_b64(n + 2),
              "has_picture": None} for n in range(10)]
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"seed": 5, "mailboxes": {ME: {
        "contacts": default, "folders": [{"displayName": "Phone", "contacts": phone}]}}}))
    with Emulator("--seed", str(seed)) as emu:
        r = export(emu, tmp_path / "out")
        assert r.returncode == 0, r.stderr
        got = exported_photos(tmp_path / "out")
        assert got == server_photos(emu)
        assert sum(got.values()) == 11
        assert r.stderr.count(b"PidLidHasPicture does not show") == 1
