"""contactfs export against the Graph emulator: the vdir it writes holds the
mailbox contact for contact (folders as directories, nested as on the server,
one .vcf per contact with the server's values and photo), while the client
keeps the mailbox at 4 requests in flight and never retries before a
Retry-After has passed, even with faults on."""

import hashlib
import os
import subprocess

import pytest
import vobject

from conftest import contactfs_bin
from emulator_proc import Emulator


def export(emu, dest, *extra):
    opts = "graph_url={0}/v1.0,auth_url={0},token_cmd=echo {1}".format(emu.url, emu.token)
    return subprocess.run([str(contactfs_bin()), "export", "-o", opts, *extra, str(dest)],
                          capture_output=True, timeout=900)


def folder_dirs(state):
    """Folder id -> directory relative to the export root, by the
    emulator's tree (the default folder is the root)."""
    mb = next(iter(state["mailboxes"].values()))
    by_id = {f["id"]: f for f in mb["folders"]}
    default = mb["defaultFolderId"]

    def path(fid):
        if fid == default:
            return ""
        f = by_id[fid]
        parent = path(f["parentFolderId"])
        return os.path.join(parent, f["displayName"]) if parent else f["displayName"]

    return {fid: path(fid) for fid in by_id}, mb


def read_vdir(root):
    """(directory, UID) -> parsed vCard."""
    cards = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            assert name.endswith(".vcf"), name
            with open(os.path.join(dirpath, name), "rb") as f:
                data = f.read()
            assert data.endswith(b"END:VCARD\r\n")
            card = vobject.readOne(data.decode("utf-8"))
            rel = os.path.relpath(dirpath, root)
            cards[("" if rel == "." else rel, card.uid.value)] = card
            assert os.stat(os.path.join(dirpath, name)).st_mode & 0o077 == 0
    return cards


def expected_uid(contact):
    """The UID a file must carry: the original one kept in our extension,
    else the Graph id (docs/mapping.md)."""
    for ext in contact.get("extensions") or []:
        if ext.get("extensionName") == "org.contactfs.vcard" or \
                ext.get("id", "").endswith("org.contactfs.vcard"):
            if ext.get("uid"):
                return ext["uid"]
    return contact["id"]


def check_matches_state(root, state):
    dirs, mb = folder_dirs(state)
    cards = read_vdir(root)
    assert len(cards) == len(mb["contacts"])
    for c in mb["contacts"]:
        key = (dirs[c["parentFolderId"]], expected_uid(c))
        assert key in cards, "contact %s missing from %r" % (c["id"], key[0])
        card = cards[key]
        if c.get("displayName"):
            assert card.fn.value == c["displayName"]
        want = sorted(e["address"] for e in c.get("emailAddresses") or [])
        got = sorted(e.value for e in card.contents.get("email", []))
        assert got == want
        photo = c.get("photo")
        if photo:
            assert "photo" in card.contents, "photo of %s missing" % c["id"]
            data = card.photo.value
            assert hashlib.sha256(data).hexdigest() == photo["sha256"]
        else:
            assert "photo" not in card.contents


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_export_writes_every_contact_into_its_folder(tmp_path, version):
    with Emulator("--contacts", "120", "--folders", "6", "--photos", "15") as emu:
        r = export(emu, tmp_path / "out", "--vcard-version", version)
        assert r.returncode == 0, r.stderr.decode()
        if version == "3.0":
            check_matches_state(tmp_path / "out", emu.state())
        else:
            names = [n for _d, _s, fs in os.walk(tmp_path / "out") for n in fs]
            assert len(names) == 120
            with open(os.path.join(tmp_path / "out", sorted(
                    n for n in os.listdir(tmp_path / "out") if n.endswith(".vcf"))[0]), "rb") as f:
                assert f.read().startswith(b"BEGIN:VCARD\r\nVERSION:4.0\r\n")


def test_export_with_faults_matches_the_server_and_respects_the_limits(tmp_path):
    n = int(os.environ.get("CONTACTFS_EXPORT_CONTACTS", "400"))
    with Emulator("--contacts", str(n), "--folders", "8",
                                "--photos", str(n // 10), "--latency-ms", "20") as emu:
        emu.faults({"rate_429": 0.1, "retry_after": 1, "rate_503": 0.05, "rate_drop": 0.02})
        r = export(emu, tmp_path / "out")
        assert r.returncode == 0, r.stderr.decode()
        emu.faults({"rate_429": 0, "rate_503": 0, "rate_drop": 0})
        check_matches_state(tmp_path / "out", emu.state())
        stats = emu.requests()
        assert stats["max_in_flight"] <= 4
        assert stats["early_retries"] == 0, stats.get("early_details")
        assert stats["throttled"] > 0  # the faults really fired


def test_export_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with Emulator("--contacts", "3") as emu:
        r = export(emu, tmp_path / "out")
    assert r.returncode == 73
    assert b"not empty" in r.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_export_without_a_token_says_how_to_sign_in(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    with Emulator("--contacts", "3") as emu:
        opts = "graph_url={0}/v1.0,auth_url={0}".format(emu.url)
        r = subprocess.run([str(contactfs_bin()), "export", "-o", opts, str(tmp_path / "out")],
                           capture_output=True, timeout=60)
    assert r.returncode == 77
    assert b"contactfs login" in r.stderr
