"""Deterministic test data for the Graph emulator: contacts, folders, photos.

Everything comes from one seeded random.Random, so the same arguments give the
same mailbox (ids included) on every run and every machine. The output is a
seed document in the format POST /_emulator/reset and --seed take (see
README.md), so generated data goes through the same validation as a seed
written by hand.
"""
import base64
import random

# ---- a tiny baseline JPEG encoder ------------------------------------------------
#
# Photos must be real JPEG files (a client may hand them to a vCard reader or an
# image viewer), and the standard library has no image codec. A grayscale
# baseline JPEG whose 8x8 blocks are each one flat shade needs only DC
# coefficients, so the encoder fits in a page: quantisation table of ones, the
# standard DC Huffman table (ITU T.81 Annex K.3) and an AC table holding only
# end-of-block.

_DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_VALS = list(range(12))
_AC_BITS = [1] + [0] * 15       # one code, "0", for symbol 0x00 (EOB)
_AC_VALS = [0x00]


def _huffman_codes(bits, vals):
    """Canonical Huffman codes {symbol: (code, length)} (T.81 Annex C)."""
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            k += 1
            code += 1
        code <<= 1
    return codes


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, length):
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:      # byte stuffing: FF in entropy data is FF 00
                    self.out.append(0x00)
                self.acc = 0
                self.n = 0

    def flush(self):
        if self.n:                        # pad the last byte with one-bits
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def _segment(marker, payload):
    n = len(payload) + 2
    return bytes([0xFF, marker, n >> 8, n & 0xFF]) + payload


