""".contactfs/categories: the mailbox's master category list as a file
(docs/design.md §10). Each test mounts for real against the emulator and checks the
server's list, not only the file."""
import errno
import os
import subprocess
import time

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, server_contacts
from test_mount_sync import write_seed

ME = "me@contoso.example"


def seeded(tmp_path, contacts=()):
    return write_seed(tmp_path, {"mailboxes": {ME: {
        "categories": [{"displayName": "Family", "color": "preset5"},
                       {"displayName": "Work", "color": "preset7"},
                       {"displayName": "Plain", "color": "none"}],
        "contacts": list(contacts)}}})


def server_list(emu):
    return {c["displayName"]: (c["id"], c["color"]) for c in mailbox(emu, ME)["categories"]}


def listed(path):
    """The file's categories, comments aside."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, colour = line.rsplit(":", 1)
            out[name.strip()] = colour.strip()
    return out


def write_whole(path, text):
    """Write the file as a program that saves in place does; close's error
    (the verdict) is raised."""
    with open(path, "w") as f:
        f.write(text)


def test_the_file_shows_the_list_with_outlook_colour_names_and_is_the_owners_to_write(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        p = m.root / ".contactfs" / "categories"
        assert listed(p) == {"Family": "Teal", "Work": "Blue", "Plain": "None"}
        st = os.stat(p)
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.getuid()
        assert st.st_size == len(p.read_bytes())
        # Its mtime stays while its text does (an editor checks it).
        assert os.stat(p).st_mtime_ns == st.st_mtime_ns
        assert "categories" in os.listdir(m.root / ".contactfs")
        # The other .contactfs files stay read-only.
        with pytest.raises(PermissionError):
            open(m.root / ".contactfs" / "status", "w")


def test_adding_recolouring_and_removing_lines_reach_the_server(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        p = m.root / ".contactfs" / "categories"
        before = server_list(emu)
        # Appending a line (the shell's >>) creates a category.
        subprocess.run("echo 'Travel plans: Green' >> '%s'" % p, shell=True, check=True)
        m.wait_synced()
        assert server_list(emu)["Travel plans"][1] == "preset4"
        # Writing the file whole: Work recoloured (same id), Family gone,
        # comments, blank lines and the case of colour names do not matter.
        write_whole(p, "# mine\n\nWork: darkred\nPlain: None\nTravel plans: Green\n"
                       "Client: Alpha: preset9\n")
        m.wait_synced()
        now = server_list(emu)
        assert set(now) == {"Work", "Plain", "Travel plans", "Client: Alpha"}, now
        assert now["Work"] == (before["Work"][0], "preset15")
        assert now["Plain"] == before["Plain"]
        assert now["Client: Alpha"][1] == "preset9"
        assert listed(p) == {"Work": "DarkRed", "Plain": "None", "Travel plans": "Green",
                             "Client: Alpha": "Cranberry"}
        # vim, saving in place (it cannot make a backup in .contactfs).
        subprocess.run(["vim", "-N", "-u", "DEFAULTS", "-i", "NONE", "-n", "-es", "-c",
                        "%s/^Plain: None/Plain: Olive/", "-c", "wq", str(p)],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        m.wait_synced()
        assert server_list(emu)["Plain"] == (before["Plain"][0], "preset6")
        assert listed(p)["Plain"] == "Olive"
        # Only a comment left: every category goes.
        write_whole(p, "# none left\n")
        m.wait_synced()
        assert server_list(emu) == {}
        assert listed(p) == {}


@pytest.mark.parametrize("bad, line, why", [
    ("Family: Teal\nNo colour here\n", 2, "no colour"),
    ("Family: Mauve\n", 1, "not an Outlook colour"),
    ("Family: Teal\nfamily: Red\n", 2, "already on line 1"),
    (": Red\n", 1, "no name"),
    ("Bell\x07: Red\n", 1, "control character"),
    ("", 0, "written empty"),
])
def test_a_bad_line_fails_the_close_names_the_line_and_changes_nothing(tmp_path, bad, line, why):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, \
            Mount(emu, tmp_path, expect_errors=[r"categories: (line \d|the file)"]) as m:
        m.wait_synced()
        p = m.root / ".contactfs" / "categories"
        before, text = server_list(emu), p.read_text()
        with pytest.raises(OSError) as e:
            write_whole(p, bad)
        assert e.value.errno == errno.EINVAL
        errors = (m.root / ".contactfs" / "errors").read_text()
        assert ("categories: line %d: " % line if line else "categories: ") in errors, errors
        assert why in errors, errors
        m.wait_synced()
        assert server_list(emu) == before
        assert p.read_text() == text


def test_a_contact_may_name_a_category_not_in_the_list_as_in_outlook(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        (m.root / "Cat Person.vcf").write_bytes(
            b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:cat-person\r\nFN:Cat Person\r\n"
            b"N:Person;Cat;;;\r\nCATEGORIES:Work,Not Listed\r\nEND:VCARD\r\n")
        m.wait_synced()
        (c,) = [c for c in server_contacts(emu, ME) if c["displayName"] == "Cat Person"]
        assert c["categories"] == ["Work", "Not Listed"]
        # The list is not grown behind the user's back.
        assert set(server_list(emu)) == {"Family", "Work", "Plain"}
        assert "Not Listed" not in listed(m.root / ".contactfs" / "categories")


def test_a_category_made_on_the_server_shows_once_the_list_is_older_than_poll(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        p = m.root / ".contactfs" / "categories"
        assert "Remote" not in listed(p)
        emu.admin("POST", "reset", {"mailboxes": {ME: {
            "categories": [{"displayName": "Remote", "color": "preset0"}]}}})
        deadline = time.monotonic() + 10
        while "Remote" not in listed(p) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed(p) == {"Remote": "Red"}
