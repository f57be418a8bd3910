""".contactfs/categories and .contactfs/people/ never wait for the network
(issue 21): a look, a read or a write of them is answered from the stored
copy, and the sync thread asks the server. The emulator delays every Outlook
answer by seconds (latency_ms); each call must return in a fraction of that.
Each test mounts for real.

The one timing assertion of this suite: the injected delay is 3 s, a call
answered from the cache takes milliseconds, and the limit is half the delay.
(Before issue 21, a look at categories with the server out of reach took
the client's retries: about 50 s.)"""
import os
import time

import pytest

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, need_fuse, wait_until
from test_mount_sync import TcpProxy, Via, graph, write_seed

ME = "me@contoso.example"
LATENCY_MS = 3000
QUICK_S = LATENCY_MS / 1000 / 2


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


def seeded(tmp_path):
    def contact(given, surname, email):
        return {"givenName": given, "surname": surname,
                "displayName": "%s %s" % (given, surname),
                "emailAddresses": [{"address": email}]}
    return write_seed(tmp_path, {"mailboxes": {ME: {
        "categories": [{"displayName": "Family", "color": "preset5"},
                       {"displayName": "Work", "color": "preset7"}],
        "contacts": [contact("Ada", "Lovelace", "ada@example.org"),
                     contact("Grace", "Hopper", "grace@example.org")]}}})


def quick(what, call):
    """call(), which must return well within the server's delay (or at once
    when the server cannot be reached)."""
    start = time.monotonic()
    out = call()
    took = time.monotonic() - start
    assert took < QUICK_S, "%s took %.2f s: it waited for the server" % (what, took)
    return out


def listed(text):
    return {line.rsplit(":", 1)[0].strip(): line.rsplit(":", 1)[1].strip()
            for line in text.splitlines() if line and not line.startswith("#")}


def server_list(emu):
    return {c["displayName"]: c["color"] for c in mailbox(emu, ME)["categories"]}


@pytest.mark.parametrize("args", [(), ("-s",)], ids=["threads", "single-threaded"])
def test_categories_and_people_are_served_from_the_stored_copy_while_the_server_is_slow(
        tmp_path, args):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, \
            Mount(emu, tmp_path, poll=1, extra_args=args) as m:
        # The first round reads both lists: nothing was opened yet.
        m.wait_synced()
        ctl = m.root / ".contactfs"
        cats, people = ctl / "categories", ctl / "people"
        # Changed on the server, and the stored copies older than poll: a
        # look asks the server again, but does not wait for its answer.
        graph(emu, "POST", "/outlook/masterCategories",
              {"displayName": "Remote", "color": "preset0"})
        graph(emu, "POST", "/contacts", {"givenName": "New", "surname": "Comer",
                                         "displayName": "New Comer",
                                         "emailAddresses": [{"address": "new@example.org"}]})
        time.sleep(1.5)
        emu.faults({"latency_ms": LATENCY_MS})

        assert "categories" in quick("ls .contactfs", lambda: os.listdir(ctl))
        quick("stat categories", lambda: os.stat(cats))
        assert listed(quick("cat categories", cats.read_text)) == {"Family": "Teal",
                                                                   "Work": "Blue"}
        names = quick("ls people/", lambda: sorted(os.listdir(people)))
        assert len(names) == 5 and not [n for n in names if "New Comer" in n], names
        card = quick("cat a person", (people / names[0]).read_bytes)
        assert card.startswith(b"BEGIN:VCARD") and b"END:VCARD" in card

        # The sync thread brings the server's lists in afterwards; every
        # look meanwhile is as quick.
        wait_until(lambda: "Remote" in listed(quick("cat categories", cats.read_text)),
                   timeout=120, interval=0.5, what="the category made on the server")
        wait_until(lambda: [n for n in quick("ls people/", lambda: os.listdir(people))
                            if n.endswith(" New Comer.vcf")],
                   timeout=120, interval=0.5, what="the new person in people/")
        emu.faults({"latency_ms": 0})


def test_a_write_to_categories_returns_at_once_and_goes_out_afterwards(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path, poll=1) as m:
        m.wait_synced()
        cats = m.root / ".contactfs" / "categories"
        text = cats.read_text()
        # Made on the server after the file was read: the write does not
        # know it, so it does not remove it either.
        graph(emu, "POST", "/outlook/masterCategories",
              {"displayName": "Remote", "color": "preset0"})
        emu.faults({"latency_ms": LATENCY_MS})

        def write():
            with open(cats, "w") as f:
                f.write(text.replace("Work: Blue", "Work: Green") + "Added Here: Red\n")
        quick("writing categories", write)
        # Read back at once: what was written, not yet what the server says.
        assert listed(quick("cat categories", cats.read_text)) == {
            "Family": "Teal", "Work": "Green", "Added Here": "Red"}
        assert not m.status()["pending changes"].startswith("0"), m.status()
        wait_until(lambda: server_list(emu) == {"Family": "preset5", "Work": "preset4",
                                                "Added Here": "preset0", "Remote": "preset0"},
                   timeout=120, interval=0.5, what="the written changes on the server")
        emu.faults({"latency_ms": 0})
        m.wait_synced()
        wait_until(lambda: listed(cats.read_text()) == {
            "Family": "Teal", "Work": "Green", "Added Here": "Red", "Remote": "Red"},
            timeout=30, what="the server's list in the file")


def test_before_the_first_answer_the_file_says_so_and_a_write_only_adds(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu:
        proxy = TcpProxy(emu.url).start()
        proxy.stop()    # a new cache, and the server out of reach
        try:
            with Mount(Via(emu, proxy), tmp_path, poll=1) as m:
                cats = m.root / ".contactfs" / "categories"
                text = quick("cat categories", cats.read_text)
                assert "Not read from the server yet" in text and listed(text) == {}, text
                assert quick("ls people/", lambda: os.listdir(m.root / ".contactfs" / "people")) \
                    == []
                # What the writer never saw is not removed: the lines are added.
                quick("writing categories",
                      lambda: cats.write_text(text + "Travel: Green\nWork: Red\n"))
                assert m.status()["pending changes"].startswith("2"), m.status()
                proxy.start()   # the same port
                wait_until(lambda: server_list(emu) == {"Family": "preset5", "Work": "preset0",
                                                        "Travel": "preset4"},
                           timeout=60, what="the lines added on the server")
                m.wait_synced()
                wait_until(lambda: listed(cats.read_text()) == {
                    "Family": "Teal", "Work": "Red", "Travel": "Green"},
                    timeout=30, what="the server's list in the file")
                assert "Not read" not in cats.read_text()
                wait_until(lambda: len(os.listdir(m.root / ".contactfs" / "people")) == 5,
                           timeout=30, what="the people once the server answers")
        finally:
            if not proxy.stopping:
                proxy.stop()