def tiny_jpeg(width, height, shade):
    """A valid grayscale baseline JPEG of width x height (multiples of 8).

    shade(bx, by) gives the gray level 0..255 of the 8x8 block at block
    column bx, block row by.
    """
    assert width % 8 == 0 and height % 8 == 0 and 0 < width <= 2040 and 0 < height <= 2040
    dc_codes = _huffman_codes(_DC_BITS, _DC_VALS)
    ac_codes = _huffman_codes(_AC_BITS, _AC_VALS)
    bw = _BitWriter()
    prev = 0
    for by in range(height // 8):
        for bx in range(width // 8):
            level = max(0, min(255, int(shade(bx, by))))
            dc = 8 * (level - 128)        # DCT DC term of a flat block, quantised by 1
            diff = dc - prev
            prev = dc
            cat = abs(diff).bit_length()
            code, length = dc_codes[cat]
            bw.put(code, length)
            if cat:
                bw.put(diff if diff > 0 else diff + (1 << cat) - 1, cat)
            code, length = ac_codes[0x00]
            bw.put(code, length)
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = bytes([0x00]) + bytes([1] * 64)
    sof = bytes([8, height >> 8, height & 0xFF, width >> 8, width & 0xFF, 1, 1, 0x11, 0])
    dht = (bytes([0x00]) + bytes(_DC_BITS) + bytes(_DC_VALS)
           + bytes([0x10]) + bytes(_AC_BITS) + bytes(_AC_VALS))
    sos = bytes([1, 1, 0x00, 0, 63, 0])
    return (b"\xFF\xD8" + _segment(0xE0, jfif) + _segment(0xDB, dqt) + _segment(0xC0, sof)
            + _segment(0xC4, dht) + _segment(0xDA, sos) + bw.flush() + b"\xFF\xD9")


def sample_jpeg(n=0):
    """A small distinct JPEG for photo number n (48x48, a diagonal gradient)."""
    return tiny_jpeg(48, 48, lambda bx, by: (n * 37 + bx * 29 + by * 17) % 256)


# ---- people --------------------------------------------------------------------
#
# (givenName, surname, yomiGivenName, yomiSurname) per language. Yomi names are
# only set for Japanese, as Outlook does.

_NAMES = {
    "en": [("James", "Smith"), ("Mary", "Johnson"), ("Robert", "O'Brien"), ("Patricia", "Williams"),
           ("Michael", "Brown"), ("Linda", "Davis"), ("David", "Miller"), ("Elizabeth", "Wilson"),
           ("Garth", "Fort"), ("Megan", "Bowen"), ("Isaiah", "Langer"), ("Adele", "Vance")],
    "de": [("Jürgen", "Müller"), ("Björn", "Schäfer"), ("Änne", "Groß"), ("Günther", "Weiß"),
           ("Sören", "Bäcker"), ("Käthe", "Öztürk"), ("Ulrich", "Fuß"), ("Lüder", "Hoëcker")],
    "ja": [("太郎", "山田", "タロウ", "ヤマダ"), ("花子", "佐藤", "ハナコ", "サトウ"),
           ("健", "鈴木", "ケン", "スズキ"), ("美咲", "高橋", "ミサキ", "タカハシ")],
    "el": [("Γιώργος", "Παπαδόπουλος"), ("Ελένη", "Κωνσταντίνου"), ("Νίκος", "Αλεξίου"),
           ("Μαρία", "Γεωργίου")],
    "ar": [("محمد", "العلي"), ("فاطمة", "الزهراء"), ("أحمد", "حسن"), ("ليلى", "منصور")],
    "fr": [("François", "Lefèvre"), ("Zoë", "Dupré"), ("Hélène", "Garçon"), ("Noël", "Mâcon")],
    "es": [("José", "Núñez"), ("María", "Peña"), ("Íñigo", "Ibáñez"), ("Begoña", "Muñoz")],
    "pl": [("Łukasz", "Wójcik"), ("Zofia", "Dąbrowska"), ("Paweł", "Żak"), ("Małgorzata", "Kłos")],
    "ru": [("Дмитрий", "Иванов"), ("Анна", "Смирнова"), ("Сергей", "Кузнецов")],
    "zh": [("伟", "王"), ("芳", "李"), ("秀英", "张")],
    "hi": [("राहुल", "शर्मा"), ("प्रिया", "पटेल")],
}
_LANGS = ["en", "en", "en", "de", "de", "ja", "el", "ar", "fr", "es", "pl", "ru", "zh", "hi"]

_COMPANIES = ["Contoso, Inc.", "Fabrikam", "Northwind Traders", "Adventure Works", "Tailspin Toys",
              "Wingtip Toys", "Müller & Söhne GmbH", "株式会社サンプル", "Ελληνική Εταιρεία Α.Ε.",
              "Coho Winery", "Litware", "Proseware, Inc.", "A. Datum Corporation"]
_TITLES = ["Web Marketing Manager", "Software Engineer", "Accountant", "Geschäftsführer", "CEO",
           "Head of Sales", "Nurse", "Teacher", "営業部長", "Plumber", "Architect", "Journalist"]
_DEPARTMENTS = ["Sales & Marketing", "R&D", "Finance", "Einkauf", "IT", "HR"]
_CITIES = [("Redmond", "WA", "USA", "98052"), ("München", "BY", "Germany", "80331"),
           ("東京", "", "日本", "100-0001"), ("Αθήνα", "", "Ελλάδα", "105 57"),
           ("Paris", "", "France", "75001"), ("Kraków", "", "Polska", "31-001"),
           ("Seattle", "WA", "USA", "98121"), ("Zürich", "ZH", "Schweiz", "8001")]
_STREETS = ["10 Contoso Way", "Hauptstraße 5", "1-1 Chiyoda", "Οδός Ερμού 12", "12 rue de Rivoli",
            "ul. Floriańska 3", "123 Some street\nApt 4", "Bahnhofstrasse 1"]
_NOTES = ["Met at the conference.", "Allergic to peanuts.\nPrefers email.",
          "Line one\nLine two\nLine three", "Kinder: 2\r\nHund: ja", "VIP – call before 10:00",
          "Notiz mit Umlauten: äöü ß", "メモ：会議で会った"]
_CHILDREN = ["Emma", "Noah", "Lukas", "Sakura", "Νίκη", "Zoë"]
_SPOUSES = ["Alex", "Sam", "Ute", "Yuki", "Κώστας"]
_CATEGORIES = ["Red category", "Blue category", "Family", "VIP", "Golf club", "Kunden"]

_FOLDER_NAMES = ["Family", "Work", "Clients", "Key accounts", "Friends", "Sports club", "Neighbours",
                 "Suppliers", "Doctors", "Press", "Old colleagues", "Ärzte", "Школа", "家族"]

DEFAULT_UPN = "me@contoso.example"


def _ascii_local(given, surname, n):
    """A plausible mailbox local part: the name when it is ASCII, else userN."""
    text = f"{given}.{surname}".lower().replace("'", "").replace(" ", "")
    return text if text.isascii() else f"user{n}"


def _birthday(rng, n):
    kind = n % 10
    if kind == 3:                          # Apple's "no year" birthdays use 1604
        return f"1604-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
    if kind == 7:
        return f"{rng.choice([1988, 1992, 1996, 2000])}-02-29T00:00:00Z"
    if kind in (1, 5):
        return f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
    return None


def _address(rng):
    city, state, country, code = rng.choice(_CITIES)
    return {"street": rng.choice(_STREETS), "city": city, "state": state,
            "countryOrRegion": country, "postalCode": code}


def _contact(rng, n, names_seen):
    """One generated contact (Graph contact JSON, seed form)."""
    c = {}
    if n % 23 == 11 and names_seen:
        # A duplicate display name: the same person entered twice.
        given, surname, yomi = rng.choice(names_seen)
    else:
        entry = rng.choice(_NAMES[rng.choice(_LANGS)])
        given, surname = entry[0], entry[1]
        yomi = entry[2:] if len(entry) == 4 else ()
        names_seen.append((given, surname, yomi))
    shape = n % 31
    if shape == 5:                          # company only: no person names at all
        c["companyName"] = rng.choice(_COMPANIES)
    elif shape == 9:                        # email only
        c["emailAddresses"] = [{"address": f"info{n}@example.net", "name": f"info{n}@example.net"}]
    else:
        c["givenName"] = given
        c["surname"] = surname
        if yomi:
            c["yomiGivenName"], c["yomiSurname"] = yomi
        if n % 4 == 0:
            c["companyName"] = rng.choice(_COMPANIES)
            c["jobTitle"] = rng.choice(_TITLES)
            if n % 8 == 0:
                c["department"] = rng.choice(_DEPARTMENTS)
                c["officeLocation"] = f"{rng.randint(1, 40)}/{rng.randint(1000, 3999)}"
        nmail = rng.choice([0, 1, 1, 1, 2, 2, 3])
        local = _ascii_local(given, surname, n)
        domains = ["contoso.example", "fabrikam.example", "example.org"]
        c["emailAddresses"] = [{"address": f"{local}@{domains[i]}", "name": f"{given} {surname}"}
                               for i in range(nmail)]
        if n % 3 == 0:
            c["businessPhones"] = [f"+1 425 555 {rng.randint(0, 9999):04d}"
                                   for _ in range(rng.choice([1, 1, 2]))]
        if n % 5 == 0:
            c["homePhones"] = [f"+49 89 {rng.randint(100000, 999999)}"
                               for _ in range(rng.choice([1, 2]))]
        if n % 2 == 0:
            c["mobilePhone"] = f"+44 7700 {rng.randint(100000, 999999)}"
        if n % 6 == 0:
            c["homeAddress"] = _address(rng)
        if n % 7 == 0:
            c["businessAddress"] = _address(rng)
        if n % 29 == 0:
            c["otherAddress"] = _address(rng)
        bday = _birthday(rng, n)
        if bday:
            c["birthday"] = bday
        if n % 9 == 0:
            c["personalNotes"] = rng.choice(_NOTES)
        if n % 11 == 0:
            c["children"] = rng.sample(_CHILDREN, rng.choice([1, 2]))
            c["spouseName"] = rng.choice(_SPOUSES)
        if n % 13 == 0:
            c["nickName"] = given[:3] + ("😀" if n % 26 == 0 else "")
            c["middleName"] = rng.choice(["Ann", "J.", "Maria"])
        if n % 17 == 0:
            c["imAddresses"] = [f"sip:{_ascii_local(given, surname, n)}@contoso.example"]
            c["businessHomePage"] = "https://www.contoso.example/"
        if n % 19 == 0:
            c["title"] = rng.choice(["Dr.", "Prof.", "Mr.", "Ms."])
            c["generation"] = rng.choice(["Jr.", "III"])
            c["initials"] = (given[:1] + "." + surname[:1] + ".")
    if n % 4 == 1:
        c["categories"] = rng.sample(_CATEGORIES, rng.choice([1, 1, 2]))
    if n % 20 == 3:
        # A contact written earlier by contactfs on another machine.
        c["extensions"] = [{"@odata.type": "microsoft.graph.openTypeExtension",
                            "extensionName": "org.contactfs.vcard", "version": 1,
                            "uid": f"urn:uuid:{rng.getrandbits(128):032x}"}]
    elif n % 20 == 13:
        # Someone else's open extension: a client must leave it alone.
        c["extensions"] = [{"@odata.type": "microsoft.graph.openTypeExtension",
                            "extensionName": "com.example.crm", "crmId": n, "tags": ["a", "b"]}]
    return c


def generate_seed(contacts, folders, photos, seed=1, upn=DEFAULT_UPN, has_picture=True):
    """A seed document: `contacts` contacts over the default folder and
    `folders` more (every fourth pair nested: ..., top, top, child, grandchild),
    `photos` of them with a JPEG photo, flagged by PidLidHasPicture unless
    has_picture is false (a mailbox written by a client that does not set it)."""
    rng = random.Random(seed)
    folder_nodes = []                      # flat list, each {"displayName", "childFolders", "contacts"}
    top = []
    for i in range(folders):
        base = _FOLDER_NAMES[i % len(_FOLDER_NAMES)]
        name = base if i < len(_FOLDER_NAMES) else f"{base} {i // len(_FOLDER_NAMES) + 1}"
        node = {"displayName": name, "childFolders": [], "contacts": []}
        if i % 4 in (2, 3) and folder_nodes:
            folder_nodes[-1]["childFolders"].append(node)
        else:
            top.append(node)
        folder_nodes.append(node)
    default_contacts = []
    buckets = [default_contacts] + [f["contacts"] for f in folder_nodes]
    photo_every = max(1, contacts // photos) if photos else 0
    names_seen = []
    given_photos = 0
    for n in range(contacts):
        c = _contact(rng, n, names_seen)
        if photos and n % photo_every == 0 and given_photos < photos:
            c["photo_base64"] = base64.b64encode(sample_jpeg(n)).decode("ascii")
            if not has_picture:
                c["has_picture"] = None
            given_photos += 1
        # Half of everything in the default folder, the rest spread out.
        if n % 2 == 0 or len(buckets) == 1:
            buckets[0].append(c)
        else:
            buckets[1 + (n // 2) % (len(buckets) - 1)].append(c)
    categories = [{"displayName": name, "color": color} for name, color in
                  [("Red category", "preset0"), ("Orange category", "preset1"),
                   ("Yellow category", "preset3"), ("Green category", "preset4"),
                   ("Blue category", "preset7"), ("Purple category", "preset8"),
                   ("Family", "preset5"), ("VIP", "preset15")]]
    return {"seed": seed, "mailboxes": {upn: {"contacts": default_contacts, "folders": top,
                                "categories": categories}}}
