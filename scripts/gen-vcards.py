#!/usr/bin/python3
"""Generate a deterministic file of realistic vCard 3.0 contacts for benchmarks.

usage: scripts/gen-vcards.py [--contacts N] [--seed S] [--out FILE]

Same arguments, same bytes. Contacts vary the way real address books do:
names in several scripts, one to four emails, one to five phones, zero to
three addresses, organisations and titles, notes with line breaks, commas
and semicolons, categories, Apple-style grouped custom labels, and a small
base64 JPEG-like PHOTO on one contact in ten. Output is CRLF, folded at 75
octets on character boundaries, escaped as RFC 2426 says.
"""
import argparse
import base64
import random
import sys

GIVEN = ["James", "Mary", "Jürgen", "Zoë", "François", "Søren", "Ana María", "José", "Łukasz",
         "Ægir", "Chloé", "Björk", "Nguyễn", "Олег", "Анна", "Γιώργος", "Ελένη", "太郎", "花子",
         "민준", "서연", "محمد", "فاطمة", "Ravi", "Priya", "Wei", "Mei", "Oluwaseun", "Chiamaka",
         "Siobhán", "Ólafur", "Dvořák", "İsmail", "Şebnem", "Ngozi", "Tomás", "Inês"]
FAMILY = ["Smith", "Müller", "García", "O'Brien", "van der Berg", "Nowak", "Dubois", "Rossi",
          "Kowalczyk", "Ødegaard", "Fernández", "Иванов", "Петрова", "Παπαδόπουλος", "山田",
          "佐藤", "김", "이", "Al-Farsi", "Haddad", "Patel", "Sharma", "Wang", "Li", "Okafor",
          "Adeyemi", "Ní Bhriain", "Þórsdóttir", "Novák", "Yılmaz", "Nguyen", "Santos"]
ORGS = ["Acme, Inc.", "Globex Corporation", "Initech", "Umbrella; Research Division",
        "Stark Industries", "Wayne Enterprises", "Müller & Söhne GmbH", "株式会社サンプル",
        "Société Générale d'Exemple", "Hooli", "Vandelay Industries", "Oceanic Airlines"]
DEPTS = ["Sales", "Engineering", "R&D", "Human Resources", "Legal, Compliance", "Support",
         "Marketing; Communications", "Finance"]
TITLES = ["Engineer", "Senior Engineer", "Director of Sales", "CEO", "Account Manager",
          "Head of Research", "Intern", "Chief Happiness Officer", "Consultant"]
CITIES = [("Berlin", "", "10115", "Germany"), ("Paris", "Île-de-France", "75001", "France"),
          ("Springfield", "IL", "62701", "USA"), ("東京", "東京都", "100-0001", "日本"),
          ("São Paulo", "SP", "01000-000", "Brasil"), ("Москва", "", "101000", "Россия"),
          ("Reykjavík", "", "101", "Iceland"), ("Lagos", "Lagos", "100001", "Nigeria"),
          ("Mumbai", "MH", "400001", "India"), ("Zürich", "ZH", "8001", "Schweiz")]
STREETS = ["Hauptstraße", "Main Street", "Rue de la Paix", "Baker Street", "Avenida Paulista",
           "Тверская улица", "Laugavegur", "Marine Drive", "Bahnhofstrasse", "Elm Street"]
CATEGORIES = ["Work", "Family", "Friends", "VIP", "Clients", "Suppliers", "Book club",
              "Football", "Neighbours", "Conference 2023"]
NOTES = ["Met at the conference; follow up in spring.",
         "Prefers e-mail, not phone.\nCall after 10:00, please.",
         "Allergic to nuts; likes tea, not coffee.",
         "Kids: Anna, Ben; dog: Rex.\nBirthday party every June.",
         "Old address was: 5 Elm St., Apt. 2; moved 2019.",
         "Ask about the invoice #4711 (backslash \\ test)."]
LABELS = ["Assistant", "Emergency", "Old number", "Boat", "Summer house", "Pager"]
EMAIL_TYPES = ["INTERNET,WORK", "INTERNET,HOME", "INTERNET", "INTERNET,PREF,WORK"]
TEL_TYPES = ["WORK,VOICE", "HOME,VOICE", "CELL", "WORK,FAX", "HOME", "CELL,PREF", "PAGER"]


def esc(s):
    return (s.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
            .replace("\n", "\\n"))


