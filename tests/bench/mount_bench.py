"""contactfs against its limits and its peers, side by side in one run.

Run through scripts/bench (which installs bindfs, rclone and gnuplot first).
Every figure is a median of --runs runs, and every comparison a ratio taken
in the same run: these machines are shared and noisy.

References:
  limit        the same vdir (contactfs export) on tmpfs, read directly
  FUSE limit   that vdir through bindfs (a FUSE passthrough in C)
  peer         that vdir through rclone mount of a local directory, --vfs-cache-mode full
  network      for work that must talk to Graph, the essential bound (the goal):
                   essential requests / C x latency
               where C is the emulator's max_concurrency (4) and the essential
               requests are what any client must ask for, counted from the
               mailbox, not from what contactfs sent:
                 cold mount   the folder list (contactFolders/delta) and each
                              folder's contact delta, the default one too, in
                              pages of 200 (the page size contactfs asks for and
                              the emulator's cap): max(1, ceil(n / 200)) each;
                              each folder's list of the contacts whose
                              PidLidHasPicture is true (what tells a client
                              which photos exist without asking each), in
                              pages of 1000 ($top): max(1, ceil(p / 1000))
                              each, p the folder's flagged contacts; plus one
                              GET per photo that exists
                 new cards    one POST per card (the extension rides in it) and
                              one PUT per card with a PHOTO
               Beside it, as information, the own-request bound:
                   contactfs's slot requests / C x latency
               where slot requests are the requests that held one of the
               mailbox's C slots for a latency, as the emulator charges them:
               every HTTP request and every $batch item, but not the $batch
               envelope (the emulator sleeps the latency once for it holding
               no slot, then runs its items four at a time, each in a slot
               with its own latency) nor GET /me (no slot, no latency).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))

from emulator_proc import Emulator  # noqa: E402
from mount_proc import is_mounted, mount_options  # noqa: E402

BIN = Path(os.environ.get("CONTACTFS_BIN", REPO / "build" / "contactfs"))


def sh(argv, **kw):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def timed(argv, **kw):
    t0 = time.monotonic()
    sh(argv, **kw)
    return time.monotonic() - t0


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise SystemExit("bench: timed out waiting for " + what)


def unmount(path):
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], check=False)
        wait(lambda: not is_mounted(path), 120, "the unmount of %s" % path)


DELTA_PAGE = 200  # the delta page size contactfs asks for (cache/fetch.c); the emulator's cap
FLAG_PAGE = 1000  # $top of the has-photo list (cache/fetch.c)


def slot_requests(st):
    """Of the emulator's request counts `st`, the requests that held a slot
    for a latency: every HTTP request and $batch item but the envelopes and
    GET /me (see the docstring)."""
    free = sum(n for r, n in st["by_route"].items()
               if r.endswith("/$batch") or r in ("GET /me", "GET /users/{upn}"))
    return st["total"] + st["batch_items"] - free


def requests(emu):
    """contactfs's requests since the last reset: (HTTP requests and $batch
    items, slot requests)."""
    st = emu.requests()
    return st["total"] + st["batch_items"], slot_requests(st)


def delta_pages(n):
    return max(1, -(-n // DELTA_PAGE))


def essential_cold(state):
    """The requests any client must make to list the mailbox with exact
    sizes: the folder list, each folder's contact delta and has-photo list
    (in pages), each photo."""
    (mb,) = state["mailboxes"].values()
    per_folder, flagged = {}, {}
    for c in mb["contacts"]:
        f = c["parentFolderId"]
        per_folder[f] = per_folder.get(f, 0) + 1
        flagged[f] = flagged.get(f, 0) + (1 if c.get("hasPicture") else 0)
    photos = sum(1 for c in mb["contacts"] if c.get("photo"))
    others = [f for f in mb["folders"] if f["id"] != mb["defaultFolderId"]]
    return (delta_pages(len(others))
            + sum(delta_pages(per_folder.get(f["id"], 0)) for f in mb["folders"])
            + sum(max(1, -(-flagged.get(f["id"], 0) // FLAG_PAGE)) for f in mb["folders"])
            + photos)


def network_row(label, wall, sent, slots, essential, conc, lat):
    """A row against the essential bound (the goal), the own-request bound
    beside it for information."""
    bound, own = essential / conc * lat, slots / conc * lat
    return (label, "%.2f s (%d requests, %d in a slot)" % (wall, sent, slots),
            "essential bound %.2f s (%d requests); own-request bound %.2f s, %.2f ×"
            % (bound, essential, own, wall / own), wall / bound, "≤ 1.5 × essential", 1.5)


def server_note(emu, cid):
    """A contact's notes as the emulator's state has them (cid in either id form)."""
    (mb,) = emu.state()["mailboxes"].values()
    return next(c for c in mb["contacts"] if cid in (c["id"], c["mutableId"])).get("personalNotes")


def graph_settled(emu, before):
    """Whether more than `before` answers went out (a count since the last
    reset) and no request is in flight, from the admin API, which pays no
    latency; and the count."""
    st = emu.requests()
    done = sum(st["by_status"].values())
    return done > before and not st["in_flight"], done


def status(root):
    d = {}
    for line in (Path(root) / ".contactfs" / "status").read_text().splitlines():
        if ": " in line and not line.startswith(" "):
            k, v = line.split(": ", 1)
            d[k] = v
    return d


def count_vcf_lsR(root):
    out = subprocess.run(["ls", "-lR", str(root)], check=True, stdout=subprocess.PIPE).stdout
    return sum(1 for line in out.splitlines() if line.endswith(b".vcf"))


class ContactfsMount:
    """contactfs in the background, as a person mounts it."""

    def __init__(self, emu, root, cache, poll):
        self.emu, self.root, self.cache, self.poll = emu, Path(root), Path(cache), poll

    def mount(self):
        self.root.mkdir(parents=True, exist_ok=True)
        o = mount_options(self.emu, cache_dir=str(self.cache), poll=self.poll)
        sh([str(BIN), "-o", o, str(self.root)])
        self.pid = int(sh(["pgrep", "-n", "-f", "contactfs .*%s$" % re.escape(str(self.root))]
                          ).stdout.split()[0])

    def unmount(self):
        unmount(self.root)
        wait(lambda: not Path("/proc/%d" % self.pid).exists(), 120, "the daemon to exit")

    def synced(self):
        s = status(self.root)
        if not s.get("parked changes", "0").startswith("0"):
            # Refused by the server: it will never be "synced", and a
            # figure taken now would hide that.
            raise SystemExit("bench: changes parked in %s:\n%s" % (
                self.root, (self.root / ".contactfs" / "errors").read_text()))
        return (s.get("pending changes", "").startswith("0")
                and s.get("last sync", "").startswith("20")
                and int(s.get("photos still to check", "0")) == 0)

    def peak_rss_mb(self):
        for line in Path("/proc/%d/status" % self.pid).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def graph(emu, method, path, body=None):
    """A request of another client to the emulator's Graph. The mailbox
    takes four requests at a time and contactfs may hold them all: a 429
    (or 503) is waited out as its Retry-After says and sent again."""
    for attempt in range(10):
        req = urllib.request.Request(emu.url + "/v1.0/me" + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + emu.token,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data = r.read()
                return json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503) or attempt == 9:
                raise
            time.sleep(float(e.headers.get("Retry-After") or 1))


def median(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=10000)
    ap.add_argument("--folders", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--new", type=int, default=1000, help="contacts rsync'ed in")
    ap.add_argument("--big", type=int, default=100000, help="contacts for the memory figure (0: skip)")
    ap.add_argument("--poll", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--quick", action="store_true",
                    help="1,000 contacts, one run each, no memory run: a smoke test of the harness")
    ap.add_argument("--plot-only", action="store_true",
                    help="draw the chart again from the last run's .dat, run nothing")
    a = ap.parse_args()
    if a.plot_only:
        plot(Path(a.out), "mount-quick" if a.quick else "mount")
        return
    if a.quick:
        a.contacts, a.runs, a.new, a.big = 1000, 1, 100, 0
    lat = a.latency_ms / 1000
    rows = []  # (workload, contactfs, reference, ratio, goal, met)

    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="contactfs-bench-", dir=shm))
    disk = Path(tempfile.mkdtemp(prefix="contactfs-bench-"))
    mounts = {}
    try:
        with Emulator("--contacts", str(a.contacts), "--folders", str(a.folders),
                      "--photos", str(a.contacts // 10)) as emu:
            # ---- the references ---------------------------------------------
            vdir = work / "vdir"
            o = mount_options(emu)
            sh([str(BIN), "export", "-o", o, str(vdir)])
            n_files = sum(1 for p in vdir.rglob("*.vcf"))
            assert n_files == a.contacts, (n_files, a.contacts)
            mounts["bindfs"] = work / "bindfs"
            mounts["bindfs"].mkdir()
            sh(["bindfs", "--no-allow-other", str(vdir), str(mounts["bindfs"])])
            mounts["rclone"] = work / "rclone"
            mounts["rclone"].mkdir()
            sh(["rclone", "mount", str(vdir), str(mounts["rclone"]), "--vfs-cache-mode", "full",
                "--cache-dir", str(disk / "rclone-cache"), "--daemon", "--config", "/dev/null"])
            wait(lambda: is_mounted(mounts["rclone"]), 60, "rclone mount")

            emu.faults({"latency_ms": a.latency_ms})
            conc = int(emu.admin("GET", "faults")["max_concurrency"])
            essential = essential_cold(emu.state())
            cfs = ContactfsMount(emu, work / "contactfs", disk / "cache", a.poll)

            # ---- cold mount ----------------------------------------------------
            cold, cold_req, cold_slots = [], [], []
            for i in range(a.runs):
                shutil.rmtree(cfs.cache, ignore_errors=True)
                emu.admin("POST", "requests/reset", {})
                t0 = time.monotonic()
                cfs.mount()
                wait(lambda: cfs.synced() and count_vcf_lsR(cfs.root) == a.contacts, 3600,
                     "the cold mount to list every contact")
                cold.append(time.monotonic() - t0)
                sent, slots = requests(emu)
                cold_req.append(sent)
                cold_slots.append(slots)
                if i < a.runs - 1:
                    cfs.unmount()
            rows.append(network_row("cold mount until `ls -lR` lists all %d (exact sizes)"
                                    % a.contacts, median(cold), median(cold_req),
                                    median(cold_slots), essential, conc, lat))
            rows.append(("cold mount: requests per contact",
                         "%.3f (%d requests)" % (median(cold_req) / a.contacts, median(cold_req)),
                         "essential %.3f (%d requests)" % (essential / a.contacts, essential),
                         median(cold_req) / essential, "≤ 1.5 × essential", 1.5))

            # ---- warm remount ----------------------------------------------------
            warm, warm_req = [], []
            for i in range(a.runs):
                cfs.unmount()
                emu.admin("POST", "requests/reset", {})
                t0 = time.monotonic()
                cfs.mount()
                n = count_vcf_lsR(cfs.root)
                warm.append(time.monotonic() - t0)
                assert n == a.contacts, n
                # The time alone: "(N s ago)" after it changes every second.
                first = status(cfs.root).get("last sync", "").split(" (")[0]
                wait(lambda: status(cfs.root).get("last sync", "").split(" (")[0] != first
                     or cfs.synced(), 60,
                     "the first delta round")
                time.sleep(0.5)
                warm_req.append(requests(emu)[0])
            rows.append(("warm remount until `ls -lR` completes",
                         "%.2f s, %d requests" % (median(warm), max(warm_req)),
                         "goal 1 s and %d requests" % (a.folders + 1 + 1), median(warm) / 1.0,
                         "< 1 s, ≤ folders + 1 requests",
                         1.0 if max(warm_req) <= a.folders + 2 else 0))

            # ---- reads: ls -lR, grep -r, tar c ---------------------------------------
            trees = {"tmpfs": vdir, "bindfs": mounts["bindfs"], "rclone": mounts["rclone"],
                     "contactfs": cfs.root}
            needle = graph(emu, "GET", "/contacts?$top=1&$select=emailAddresses")
            needle = needle["value"][0]["emailAddresses"][0]["address"] \
                if needle["value"] and needle["value"][0]["emailAddresses"] else "@"
            reads = {
                "`ls -lR`": lambda t: ["ls", "-lR", str(t)],
                # -c reads every file (-q would stop at the first match,
                # which depends on each tree's readdir order).
                "`grep -r` for an address": lambda t: ["grep", "-rcF", needle, str(t)],
                "`tar c` of the whole tree": lambda t: ["tar", "cf", "/dev/null",
                                                        "--exclude=.contactfs", "-C", str(t), "."],
            }
            for label, cmd in reads.items():
                times = {k: [] for k in trees}
                for k, t in trees.items():
                    subprocess.run(cmd(t), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(max(a.runs, 3)):
                    for k, t in trees.items():
                        t0 = time.monotonic()
                        subprocess.run(cmd(t), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                        times[k].append(time.monotonic() - t0)
                m = {k: median(v) for k, v in times.items()}
                rows.append((label + ", warm", "%.3f s" % m["contactfs"],
                             "tmpfs %.3f s, bindfs %.3f s, rclone %.3f s"
                             % (m["tmpfs"], m["bindfs"], m["rclone"]),
                             m["contactfs"] / m["bindfs"], "≤ 1.0 × bindfs", 1.0))

            # ---- rsync of new contacts in ------------------------------------------------
            src = disk / "new"
            src.mkdir()
            gen = sh(["/usr/bin/python3", str(REPO / "scripts" / "gen-vcards.py"), "--contacts",
                      str(a.new), "--seed", "7"]).stdout.decode()
            cards = re.findall(r"BEGIN:VCARD.*?END:VCARD\r\n", gen, re.S)
            for i, card in enumerate(cards):
                (src / ("new-%05d.vcf" % i)).write_text(card, newline="")
            # What any client must send for them: a POST each, a PUT of each photo.
            essential_new = len(cards) + sum(1 for c in cards if "\r\nPHOTO" in c)
            # Onto tmpfs, and onto tmpfs through bindfs: every file rsync
            # writes costs contactfs 14 FUSE requests (3 lookups, create, 3
            # setattr, write, flush, 2 release, getattr, open, rename;
            # bindfs 17), whatever the filesystem behind them does. Each
            # run into a folder of its own (the same cards in another
            # folder are new contacts there).
            r_tmpfs, r_bindfs, r_cfs, r_server, r_req, r_slots = [], [], [], [], [], []
            for i in range(a.runs):
                r_tmpfs.append(timed(["rsync", "-a", str(src) + "/",
                                      str(work / ("rsync-target-%d" % i)) + "/"]))
                r_bindfs.append(timed(["rsync", "-a", str(src) + "/",
                                       str(mounts["bindfs"] / ("rsync-target-%d" % i)) + "/"]))
                folder = cfs.root / ("Imported %d" % (i + 1))
                folder.mkdir()
                wait(cfs.synced, 120, "the new folder")
                emu.admin("POST", "requests/reset", {})
                t0 = time.monotonic()
                sh(["rsync", "-a", str(src) + "/", str(folder) + "/"])
                r_cfs.append(time.monotonic() - t0)
                wait(cfs.synced, 3600, "the new contacts to reach the server")
                r_server.append(time.monotonic() - t0)
                sent, slots = requests(emu)
                r_req.append(sent)
                r_slots.append(slots)
            t_tmpfs, t_bindfs, t_rsync = median(r_tmpfs), median(r_bindfs), median(r_cfs)
            t_server = median(r_server)
            rows.append(("`rsync -a` of %d new contacts: rsync itself" % a.new,
                         "%.2f s" % t_rsync,
                         "onto bindfs %.2f s, onto tmpfs %.2f s (%.1f × tmpfs)"
                         % (t_bindfs, t_tmpfs, t_rsync / t_tmpfs),
                         t_rsync / t_bindfs, "≤ 1.0 × bindfs", 1.0))
            rows.append(network_row("`rsync -a` of %d new contacts: all on the server" % a.new,
                                    t_server, median(r_req), median(r_slots), essential_new,
                                    conc, lat))

            # ---- one export file of the same cards dropped in --------------------------------
            export = disk / "export.vcf"
            export.write_text(gen, newline="")
            i_server, i_req, i_slots = [], [], []
            for i in range(a.runs):
                folder = cfs.root / ("Dropped %d" % (i + 1))
                folder.mkdir()
                wait(cfs.synced, 120, "the new folder")
                emu.admin("POST", "requests/reset", {})
                t0 = time.monotonic()
                sh(["cp", str(export), str(folder / "export.vcf")])
                wait(cfs.synced, 3600, "the imported contacts to reach the server")
                i_server.append(time.monotonic() - t0)
                sent, slots = requests(emu)
                i_req.append(sent)
                i_slots.append(slots)
                wait(lambda: not (folder / "export.vcf").exists(), 120, "the export file to go")
                got = len(list(folder.glob("*.vcf")))
                if got != a.new:
                    raise SystemExit("bench: %d cards dropped, %d files" % (a.new, got))
            rows.append(network_row("one file of %d cards dropped in: all on the server" % a.new,
                                    median(i_server), median(i_req), median(i_slots),
                                    essential_new, conc, lat))

            # ---- one edit with vim -----------------------------------------------------------
            target = cfs.root / "Vim Bench.vcf"
            target.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Vim Bench\r\nN:Bench;Vim;;;\r\n"
                              "EMAIL:vim-bench@example.org\r\nNOTE:start\r\nEND:VCARD\r\n",
                              newline="")
            wait(lambda: cfs.synced() and "\nUID:" in target.read_text(), 120,
                 "the vim bench contact (on the server, its file with the UID it got)")
            found = graph(emu, "GET", "/contacts?$select=id&$filter=emailAddresses/any"
                          "(a:a/address%20eq%20'vim-bench@example.org')")["value"]
            vid = found[0]["id"]
            edits = []
            for i in range(max(a.runs, 3)):
                note = "edited %d" % i
                # From before vim writes (a flush may already send the
                # change) until the emulator's state has it. The admin API
                # pays no latency: its request counters say when an answer
                # went out and nothing is in flight, then the state (the
                # whole mailbox, so read only then) must show the note. The
                # time is taken before that read, which only confirms.
                done = sum(emu.requests()["by_status"].values())
                t0 = time.monotonic()
                sh(["vim", "-N", "-u", "DEFAULTS", "-i", "NONE", "-n", "-es", "-c",
                    "%s/^NOTE:.*/NOTE:" + note + "/", "-c", "wq", str(target)])
                deadline = t0 + 60
                while True:
                    settled, now = graph_settled(emu, done)
                    t1 = time.monotonic()
                    if settled:
                        if server_note(emu, vid) == note:
                            break
                        done = now  # not yet: wait for another answer
                    if t1 > deadline:
                        raise SystemExit("bench: timed out waiting for the vim edit on the server")
                    time.sleep(0.005)
                edits.append(t1 - t0)
            goal = lat + 0.1
            rows.append(("one contact saved with vim, until on the server",
                         "%.3f s" % median(edits), "one round trip + 100 ms = %.3f s" % goal,
                         median(edits) / goal, "≤ 1.0", 1.0))

            # ---- a change on the server -------------------------------------------------------
            seen = []
            server_made = [f for f in sorted(cfs.root.glob("*.vcf"))
                           if "UID:AAMk" in f.read_text()]
            for i in range(max(a.runs, 3)):
                f = server_made[i]
                cid = [l for l in f.read_text().splitlines() if l.startswith("UID:")][0][4:]
                graph(emu, "PATCH", "/contacts/" + cid, {"jobTitle": "Remote %d" % i})
                t0 = time.monotonic()
                wait(lambda: "Remote %d" % i in f.read_text(), a.poll + 30,
                     "the remote change in the mount")
                seen.append(time.monotonic() - t0)
            rows.append(("change made on the server, until visible in the mount",
                         "%.2f s" % median(seen), "poll + 1 s = %d s" % (a.poll + 1),
                         median(seen) / (a.poll + 1), "≤ 1.0", 1.0))
            rss = cfs.peak_rss_mb()
            cfs.unmount()
            rows.append(("peak resident memory, %d contacts mounted" % a.contacts,
                         "%.1f MB" % rss, "goal 50 MB", rss / 50, "< 50 MB", 1.0))

        if a.big:
            with Emulator("--contacts", str(a.big), "--folders", "40") as emu:
                big = ContactfsMount(emu, work / "big", disk / "big-cache", 300)
                big.mount()
                wait(lambda: count_vcf_lsR(big.root) == a.big and status(big.root)
                     .get("last sync", "").startswith("20"), 3600, "the 100k first sync")
                rss = big.peak_rss_mb()
                big.unmount()
            rows.append(("peak resident memory, %d contacts mounted" % a.big, "%.1f MB" % rss,
                         "goal 50 MB", rss / 50, "< 50 MB", 1.0))
    finally:
        for p in mounts.values():
            unmount(p)
        unmount(work / "contactfs")
        unmount(work / "big")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)

    report(a, rows)


BOUNDS = """Network rows: the goal is the essential bound, essential requests / C × latency, C the \
emulator's max_concurrency (4). Essential requests are what any client must ask for, counted from the \
mailbox: for the cold mount the folder list and each folder's contact delta (the default folder too) in \
pages of 200, max(1, ceil(n / 200)) each, each folder's list of the contacts PidLidHasPicture marks in pages \
of 1000, max(1, ceil(p / 1000)) each, plus one GET per photo that exists; for new cards one POST each \
(the extension rides in it) and one PUT per PHOTO. The own-request bound beside it is information: \
contactfs's slot requests / C × latency, where slot requests are the HTTP requests and $batch items that \
held a slot, as the emulator charges them (per item, four at a time; a $batch envelope waits one latency \
in no slot and GET /me holds none). The vim row runs from before vim writes until the emulator's state \
(its admin API, no latency) has the edit.

