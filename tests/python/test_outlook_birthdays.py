""".contactfs/birthdays.ics (docs/design.md §10): contacts' birthdays and anniversaries as
yearly all-day events. Checked with python3-icalendar and with khal (import,
then list), both from Debian, against a real mount."""
import os
import subprocess
import time

import icalendar

from emulator_proc import Emulator
from mount_proc import Mount, server_contacts, wait_until
from test_mount_sync import graph, write_seed

ME = "me@contoso.example"


def seeded(tmp_path):
    return write_seed(tmp_path, {"mailboxes": {ME: {"contacts": [
        {"displayName": "Ada Lovelace", "givenName": "Ada", "birthday": "1815-12-10T11:59:00Z"},
        # Outlook's year 1604: a birthday without a year.
        {"displayName": "Yara Noyear", "givenName": "Yara", "birthday": "1604-03-08T11:59:00Z"},
        {"displayName": "Leap Lea", "givenName": "Lea", "birthday": "1992-02-29T11:59:00Z"},
        {"displayName": "Nobody Dated", "givenName": "Nobody"},
    ]}}})


ANNIVERSARY_CARD = (b"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:wed-1\r\nFN:Wed Ding\r\nN:Ding;Wed;;;\r\n"
                    b"ANNIVERSARY:20100612\r\nEND:VCARD\r\n")


def events(path):
    cal = icalendar.Calendar.from_ical(path.read_bytes())
    return {str(e["SUMMARY"]): e for e in cal.walk("VEVENT")}


def khal(tmp_path, *args):
    cfg = tmp_path / "khal-config" / "khal"
    cfg.mkdir(parents=True, exist_ok=True)
    (tmp_path / "khal-cal").mkdir(exist_ok=True)
    (cfg / "config").write_text(
        "[calendars]\n[[birthdays]]\npath = %s\ntype = calendar\n"
        "[locale]\ntimeformat = %%H:%%M\ndateformat = %%Y-%%m-%%d\n"
        "longdateformat = %%Y-%%m-%%d\ndatetimeformat = %%Y-%%m-%%d %%H:%%M\n"
        "longdatetimeformat = %%Y-%%m-%%d %%H:%%M\n[default]\ndefault_calendar = birthdays\n"
        % (tmp_path / "khal-cal"))
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "khal-config"),
               XDG_DATA_HOME=str(tmp_path / "khal-data"))
    r = subprocess.run(["khal", *args], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def days(out):
    """khal list output as {date: [titles]}."""
    got = {}
    for line in out.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and len(parts[0]) == 10 and parts[0][4] == "-":
            got.setdefault(parts[0], []).append(parts[1])
    return got


def test_the_calendar_loads_with_one_yearly_event_per_date_and_stable_uids(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu:
        with Mount(emu, tmp_path) as m:
            m.wait_synced()
            (m.root / "Wed Ding.vcf").write_bytes(ANNIVERSARY_CARD)
            m.wait_synced()
            p = m.root / ".contactfs" / "birthdays.ics"
            assert os.stat(p).st_size == len(p.read_bytes())
            ev = events(p)
            assert set(ev) == {"Ada Lovelace (birthday)", "Yara Noyear (birthday)",
                               "Leap Lea (birthday)", "Wed Ding (anniversary)"}
            assert str(ev["Ada Lovelace (birthday)"]["DTSTART"].dt) == "1815-12-10"
            assert ev["Ada Lovelace (birthday)"]["RRULE"]["FREQ"] == ["YEARLY"]
            assert str(ev["Wed Ding (anniversary)"]["DTSTART"].dt) == "2010-06-12"
            assert str(ev["Wed Ding (anniversary)"]["UID"]) == "wed-1-anniversary"
            assert "year unknown" in str(ev["Yara Noyear (birthday)"]["DESCRIPTION"])
            leap = ev["Leap Lea (birthday)"]["RRULE"]
            assert leap["BYMONTH"] == [2] and leap["BYMONTHDAY"] == [-1], leap
            uids = {k: str(e["UID"]) for k, e in ev.items()}
            assert len(set(uids.values())) == 4
            assert b"\r\n" in p.read_bytes()
        # The same UIDs after a remount.
        with Mount(emu, tmp_path) as m:
            m.wait_synced()
            again = events(m.root / ".contactfs" / "birthdays.ics")
            assert {k: str(e["UID"]) for k, e in again.items()} == uids


def test_khal_imports_it_and_lists_the_birthdays_on_their_days(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path) as m:
        m.wait_synced()
        (m.root / "Wed Ding.vcf").write_bytes(ANNIVERSARY_CARD)
        m.wait_synced()
        khal(tmp_path, "import", "--batch", str(m.root / ".contactfs" / "birthdays.ics"))
        fmt = ["--format", "{start-date} {title}"]
        got = days(khal(tmp_path, "list", "2027-01-01", "2027-12-31", *fmt))
        assert got.get("2027-12-10") == ["Ada Lovelace (birthday)"], got
        assert got.get("2027-03-08") == ["Yara Noyear (birthday)"], got      # no year
        assert got.get("2027-06-12") == ["Wed Ding (anniversary)"], got
        # 29 February: the 28th in a common year, the 29th in a leap year.
        assert got.get("2027-02-28") == ["Leap Lea (birthday)"], got
        assert sum(len(v) for v in got.values()) == 4, got
        leap = days(khal(tmp_path, "list", "2028-02-27", "2028-03-01", *fmt))
        assert leap == {"2028-02-29": ["Leap Lea (birthday)"]}, leap


def test_it_follows_the_contacts_local_edits_and_server_changes(tmp_path):
    with Emulator("--seed", str(seeded(tmp_path))) as emu, Mount(emu, tmp_path, poll=2) as m:
        m.wait_synced()
        p = m.root / ".contactfs" / "birthdays.ics"
        uid = str(events(p)["Ada Lovelace (birthday)"]["UID"])
        # An edit of the file.
        ada = m.root / "Ada Lovelace.vcf"
        ada.write_bytes(ada.read_bytes().replace(b"BDAY:1815-12-10", b"BDAY:1815-12-11"))
        ev = events(p)["Ada Lovelace (birthday)"]
        assert str(ev["DTSTART"].dt) == "1815-12-11" and str(ev["UID"]) == uid
        # A change made in Outlook.
        (nobody,) = [c for c in server_contacts(emu, ME) if c["displayName"] == "Nobody Dated"]
        graph(emu, "PATCH", "/contacts/" + nobody["id"], {"birthday": "1970-01-02T11:59:00Z"})
        wait_until(lambda: "Nobody Dated (birthday)" in events(p), timeout=10,
                   what="the server's new birthday in birthdays.ics")
        # A contact removed takes its event with it.
        os.unlink(m.root / "Leap Lea.vcf")
        assert "Leap Lea (birthday)" not in events(p)
        m.wait_synced(timeout=30)
        time.sleep(0.1)
        assert set(events(p)) == {"Ada Lovelace (birthday)", "Yara Noyear (birthday)",
                                  "Nobody Dated (birthday)"}
