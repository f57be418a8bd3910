""".contactfs/people/: the People API's most relevant people as read-only
vCards (docs/design.md §10). The emulator ranks the mailbox's contacts that have an
email address, plus three directory entries (Megan Bowen, Alex Wilber, the
group Marketing), by a relevance score. Each test mounts for real."""
import errno
import http.client
import http.server
import json
import os
import subprocess
import threading
import urllib.parse
import urllib.request

import pytest
import vobject

from emulator_proc import Emulator
from mount_proc import Mount, mailbox, need_fuse, server_contacts, vcf_files, wait_until
from test_mount_sync import TcpProxy, Via, graph, write_seed

ME = "me@contoso.example"
GARTH = "garth@contoso.example"
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@pytest.fixture(autouse=True)
def _fuse():
    need_fuse()


def contact(given, surname, email=None, **more):
    c = {"givenName": given, "surname": surname, "displayName": "%s %s" % (given, surname)}
    if email:
        c["emailAddresses"] = [{"address": email}]
    c.update(more)
    return c


def seeded(tmp_path):
    return write_seed(tmp_path, {"mailboxes": {
        ME: {"contacts": [
            contact("Ada", "Lovelace", "ada@example.org", jobTitle="Analyst",
                    businessPhones=["+44 20 7946 0001"], mobilePhone="+44 7700 900001"),
            contact("Grace", "Hopper", "grace@example.org", companyName="Navy"),
            contact("No", "Mail")]},
        GARTH: {"contacts": [contact("Gina", "Garth", "gina@example.org")]}}})


def server_people(emu, upn=None):
    """The server's own ranking, as the People API gives it."""
    path = "/v1.0/%s/people?$top=100" % ("me" if upn is None else "users/" + upn)
    req = urllib.request.Request(emu.url + path,
                                 headers={"Authorization": "Bearer " + emu.token})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["value"]


def expected_names(people):
    return ["%03d %s.vcf" % (i + 1, p["displayName"]) for i, p in enumerate(people)]


def person_files(d):
    """{person id: (file name, bytes)} of people/, the names matched to the
    server's people by each card's UID."""
    out = {}
    for name in os.listdir(d):
        data = (d / name).read_bytes()
        assert os.stat(d / name).st_size == len(data)
        out[vobject.readOne(data.decode()).uid.value] = (name, data)
    assert len(out) == len(os.listdir(d))
    return out


class PeopleWithMore:
    """An HTTP proxy to the emulator that adds fields to the people of each
    /people answer. Graph's people carry what the emulator's (made from the
    mailbox's contacts) cannot: more phone types than a contact has.
    more: {displayName: {field: value to append to the person's list}}."""

    def __init__(self, emu, more):
        self.token = emu.token
        target = urllib.parse.urlsplit(emu.url)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    answer = r.getheaders()
                finally:
                    conn.close()
                if self.command == "GET" and r.status == 200 and \
                        urllib.parse.urlsplit(self.path).path.endswith("/people"):
                    data = outer.add(data)
                self.send_response(r.status, r.reason)
                for k, v in answer:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

        self.more = more
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def add(self, data):
        doc = json.loads(data)
        for p in doc["value"]:
            for field, values in self.more.get(p["displayName"], {}).items():
                p[field] = p.get(field, []) + values
        return json.dumps(doc).encode()

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def people_gets(emu):
    return sum(n for r, n in emu.requests()["by_route"].items() if r.endswith("/people"))