"""


def report(a, rows):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "mount-quick" if a.quick else "mount"
    lines = ["| workload | contactfs | reference (same run) | ratio | goal | met |",
             "|---|---:|---|---:|---|---|"]
    for w, c, ref, ratio, goal, limit in rows:
        lines.append("| %s | %s | %s | %.2f | %s | %s |" % (
            w, c, ref, ratio, goal, "yes" if ratio <= limit else "**no**"))
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True).stdout.strip() or "unknown"
    head = ("contactfs mount benchmark: %d contacts in %d folders (10 %% with photos), emulator "
            "latency %d ms, median of %d runs, %s, %d cores, commit %s.\n\n"
            % (a.contacts, a.folders, a.latency_ms, a.runs, time.strftime("%Y-%m-%d"),
               os.cpu_count(), commit))
    head += BOUNDS
    text = head + "\n".join(lines) + "\n"
    (out / (name + ".md")).write_text(text)
    print(text)
    # The chart's data is kept next to the table: `--plot-only` draws it
    # again without running anything.
    with open(out / (name + ".dat"), "w") as f:
        for i, (w, c, ref, ratio, goal, limit) in enumerate(rows):
            label = w.replace("`", "").replace('"', "'")
            f.write('%d "%s" %.3f %.3f\n' % (i, label if len(label) <= 44 else
                                             label[:43] + "…", ratio, limit))
    plot(out, name)


def plot(out, name):
    if not shutil.which("gnuplot"):
        print("bench: no gnuplot, no chart", file=sys.stderr)
        return
    script = """
set terminal pngcairo size 1200,760 font ",10"
set output "%s"
set title "contactfs: each figure divided by its reference, log scale (at or below the red goal mark: met)"
set style data histograms
set style fill solid 0.8
set boxwidth 0.6
set xtics rotate by 35 right
set lmargin 22
set bmargin 15
set ylabel "ratio"
set logscale y
set yrange [0.05:*]
set key top left
plot "%s" using 3:xtic(2) title "ratio", "" using 0:4 with points pt 7 ps 1.5 lc rgb "red" title "goal"
""" % (out / (name + ".png"), out / (name + ".dat"))
    subprocess.run(["gnuplot"], input=script.encode(), check=True)


if __name__ == "__main__":
    main()