def fold(line):
    out, cur, limit = [], b"", 75
    for ch in line:
        e = ch.encode("utf-8")
        if len(cur) + len(e) > limit:
            out.append(cur)
            cur, limit = b"", 74
        cur += e
    out.append(cur)
    return b"\r\n ".join(out)


def ascii_local(s, rnd):
    t = "".join(c for c in s.lower() if c.isascii() and c.isalnum())
    return t or f"user{rnd.randrange(10000)}"


def contact(i, rnd):
    given = rnd.choice(GIVEN)
    family = rnd.choice(FAMILY)
    middle = rnd.choice(["", "", "", "A.", "Marie", "J."])
    prefix = rnd.choice(["", "", "", "Dr.", "Mr.", "Ms.", "Prof."])
    lines = ["BEGIN:VCARD", "VERSION:3.0",
             f"UID:urn:uuid:{rnd.getrandbits(128):032x}",
             f"N:{esc(family)};{esc(given)};{esc(middle)};{esc(prefix)};",
             "FN:" + esc(" ".join(x for x in (prefix, given, middle, family) if x))]
    if rnd.random() < 0.3:
        lines.append("NICKNAME:" + esc(given[:3]))
    if rnd.random() < 0.7:
        lines.append(f"ORG:{esc(rnd.choice(ORGS))};{esc(rnd.choice(DEPTS))}")
        lines.append("TITLE:" + esc(rnd.choice(TITLES)))
    local = ascii_local(given, rnd) + "." + ascii_local(family, rnd)
    domains = ["example.com", "example.org", "mail.example", "corp.example.net"]
    for k in range(rnd.randint(1, 4)):
        lines.append(f"EMAIL;TYPE={rnd.choice(EMAIL_TYPES)}:{local}{k or ''}@{rnd.choice(domains)}")
    group = 0
    for _ in range(rnd.randint(1, 5)):
        number = f"+{rnd.randint(1, 99)} {rnd.randint(10, 999)} {rnd.randint(1000000, 9999999)}"
        if rnd.random() < 0.15:
            group += 1
            lines.append(f"item{group}.TEL:{number}")
            lines.append(f"item{group}.X-ABLabel:{esc(rnd.choice(LABELS))}")
        else:
            lines.append(f"TEL;TYPE={rnd.choice(TEL_TYPES)}:{number}")
    for kind in rnd.sample(["HOME", "WORK", "POSTAL"], rnd.randint(0, 3)):
        city, region, code, country = rnd.choice(CITIES)
        street = f"{rnd.choice(STREETS)} {rnd.randint(1, 200)}"
        if rnd.random() < 0.2:
            street += f"\nApt. {rnd.randint(1, 40)}"
        lines.append(f"ADR;TYPE={kind}:;;{esc(street)};{esc(city)};{esc(region)};{esc(code)};"
                     f"{esc(country)}")
    if rnd.random() < 0.5:
        lines.append(f"BDAY:{rnd.randint(1940, 2005)}-{rnd.randint(1, 12):02d}-"
                     f"{rnd.randint(1, 28):02d}")
    if rnd.random() < 0.3:
        lines.append(f"URL:https://www.example.com/people/{local}")
    if rnd.random() < 0.6:
        lines.append("NOTE:" + esc(" ".join(rnd.sample(NOTES, rnd.randint(1, 3)))))
    if rnd.random() < 0.5:
        lines.append("CATEGORIES:" + ",".join(esc(c) for c in
                                              rnd.sample(CATEGORIES, rnd.randint(1, 3))))
    if rnd.random() < 0.1:
        # A small JPEG-shaped blob: SOI, JFIF header, a baseline frame
        # header (96 x 96, 3 components: what a server reads for the size),
        # random bytes, EOI.
        blob = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" +
                b"\xff\xc0\x00\x11\x08\x00\x60\x00\x60\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01" +
                bytes(rnd.getrandbits(8) for _ in range(rnd.randint(600, 2400))) + b"\xff\xd9")
        lines.append("PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(blob).decode())
    lines.append(f"REV:2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T"
                 f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z")
    lines.append("END:VCARD")
    return b"".join(fold(line) + b"\r\n" for line in lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=10000, help="number of contacts (10000)")
    ap.add_argument("--seed", type=int, default=20240301, help="random seed")
    ap.add_argument("--out", help="output file (default: standard output)")
    args = ap.parse_args()
    if args.contacts < 1:
        ap.error("--contacts must be at least 1")
    rnd = random.Random(args.seed)
    data = b"".join(contact(i, rnd) for i in range(args.contacts))
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