def test_people_are_listed_most_relevant_first_as_vcards(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        d = m.root / ".contactfs" / "people"
        assert "people" in os.listdir(m.root / ".contactfs")
        people = server_people(emu)
        assert len(people) == 5  # Ada, Grace, and 3 from the directory; not "No Mail"
        assert sorted(os.listdir(d)) == expected_names(people)
        assert os.stat(d).st_mode & 0o7777 == 0o500
        for name, p in zip(expected_names(people), people):
            path = d / name
            data = path.read_bytes()
            st = os.stat(path)
            assert st.st_mode & 0o7777 == 0o400 and st.st_size == len(data)
            card = vobject.readOne(data.decode())
            assert card.fn.value == p["displayName"]
            assert card.uid.value == p["id"]
            assert [e.value for e in card.contents.get("email", [])] == \
                [e["address"] for e in p["scoredEmailAddresses"]]
        ada = vobject.readOne((d / expected_names(people)[
            [p["displayName"] for p in people].index("Ada Lovelace")]).read_text())
        assert ada.title.value == "Analyst"
        tels = sorted((t.value, tuple(sorted(t.params.get("TYPE", [])))) for t in ada.tel_list)
        assert tels == [("+44 20 7946 0001", ("VOICE", "WORK")), ("+44 7700 900001", ("CELL",))]
        group = (d / expected_names(people)[
            [p["displayName"] for p in people].index("Marketing")]).read_text()
        assert "X-ADDRESSBOOKSERVER-KIND:group" in group
        # The people are not contacts: nothing of them among the files.
        assert vcf_files(m.root) == ["Ada Lovelace.vcf", "Grace Hopper.vcf", "No Mail.vcf"]


def test_every_write_into_people_fails_with_erofs_and_nothing_is_sent(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        d = m.root / ".contactfs" / "people"
        f = d / sorted(os.listdir(d))[0]
        before = f.read_bytes()
        emu.admin("POST", "requests/reset")
        attempts = {
            "open w": lambda: open(f, "w"),
            "open a": lambda: open(f, "a"),
            "open r+": lambda: open(f, "r+"),
            "truncate": lambda: os.truncate(f, 0),
            "create": lambda: open(d / "new.vcf", "w"),
            "mkdir": lambda: os.mkdir(d / "sub"),
            "unlink": lambda: os.unlink(f),
            "rmdir": lambda: os.rmdir(d),
            "rename within": lambda: os.rename(f, d / "renamed.vcf"),
            "rename out": lambda: os.rename(f, m.root / "taken.vcf"),
            "rename in": lambda: os.rename(m.root / "Ada Lovelace.vcf", d / "ada.vcf"),
            "link": lambda: os.link(f, d / "linked.vcf"),
            "symlink": lambda: os.symlink("x", d / "link"),
            "mknod": lambda: os.mknod(d / "node"),
            "chmod": lambda: os.chmod(f, 0o600),
            "utime": lambda: os.utime(f, (0, 0)),
            "chmod dir": lambda: os.chmod(d, 0o700),
            "rename dir": lambda: os.rename(d, m.root / ".contactfs" / "folk"),
        }
        for what, act in attempts.items():
            with pytest.raises(OSError) as e:
                act()
            assert e.value.errno == errno.EROFS, (what, e.value)
        p = subprocess.run(["sh", "-c", "echo x > '%s'" % f], capture_output=True, text=True)
        assert p.returncode != 0 and "Read-only file system" in p.stderr, p
        p = subprocess.run(["cp", str(m.root / "Ada Lovelace.vcf"), str(d)],
                           capture_output=True, text=True)
        assert p.returncode != 0 and "Read-only file system" in p.stderr, p
        assert f.read_bytes() == before
        assert (m.root / "Ada Lovelace.vcf").exists()
        m.wait_synced()
        routes = emu.requests()["by_route"]
        assert not [r for r, n in routes.items() if n and r.split(" ", 1)[0] in WRITES], routes


def test_a_person_copied_into_the_address_book_becomes_a_contact(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        d = m.root / ".contactfs" / "people"
        megan = [n for n in os.listdir(d) if n.endswith(" Megan Bowen.vcf")][0]
        subprocess.run(["cp", str(d / megan), str(m.root / "Megan Bowen.vcf")], check=True)
        m.wait_synced()
        found = [c for c in server_contacts(emu, ME) if c["displayName"] == "Megan Bowen"]
        assert len(found) == 1
        assert [e["address"] for e in found[0]["emailAddresses"]] == ["MeganB@contoso.example"]
        assert found[0]["jobTitle"] == "Marketing Manager"


def test_a_change_on_the_server_shows_after_the_poll_interval(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path, poll=2) as m:
        m.wait_synced()
        d = m.root / ".contactfs" / "people"
        first = sorted(os.listdir(d))
        graph(emu, "POST", "/contacts", contact("New", "Comer", "new@example.org"))
        want = expected_names(server_people(emu))
        assert want != first and len(want) == len(first) + 1
        wait_until(lambda: sorted(os.listdir(d)) == want, timeout=30,
                   what="the new person in people/")


def test_people_stay_readable_offline_and_a_remount_that_never_looks_asks_nothing(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu:
        proxy = TcpProxy(emu.url).start()
        try:
            with Mount(Via(emu, proxy), tmp_path) as m:
                m.wait_synced()
                d = m.root / ".contactfs" / "people"
                online = {n: (d / n).read_bytes() for n in os.listdir(d)}
                assert len(online) == 5
            # A remount that never opens people/ does not ask for them.
            emu.admin("POST", "requests/reset")
            with Mount(Via(emu, proxy), tmp_path, cache=m.cache) as m2:
                m2.wait_synced()
                os.listdir(m2.root)
                (m2.root / ".contactfs" / "status").read_text()
            assert people_gets(emu) == 0, emu.requests()["by_route"]
            proxy.stop()
            with Mount(Via(emu, proxy), tmp_path, cache=m.cache) as m3:
                d = m3.root / ".contactfs" / "people"
                assert {n: (d / n).read_bytes() for n in os.listdir(d)} == online
        finally:
            if not proxy.stopping:
                proxy.stop()


def test_a_shared_mailbox_shows_its_own_people(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu:
        # Another mailbox's people need People.Read.All (an administrator's
        # grant); without it, test_graph_contract.py pins what people/ does.
        emu.faults({"extra_scopes": ["People.Read.All"]})
        with Mount(emu, tmp_path, user=GARTH) as m:
            m.wait_synced()
            d = m.root / ".contactfs" / "people"
            want = expected_names(server_people(emu, GARTH))
            assert "004 Gina Garth.vcf" in want or any(n.endswith(" Gina Garth.vcf")
                                                       for n in want)
            assert sorted(os.listdir(d)) == want
            assert not any("Ada Lovelace" in n for n in os.listdir(d))
            routes = emu.requests()["by_route"]
            assert routes.get("GET /users/{upn}/people", 0) >= 1, routes
            assert mailbox(emu, GARTH) is not None


def test_phone_types_a_contact_lacks_are_separate_type_values(tmp_path):
    more = {"Ada Lovelace": {"phones": [
        {"type": "businessFax", "number": "+44 20 7946 0002"},
        {"type": "homeFax", "number": "+44 20 7946 0003"},
        {"type": "pager", "number": "+44 7700 900002"}]}}
    with Emulator("--seed", str(seeded(tmp_path))) as emu, PeopleWithMore(emu, more) as via, \
            Mount(via, tmp_path) as m:
        m.wait_synced()
        d = m.root / ".contactfs" / "people"
        ada = [n for n in os.listdir(d) if n.endswith(" Ada Lovelace.vcf")]
        assert len(ada) == 1, os.listdir(d)
        text = (d / ada[0]).read_text()
        card = vobject.readOne(text)
        tels = sorted((t.value, tuple(sorted(t.params.get("TYPE", [])))) for t in card.tel_list)
        assert tels == [("+44 20 7946 0001", ("VOICE", "WORK")),
                        ("+44 20 7946 0002", ("FAX", "WORK")),
                        ("+44 20 7946 0003", ("FAX", "HOME")),
                        ("+44 7700 900001", ("CELL",)),
                        ("+44 7700 900002", ("PAGER",))], text
        # As a contact's TELs are written: one TYPE, its values unquoted.
        assert "TEL;TYPE=FAX,WORK:+44 20 7946 0002" in text.splitlines(), text
        assert not [t for t in text.splitlines() if t.startswith("TEL") and '"' in t], text


def test_a_person_too_big_to_show_is_left_out_and_the_others_keep_rank_name_and_bytes(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path, poll=2) as m:
        m.wait_synced()
        d = m.root / ".contactfs" / "people"
        before = person_files(d)
        assert len(before) == 5
        listed_at = max(os.stat(d / n).st_mtime_ns for n, _ in before.values())
        # Over the 1 MiB a person's card may take, under Graph's 4 MB body. Ids
        # (and so ranks) are random: one ranked last would leave no gap to see.
        big = contact("Huge", "Title", "huge@example.org", jobTitle="x" * (1100 * 1024))
        for _ in range(30):
            created = graph(emu, "POST", "/contacts", big)
            people = server_people(emu)
            if people[-1]["displayName"] != "Huge Title":
                break
            graph(emu, "DELETE", "/contacts/" + created["id"])
        huge = [p for p in people if p["displayName"] == "Huge Title"]
        assert len(huge) == 1 and len(people) == 6 and people[-1] is not huge[0]
        # The server's rank stays in each name: the one left out leaves a gap.
        want = [n for n, p in zip(expected_names(people), people) if p is not huge[0]]

        def new_list_shown():
            names = sorted(os.listdir(d))
            return names == want and all(os.stat(d / n).st_mtime_ns > listed_at for n in names)
        wait_until(new_list_shown, timeout=30, what="people/ without the person too big to show")
        after = person_files(d)
        assert sorted(after) == sorted(before)
        for pid, (name, data) in after.items():
            assert data == before[pid][1], name
        log = m.log_text()
        assert [line for line in log.splitlines() if huge[0]["id"] in line], log
        assert "Huge" not in log, log
