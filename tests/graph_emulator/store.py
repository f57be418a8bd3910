"""The mailbox store of the Graph emulator.

One Store holds every mailbox (folders, contacts with their open extensions and
photos, master categories, the Deleted Items bin), the change sequence that
delta queries read, and the server-side state behind delta tokens. One
re-entrant lock guards all of it; every public method takes it, works in
memory only (never sleeps, never does I/O) and returns JSON-ready copies, so
nothing a caller holds can change under it.

Errors are raised as GraphError, which the HTTP layer turns into Graph's error
envelope.
"""
import base64
import copy
import datetime
import hashlib
import json
import os
import random
import re
import threading
import uuid
from collections import OrderedDict

MAX_PAGE = 1000              # the largest $top / odata.maxpagesize Outlook lists accept
LIST_PAGE = 10               # Outlook's default page size for lists
DELTA_PAGE = 200             # default and cap for contact (and folder) delta pages

ID_PREFIX_EXT = "Microsoft.OutlookServices.OpenTypeExtension."
_EXT_PREFIXES = ("microsoft.outlookservices.opentypeextension.", "microsoft.graph.opentypeextension.")
_NS = uuid.UUID("6f1d0a52-3f0c-4d8a-9a43-0c2f4b0e5a10")


class GraphError(Exception):
    """An error Graph would answer with: HTTP status, error code, message."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message, code="RequestBodyRead"):
    return GraphError(400, code, message)


def not_an_object():
    return GraphError(400, "UnableToDeserializePostBody", "The request body must be a JSON object.")


def not_found(what="The specified object was not found in the store."):
    return GraphError(404, "ErrorItemNotFound", what)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the contact schema (v1.0, from the CSDL subset in openapi-contacts.yaml) ----------

# Writable properties in the order Graph's examples render them, with their kind.
CONTACT_FIELDS = OrderedDict([
    ("birthday", "datetime"), ("fileAs", "string"), ("displayName", "string"),
    ("givenName", "string"), ("initials", "string"), ("middleName", "string"),
    ("nickName", "string"), ("surname", "string"), ("title", "string"),
    ("yomiGivenName", "string"), ("yomiSurname", "string"), ("yomiCompanyName", "string"),
    ("generation", "string"), ("emailAddresses", "emails"), ("imAddresses", "strings"),
    ("jobTitle", "string"), ("companyName", "string"), ("department", "string"),
    ("officeLocation", "string"), ("profession", "string"), ("businessHomePage", "string"),
    ("assistantName", "string"), ("manager", "string"), ("homePhones", "strings"),
    ("mobilePhone", "string"), ("businessPhones", "strings"), ("homeAddress", "address"),
    ("businessAddress", "address"), ("otherAddress", "address"), ("spouseName", "string"),
    ("personalNotes", "string"), ("children", "strings"), ("categories", "strings"),
])
# Fixed slots of v1.0 collections (the Limit column of docs/mapping.md's
# table); others are unbounded.
SLOT_LIMITS = {"emailAddresses": 3, "businessPhones": 2, "homePhones": 2, "imAddresses": 3}
# Server-owned properties. A body that sets one is refused (see README: "strict").
READ_ONLY = ("id", "changeKey", "createdDateTime", "lastModifiedDateTime",
             "primaryEmailAddress", "secondaryEmailAddress", "tertiaryEmailAddress")
SERVER_FIELDS = ("id", "createdDateTime", "lastModifiedDateTime", "changeKey", "parentFolderId",
                 "primaryEmailAddress", "secondaryEmailAddress", "tertiaryEmailAddress")
SELECTABLE = set(CONTACT_FIELDS) | set(SERVER_FIELDS)
ADDRESS_KEYS = ("street", "city", "state", "countryOrRegion", "postalCode")
NAME_PARTS = ("givenName", "middleName", "surname", "generation")
FOLDER_FIELDS = ("id", "displayName", "parentFolderId")
CATEGORY_COLORS = ["none"] + [f"preset{i}" for i in range(25)]
NAVIGATION = ("photo", "singleValueExtendedProperties", "multiValueExtendedProperties")

_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?"
                       r"(Z|[+-]\d{2}:\d{2})?)?$")


def _type_error(prop, expected, value):
    return bad_request(f"Cannot convert the literal '{json.dumps(value, ensure_ascii=False)}' "
                       f"to the expected type '{expected}' for property '{prop}'.")


def _check_string(prop, value):
    if value is not None and not isinstance(value, str):
        raise _type_error(prop, "Edm.String", value)
    return value


def parse_datetime(prop, value):
    """An Edm.DateTimeOffset (a bare date is accepted, as the update example
    sends one) normalised to UTC 'YYYY-MM-DDTHH:MM:SSZ'."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(prop, "Edm.DateTimeOffset", value)
    m = _DATETIME.match(value)
    if not m or (m.group(4) is not None and m.group(8) is None):
        raise _type_error(prop, "Edm.DateTimeOffset", value)
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        dt = datetime.datetime(y, mo, d, h, mi, s, tzinfo=datetime.timezone.utc)
    except ValueError:
        raise _type_error(prop, "Edm.DateTimeOffset", value) from None
    tz = m.group(8)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        try:
            dt = dt - sign * offset
        except OverflowError:
            raise _type_error(prop, "Edm.DateTimeOffset", value) from None
    return iso(dt)


def _check_value(prop, kind, value):
    """One contact property, type-checked and normalised (raises GraphError)."""
    if kind == "string":
        return _check_string(prop, value)
    if kind == "datetime":
        return parse_datetime(prop, value)
    if kind == "strings":
        if value is None:
            return []
        if not isinstance(value, list):
            raise _type_error(prop, "Collection(Edm.String)", value)
        for v in value:
            if not isinstance(v, str):
                raise _type_error(prop, "Edm.String", v)
        return list(value)
    if kind == "emails":
        if value is None:
            return []
        if not isinstance(value, list):
            raise _type_error(prop, "Collection(microsoft.graph.emailAddress)", value)
        out = []
        for e in value:
            if not isinstance(e, dict):
                raise _type_error(prop, "microsoft.graph.emailAddress", e)
            item = OrderedDict()
            for k, v in e.items():
                if k.startswith("@") or "@" in k:
                    continue
                if k not in ("name", "address"):
                    raise bad_request(f"The property '{k}' does not exist on type "
                                      "'microsoft.graph.emailAddress'. Make sure to only use property "
                                      "names that are defined by the type.")
                item[k] = _check_string(f"{prop}.{k}", v)
            # Outlook fills a missing display name with the address.
            if item.get("address") and not item.get("name"):
                item["name"] = item["address"]
            out.append(OrderedDict([("name", item.get("name")), ("address", item.get("address"))]))
        return out
    if kind == "address":
        # None means "clear the whole address"; a dict holds the fields the
        # body names (a field's None or "" clears it; see merge_address).
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _type_error(prop, "microsoft.graph.physicalAddress", value)
        out = OrderedDict()
        for k, v in value.items():
            if k.startswith("@") or "@" in k:
                continue
            if k not in ADDRESS_KEYS:
                raise bad_request(f"The property '{k}' does not exist on type "
                                  "'microsoft.graph.physicalAddress'. Make sure to only use property "
                                  "names that are defined by the type.")
            out[k] = _check_string(f"{prop}.{k}", v)
        return out
    raise AssertionError(kind)


def merge_address(stored, patch):
    """A physicalAddress after a PATCH (OData: a complex property in a PATCH
    body is applied as a PATCH itself): named fields are set, a field set to
    null or "" is cleared, fields not named keep their value, {} changes
    nothing and null clears the address. Only non-empty fields are kept, in
    the type's order, so an address with nothing left reads back as {}."""
    if patch is None:
        return OrderedDict()
    merged = dict(stored or {})
    for k, v in patch.items():
        if v is None or v == "":
            merged.pop(k, None)
        else:
            merged[k] = v
    return OrderedDict((k, merged[k]) for k in ADDRESS_KEYS if merged.get(k))


# ---- the beta follow-up flag (api-reference/beta/resources/followupflag.md) -------------

FLAG_STATUSES = ("notFlagged", "complete", "flagged")
FLAG_DATES = ("startDateTime", "dueDateTime", "completedDateTime")
_LOCAL_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?$")


def _check_date_time_zone(prop, value):
    """A dateTimeTimeZone {dateTime, timeZone}, dateTime normalised as Graph
    writes it ("2024-05-01T09:00:00.0000000")."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(prop, "microsoft.graph.dateTimeTimeZone", value)
    out = {}
    for k, v in value.items():
        if k.startswith("@") or "@" in k:
            continue
        if k not in ("dateTime", "timeZone"):
            raise bad_request(f"The property '{k}' does not exist on type "
                              "'microsoft.graph.dateTimeTimeZone'.")
        out[k] = v
    dt, tz = out.get("dateTime"), out.get("timeZone")
    if not isinstance(dt, str) or not isinstance(tz, str) or not tz.strip():
        raise bad_request(f"{prop} needs a dateTime and a timeZone string.")
    m = _LOCAL_DATETIME.match(dt.rstrip("Z"))
    if not m:
        raise _type_error(f"{prop}.dateTime", "Edm.String (date and time)", dt)
    y, mo, d, h, mi, sec = (int(g) if g else 0 for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime.datetime(y, mo, d, h, mi, sec)
    except ValueError:
        raise _type_error(f"{prop}.dateTime", "Edm.String (date and time)", dt) from None
    frac = (m.group(7) or "").ljust(7, "0")
    return OrderedDict([("dateTime", f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}.{frac}"),
                        ("timeZone", tz)])


def validate_flag(value):
    """A followupFlag body: {field: value or None} of the fields it names
    (None for the whole flag: reset). dueDateTime needs startDateTime in the
    same body (followupflag.md: else 400 Bad Request)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error("flag", "microsoft.graph.followupFlag", value)
    out = OrderedDict()
    for k, v in value.items():
        if k.startswith("@") or "@" in k:
            continue
        if k == "flagStatus":
            if v not in FLAG_STATUSES:
                raise bad_request(f"The value '{v}' is not a valid followupFlagStatus "
                                  "(notFlagged, complete, flagged).")
            out[k] = v
        elif k in FLAG_DATES:
            out[k] = _check_date_time_zone(f"flag.{k}", v)
        else:
            raise bad_request(f"The property '{k}' does not exist on type 'microsoft.graph.followupFlag'.")
    if out.get("dueDateTime") is not None and out.get("startDateTime") is None:
        raise GraphError(400, "ErrorInvalidRequest",
                         "To set the dueDateTime of a flag, the startDateTime must be set too.")
    return out


def merge_flag(stored, patch):
    """The stored flag after a PATCH of it (merged like any complex property;
    None resets the flag)."""
    if patch is None:
        return None
    merged = OrderedDict(stored or {"flagStatus": "notFlagged"})
    for k, v in patch.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    merged.setdefault("flagStatus", "notFlagged")
    return OrderedDict((k, merged[k]) for k in ("flagStatus",) + FLAG_DATES if k in merged)


def _check_odata_type(value, expected):
    if not isinstance(value, str) or value.lstrip("#").lower() != expected.lower():
        raise bad_request(f"A type named '{value}' could not be resolved by the model; "
                          f"expected '{expected}'.")


def validate_extension(body, creating):
    """An openTypeExtension body: (extensionName or None, {custom properties})."""
    if not isinstance(body, dict):
        raise bad_request("An open extension must be a JSON object.")
    if creating and "@odata.type" not in body:
        raise bad_request("An open extension needs \"@odata.type\": "
                          "\"microsoft.graph.openTypeExtension\".")
    name = None
    props = OrderedDict()
    for k, v in body.items():
        if k == "@odata.type":
            _check_odata_type(v, "microsoft.graph.openTypeExtension")
            continue
        if k.startswith("@") or "@" in k:
            continue
        if k == "extensionName":
            if not isinstance(v, str) or not v.strip():
                raise bad_request("extensionName must be a non-empty string.")
            name = v
            continue
        if k == "id":
            raise GraphError(400, "ErrorInvalidProperty", "The property 'id' is read-only.")
        # Values are primitives or arrays of primitives (README, "How strict
        # it is").
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, (dict, list)):
                raise bad_request(f"The open extension property '{k}' must be a primitive value "
                                  "or an array of primitive values.")
        props[k] = copy.deepcopy(v)
    if creating and name is None:
        raise bad_request("The property 'extensionName' is required.")
    return name, props


def validate_contact(body, creating):
    """A contact body for POST (creating) or PATCH.

    Returns (properties, parentFolderId or None, [extension bodies]).
    Instance annotations ("@...") and property annotations ("x@odata.type")
    are ignored, as OData does; everything else must be a writable v1.0
    contact property of the right type and within its slot limit.
    """
    if not isinstance(body, dict):
        raise not_an_object()
    props = OrderedDict()
    parent = None
    extensions = []
    for key, value in body.items():
        if key.startswith("@"):
            if key == "@odata.type":
                _check_odata_type(value, "microsoft.graph.contact")
            continue
        if "@" in key:
            key = key.split("@", 1)[0]
            if key not in CONTACT_FIELDS and key not in ("extensions", "parentFolderId"):
                raise _unknown_property(key)
            continue
        if key in READ_ONLY:
            raise GraphError(400, "ErrorInvalidProperty",
                             f"The property '{key}' is read-only and cannot be set.")
        if key == "parentFolderId":
            parent = _check_string(key, value)
            continue
        if key == "extensions":
            if not creating:
                raise GraphError(400, "ErrorInvalidRequest",
                                 "Extensions cannot be updated through the contact; use "
                                 "/contacts/{id}/extensions/{extensionId}.")
            if not isinstance(value, list):
                raise _type_error(key, "Collection(microsoft.graph.extension)", value)
            extensions = [validate_extension(e, creating=True) for e in value]
            names = [n.lower() for n, _ in extensions]
            if len(set(names)) != len(names):
                raise GraphError(409, "nameAlreadyExists", "An extension with this name already exists.")
            continue
        if key in NAVIGATION:
            raise GraphError(501, "NotImplemented",
                             f"The emulator does not implement '{key}' in a contact body.")
        kind = CONTACT_FIELDS.get(key)
        if kind is None:
            raise _unknown_property(key)
        props[key] = _check_value(key, kind, value)
        limit = SLOT_LIMITS.get(key)
        if limit is not None and len(props[key]) > limit:
            name = key[0].upper() + key[1:]
            raise GraphError(400, "ErrorInvalidProperty",
                             f"The multi value property {name} has {len(props[key])} entries, "
                             f"that exceeds the max allowed value of {limit}")
    return props, parent, extensions


def _unknown_property(key):
    return bad_request(f"The property '{key}' does not exist on type 'microsoft.graph.contact'. "
                       "Make sure to only use property names that are defined by the type or mark "
                       "the type as open type.")


def computed_display_name(props):
    """What Outlook shows for a contact saved without a display name."""
    parts = [props.get(k) for k in NAME_PARTS]
    name = " ".join(p.strip() for p in parts if p and p.strip())
    if name:
        return name
    if props.get("companyName"):
        return props["companyName"]
    for e in props.get("emailAddresses") or []:
        if e.get("address"):
            return e["address"]
    return ""


def image_info(data, content_type):
    """(width, height) of a JPEG, PNG or GIF whose bytes match content_type."""
    if content_type == "image/jpeg" and data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h = int.from_bytes(data[i + 5:i + 7], "big")
                w = int.from_bytes(data[i + 7:i + 9], "big")
                return w, h
            i += 2 + length
        return None
    if content_type == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if content_type == "image/gif" and data[:4] == b"GIF8" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return None


# PidLidHasPicture (PSETID_Address, id 0x8015, PT_BOOLEAN): Outlook's flag
# that a contact has a photo, the one extended property modelled, as
# (type, namespace GUID in lower case, "id", numeric id).
HAS_PICTURE = ("Boolean", "00062004-0000-0000-c000-000000000046", "id", 0x8015)


def text_of_key(key):
    """An extended property's id as Graph writes it in answers."""
    kind, guid, form, ident = key
    if form == "id":
        return f"{kind} {{{guid}}} Id 0x{ident:04x}"
    return f"{kind} {{{guid}}} Name {ident}"


def ext_key(ext_id):
    """The lookup key of an extension given its short name or either fully
    qualified form (case-insensitive, as Exchange compares names)."""
    low = ext_id.lower()
    for prefix in _EXT_PREFIXES:
        if low.startswith(prefix):
            return low[len(prefix):]
    return low


# ---- the store -----------------------------------------------------------------------

class Mailbox:
    """One user's mailbox. Plain data: the Store's lock guards it."""

    def __init__(self, upn, readonly=False):
        self.upn = upn
        self.user_id = str(uuid.uuid5(_NS, upn.lower()))
        self.readonly = readonly
        # Stable ids derived from the UPN: the same mailbox has the same
        # default folder id across restarts and resets.
        self.root_id = _derived_id("msgfolderroot", upn)
        self.default_id = _derived_id("contacts", upn)
        self.folders = OrderedDict()       # id -> {"id","displayName","parentFolderId","seq"}
        self.contacts = OrderedDict()      # id -> contact record (see Store._new_record)
        self.categories = OrderedDict()    # id -> {"id","displayName","color"}
        self.deleted_contacts = []         # Deleted Items: records with "deletedDateTime"
        self.deleted_folders = []
        self.seq = 0                       # change sequence for delta
        self.contact_tombstones = []       # (seq, contact id, folder id, reason)
        self.folder_tombstones = []        # (seq, folder id, parent id when deleted)
        self.folder_moves = []             # (seq, folder id, parent id it left)
        self.mutable_ids = {}              # mutable ("regular") id -> immutable id
        self.folders[self.default_id] = {"id": self.default_id, "displayName": "Contacts",
                                         "parentFolderId": self.root_id, "seq": 0}

    def bump(self):
        self.seq += 1
        return self.seq


def _derived_id(kind, upn):
    digest = hashlib.sha256(f"{kind}:{upn.lower()}".encode()).digest()
    return "AAMkA" + base64.urlsafe_b64encode(digest[:29]).decode()


class Store:
    """Every mailbox, behind one lock. knob(name) reads a fault setting;
    default_upn is the mailbox an empty seed makes."""

    def __init__(self, knob, default_upn):
        self.lock = threading.RLock()
        self.knob = knob
        self.default_upn = default_upn
        self.mailboxes = OrderedDict()     # lower-case UPN -> Mailbox
        self.delta_states = OrderedDict()  # state id -> round or cursor (oldest first)
        # A fixed key: a token from an earlier run of the emulator is then
        # well formed but unknown (410, as an expired cursor), not garbage.
        self._secret = hashlib.sha256(b"graph emulator delta tokens").digest()
        self._rng = random.Random()
        self.load_seed({})

    # -- ids, seeds and mailboxes --

    def _new_id(self):
        return "AAMkA" + base64.urlsafe_b64encode(self._rng.getrandbits(328).to_bytes(41, "big")).decode()

    def _new_change_key(self):
        raw = b"\x11\x00\x00\x00\x16\x00\x00\x00" + self._rng.getrandbits(176).to_bytes(22, "big")
        return base64.b64encode(raw).decode()

    def load_seed(self, doc):
        """Replace every mailbox with the seed document (README: "Seed format").
        Raises GraphError 400 naming the first problem; the old state then
        stays."""
        if not isinstance(doc, dict):
            raise bad_request("The seed must be a JSON object.", "InvalidSeed")
        unknown = set(doc) - {"seed", "mailboxes"}
        if unknown:
            raise bad_request(f"Unknown seed keys: {sorted(unknown)}", "InvalidSeed")
        with self.lock:
            old = (self.mailboxes, self.delta_states, self._rng)
            self.mailboxes = OrderedDict()
            self.delta_states = OrderedDict()
            # Seeded ids make generated mailboxes reproducible; ids made at
            # run time come from the system's randomness.
            self._rng = random.Random(doc.get("seed", 0))
            try:
                boxes = doc.get("mailboxes") or {self.default_upn: {}}
                if not isinstance(boxes, dict):
                    raise bad_request("mailboxes must be an object keyed by UPN.", "InvalidSeed")
                for upn, spec in boxes.items():
                    self._load_mailbox(upn, spec)
            except GraphError:
                self.mailboxes, self.delta_states, self._rng = old
                raise
            self._rng = random.Random(os.urandom(16))

    def _load_mailbox(self, upn, spec):
        if not isinstance(spec, dict):
            raise bad_request(f"mailbox {upn}: must be an object", "InvalidSeed")
        unknown = set(spec) - {"readonly", "contacts", "folders", "categories"}
        if unknown:
            raise bad_request(f"mailbox {upn}: unknown keys {sorted(unknown)}", "InvalidSeed")
        if "@" not in upn or upn.lower() in self.mailboxes:
            raise bad_request(f"mailbox {upn}: bad or duplicate UPN", "InvalidSeed")
        mb = Mailbox(upn, bool(spec.get("readonly")))
        self.mailboxes[upn.lower()] = mb
        cats = spec.get("categories")
        if cats is None:
            # A new Outlook mailbox comes with the six colour categories.
            cats = [{"displayName": f"{c} category", "color": p} for c, p in
                    [("Red", "preset0"), ("Orange", "preset1"), ("Yellow", "preset3"),
                     ("Green", "preset4"), ("Blue", "preset7"), ("Purple", "preset8")]]
        for cat in cats:
            self._create_category(mb, cat)
        self._load_contacts(mb, mb.default_id, spec.get("contacts") or [])
        self._load_folders(mb, mb.default_id, spec.get("folders") or [])

    def _load_folders(self, mb, parent_id, specs):
        for spec in specs:
            if not isinstance(spec, dict):
                raise bad_request("a seed folder must be an object", "InvalidSeed")
            unknown = set(spec) - {"id", "displayName", "childFolders", "contacts"}
            if unknown:
                raise bad_request(f"seed folder: unknown keys {sorted(unknown)}", "InvalidSeed")
            folder = self._create_folder(mb, parent_id, {"displayName": spec.get("displayName")},
                                         folder_id=spec.get("id"))
            self._load_contacts(mb, folder["id"], spec.get("contacts") or [])
            self._load_folders(mb, folder["id"], spec.get("childFolders") or [])

    def _load_contacts(self, mb, folder_id, specs):
        for spec in specs:
            if not isinstance(spec, dict):
                raise bad_request("a seed contact must be an object", "InvalidSeed")
            spec = dict(spec)
            seed_only = {k: spec.pop(k) for k in ("id", "createdDateTime", "lastModifiedDateTime",
                                                  "photo_base64", "photo_content_type", "flag",
                                                  "has_picture")
                         if k in spec}
            rec = self._create_contact(mb, folder_id, spec, contact_id=seed_only.get("id"))
            if "flag" in seed_only:
                rec["flag"] = merge_flag(None, validate_flag(seed_only["flag"]))
            for k in ("createdDateTime", "lastModifiedDateTime"):
                if k in seed_only:
                    rec[k] = parse_datetime(k, seed_only[k])
            if "photo_base64" in seed_only:
                try:
                    data = base64.b64decode(seed_only["photo_base64"], validate=True)
                except (ValueError, TypeError):
                    raise bad_request("photo_base64 is not base64", "InvalidSeed") from None
                self._set_photo(rec, data, seed_only.get("photo_content_type", "image/jpeg"),
                                bump=None)
                rec["hasPicture"] = True
            # PidLidHasPicture as the seed gives it (true, false, or null:
            # not set, as by a client that does not maintain it).
            if "has_picture" in seed_only:
                if seed_only["has_picture"] not in (True, False, None):
                    raise bad_request("has_picture is true, false or null", "InvalidSeed")
                rec["hasPicture"] = seed_only["has_picture"]

    def mailbox(self, key):
        """The mailbox of a UPN (any case) or user id; 404 ErrorInvalidUser."""
        with self.lock:
            mb = self.mailboxes.get(key.lower())
            if mb is None:
                mb = next((m for m in self.mailboxes.values() if m.user_id == key.lower()), None)
            if mb is None:
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
            return mb

    def has_mailbox(self, upn):
        with self.lock:
            return upn.lower() in self.mailboxes

    def is_readonly(self, upn):
        with self.lock:
            return self.mailbox(upn).readonly

    # -- folders --

    def _folder(self, mb, folder_id):
        folder = mb.folders.get(folder_id)
        if folder is None:
            raise not_found()
        return folder

    def resolve_folder(self, upn, chain):
        """The folder id a path names: [] is the default folder, [a, b, c] is
        /contactFolders/a/childFolders/b/childFolders/c (each a child of the
        one before)."""
        with self.lock:
            mb = self.mailbox(upn)
            if not chain:
                return mb.default_id
            self._folder(mb, chain[0])
            for parent, child in zip(chain, chain[1:]):
                if self._folder(mb, child)["parentFolderId"] != parent:
                    raise not_found()
            return chain[-1]

    @staticmethod
    def _render_folder(folder):
        return OrderedDict((k, folder[k]) for k in FOLDER_FIELDS)

    def list_folders(self, upn, parent_id):
        with self.lock:
            mb = self.mailbox(upn)
            self._folder(mb, parent_id)
            return [self._render_folder(f) for f in mb.folders.values()
                    if f["parentFolderId"] == parent_id]

    def get_folder(self, upn, folder_id):
        with self.lock:
            return self._render_folder(self._folder(self.mailbox(upn), folder_id))

    def _check_folder_name(self, mb, parent_id, name, exclude=None):
        if not isinstance(name, str) or not name.strip():
            raise bad_request("The folder's displayName must be a non-empty string.",
                              "ErrorInvalidRequest")
        for f in mb.folders.values():
            if (f["parentFolderId"] == parent_id and f["id"] != exclude
                    and f["displayName"].lower() == name.lower()):
                raise GraphError(409, "ErrorFolderExists",
                                 "A folder with the specified name already exists.")

    def _create_folder(self, mb, parent_id, body, folder_id=None):
        self._folder(mb, parent_id)
        if not isinstance(body, dict):
            raise not_an_object()
        for k, v in body.items():
            if k.startswith("@"):
                if k == "@odata.type":
                    _check_odata_type(v, "microsoft.graph.contactFolder")
                continue
            if k == "parentFolderId":
                # Only the parent the URL names: creating elsewhere through
                # the body is not documented.
                if v != parent_id:
                    raise bad_request("parentFolderId in the body must name the parent the URL "
                                      "addresses.", "ErrorInvalidRequest")
                continue
            if k == "id":
                raise GraphError(400, "ErrorInvalidProperty", "The property 'id' is read-only.")
            if k not in ("displayName",):
                raise bad_request(f"The property '{k}' does not exist on type "
                                  "'microsoft.graph.contactFolder'.")
        self._check_folder_name(mb, parent_id, body.get("displayName"))
        fid = folder_id or self._new_id()
        if fid in mb.folders:
            raise bad_request(f"duplicate folder id {fid}", "InvalidSeed")
        folder = {"id": fid, "displayName": body["displayName"], "parentFolderId": parent_id,
                  "seq": mb.bump()}
        mb.folders[fid] = folder
        return folder

    def create_folder(self, upn, parent_id, body):
        with self.lock:
            return self._render_folder(self._create_folder(self.mailbox(upn), parent_id, body))

    def update_folder(self, upn, folder_id, body):
        """Rename (displayName) and/or move (parentFolderId) a folder."""
        with self.lock:
            mb = self.mailbox(upn)
            folder = self._folder(mb, folder_id)
            if not isinstance(body, dict):
                raise not_an_object()
            changes = {}
            for k, v in body.items():
                if k.startswith("@"):
                    continue
                if k not in ("displayName", "parentFolderId"):
                    if k == "id":
                        raise GraphError(400, "ErrorInvalidProperty", "The property 'id' is read-only.")
                    raise bad_request(f"The property '{k}' does not exist on type "
                                      "'microsoft.graph.contactFolder'.")
                changes[k] = v
            if folder_id == mb.default_id and changes:
                raise GraphError(400, "ErrorInvalidRequest",
                                 "The default Contacts folder cannot be renamed or moved.")
            parent = changes.get("parentFolderId", folder["parentFolderId"])
            if not isinstance(parent, str):
                raise _type_error("parentFolderId", "Edm.String", parent)
            if parent != folder["parentFolderId"]:
                self._folder(mb, parent)
                walk = parent
                while walk in mb.folders:          # no folder inside itself
                    if walk == folder_id:
                        raise bad_request("A folder cannot be moved into itself or a subfolder.",
                                          "ErrorMoveCopyFailed")
                    walk = mb.folders[walk]["parentFolderId"]
            name = changes.get("displayName", folder["displayName"])
            self._check_folder_name(mb, parent, name, exclude=folder_id)
            folder["displayName"] = name
            folder["seq"] = mb.bump()
            if parent != folder["parentFolderId"]:
                mb.folder_moves.append((folder["seq"], folder_id, folder["parentFolderId"]))
            folder["parentFolderId"] = parent
            return self._render_folder(folder)

    def delete_folder(self, upn, folder_id, permanent=False):
        """Delete a folder with its subfolders and their contacts."""
        with self.lock:
            mb = self.mailbox(upn)
            self._folder(mb, folder_id)
            if folder_id == mb.default_id:
                raise GraphError(400, "ErrorDeleteDistinguishedFolder",
                                 "Distinguished folders cannot be deleted.")
            doomed = [folder_id]
            for fid in doomed:                          # grows while we walk it
                doomed += [f["id"] for f in mb.folders.values() if f["parentFolderId"] == fid]
            stamp = iso(utc_now())
            for fid in doomed:
                for rec in [r for r in mb.contacts.values() if r["folder"] == fid]:
                    self._remove_contact(mb, rec, permanent, stamp)
                folder = mb.folders.pop(fid)
                mb.folder_tombstones.append((mb.bump(), fid, folder["parentFolderId"]))
                if not permanent:
                    mb.deleted_folders.append(dict(self._render_folder(folder), deletedDateTime=stamp))

    # -- contacts --

    def _new_record(self, mb, folder_id, contact_id=None):
        now = iso(utc_now())
        rec = {"id": contact_id or self._new_id(), "folder": folder_id, "createdDateTime": now,
               "lastModifiedDateTime": now, "changeKey": self._new_change_key(), "seq": mb.bump(),
               "props": OrderedDict(), "extensions": OrderedDict(), "photo": None, "flag": None,
               "hasPicture": None}
        for name, kind in CONTACT_FIELDS.items():
            rec["props"][name] = {"string": None, "datetime": None, "strings": [], "emails": [],
                                  "address": OrderedDict()}[kind]
        rec["props"]["fileAs"] = ""
        return rec

    # -- ids: immutable and regular --
    #
    # A record's "id" is its immutable id. Its regular ("mutable") id is
    # derived from the immutable id and the folder it is in, so it changes
    # when Outlook moves the contact (concepts/outlook-immutable-id.md).
    # Either form names the contact; a regular id of a folder the contact
    # has left names nothing.

    @staticmethod
    def _mutable_id(mb, immutable_id, folder_id):
        digest = hashlib.sha512(f"rest:{immutable_id}:{folder_id}".encode()).digest()
        mid = "AAMkA" + base64.urlsafe_b64encode(digest[:41]).decode()
        mb.mutable_ids[mid] = immutable_id
        return mid

    def _lookup(self, mb, contact_id):
        """The live record a contact id of either form names, or None."""
        rec = mb.contacts.get(contact_id)
        if rec is not None:
            return rec
        imm = mb.mutable_ids.get(contact_id)
        if imm is None:
            for r in mb.contacts.values():          # ids never handed out yet
                self._mutable_id(mb, r["id"], r["folder"])
            imm = mb.mutable_ids.get(contact_id)
        rec = mb.contacts.get(imm) if imm is not None else None
        if rec is None or self._mutable_id(mb, rec["id"], rec["folder"]) != contact_id:
            return None
        return rec

    def _out_id(self, mb, immutable_id, folder_id, immutable):
        return immutable_id if immutable else self._mutable_id(mb, immutable_id, folder_id)

    def contact_ref(self, upn, folder_id, contact_id, immutable):
        """The id of the contact a URL names, in the form the request asked for."""
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            return self._out_id(mb, rec["id"], rec["folder"], immutable)

    def _contact(self, mb, folder_id, contact_id):
        """The record of a contact (either id) in folder_id (None: any folder)."""
        rec = self._lookup(mb, contact_id)
        if rec is None or (folder_id is not None and rec["folder"] != folder_id):
            raise not_found()
        return rec

    def _touch(self, mb, rec):
        rec["changeKey"] = self._new_change_key()
        rec["lastModifiedDateTime"] = iso(utc_now())
        rec["seq"] = mb.bump()

    def _apply_birthday_quirk(self, props):
        # Field report (docs/mapping.md, "Birthdays"): a birthday comes back as an
        # instant near local noon. Off unless the birthday_noon fault is set.
        if self.knob("birthday_noon") and props.get("birthday"):
            props["birthday"] = props["birthday"][:10] + "T11:59:00Z"

    @staticmethod
    def _apply_props(rec, props):
        """Set validated properties; addresses merge (merge_address)."""
        for name, value in props.items():
            if CONTACT_FIELDS[name] == "address":
                rec["props"][name] = merge_address(rec["props"][name], value)
            else:
                rec["props"][name] = value

    def _create_contact(self, mb, folder_id, body, contact_id=None):
        self._folder(mb, folder_id)
        props, parent, extensions = validate_contact(body, creating=True)
        if parent is not None and parent != folder_id:
            raise GraphError(400, "ErrorInvalidRequest",
                             "parentFolderId must name the folder the contact is created in.")
        rec = self._new_record(mb, folder_id, contact_id)
        if rec["id"] in mb.contacts:
            raise bad_request(f"duplicate contact id {rec['id']}", "InvalidSeed")
        self._apply_props(rec, props)
        if not rec["props"].get("displayName"):
            rec["props"]["displayName"] = computed_display_name(rec["props"])
        self._apply_birthday_quirk(rec["props"])
        for name, ext in extensions:
            rec["extensions"][ext_key(name)] = {"extensionName": name, "props": ext}
        mb.contacts[rec["id"]] = rec
        return rec

    def create_contact(self, upn, folder_id, body, immutable=True):
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._create_contact(mb, folder_id, body)
            return self.render_contact(mb, rec, expand=[], immutable=immutable)

    @staticmethod
    def check_if_match(rec, if_match):
        """If-Match must be the current etag W/"changeKey", the bare or quoted
        change key, or *. Otherwise 412 ErrorIrresolvableConflict."""
        if if_match is None:
            return
        value = if_match.strip()
        if value == "*":
            return
        if value.startswith("W/"):
            value = value[2:]
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if value != rec["changeKey"]:
            raise GraphError(412, "ErrorIrresolvableConflict",
                             "The send or update operation could not be performed because the change "
                             "key passed in the request does not match the current change key for the "
                             "item.")

    def update_contact(self, upn, folder_id, contact_id, body, if_match=None, immutable=True):
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            self.check_if_match(rec, if_match)
            props, parent, _ = validate_contact(body, creating=False)
            if parent is not None:
                raise GraphError(400, "ErrorInvalidRequest",
                                 "A contact cannot be moved: parentFolderId cannot be changed.")
            self._apply_props(rec, props)
            # Outlook recomputes the display name when the name parts change
            # and the request does not say what it should be (docs/graph.md,
            # "Writing contacts": contact-update.md).
            if (any(k in props for k in NAME_PARTS) and "displayName" not in props) \
                    or not rec["props"].get("displayName"):
                rec["props"]["displayName"] = computed_display_name(rec["props"])
            if "birthday" in props:
                self._apply_birthday_quirk(rec["props"])
            self._touch(mb, rec)
            return self.render_contact(mb, rec, expand=[], immutable=immutable)

    def _remove_contact(self, mb, rec, permanent, stamp):
        del mb.contacts[rec["id"]]
        mb.contact_tombstones.append((mb.bump(), rec["id"], rec["folder"], "deleted"))
        if not permanent:
            rec = dict(rec, deletedDateTime=stamp)
            mb.deleted_contacts.append(rec)

    def delete_contact(self, upn, folder_id, contact_id, if_match=None, permanent=False):
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            self.check_if_match(rec, if_match)
            self._remove_contact(mb, rec, permanent, iso(utc_now()))

    def move_contact(self, upn, contact_id, folder_id):
        """An Outlook-side move (admin only: Graph has no contact move). The
        immutable id stays; the source folder's delta reports it removed
        ("changed"), the target's reports it new."""
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, None, contact_id)
            self._folder(mb, folder_id)
            if rec["folder"] != folder_id:
                mb.contact_tombstones.append((mb.bump(), rec["id"], rec["folder"], "changed"))
                rec["folder"] = folder_id
                self._touch(mb, rec)
            return self._state_contact(mb, rec)

    def _property_value(self, rec, key):
        """The value of an extended property as Graph gives it (a string),
        or None when the contact does not have it. Only PidLidHasPicture is
        modelled."""
        if key == HAS_PICTURE and rec["hasPicture"] is not None:
            return "true" if rec["hasPicture"] else "false"
        return None

    def render_contact(self, mb, rec, select=None, expand=None, immutable=True, props=None):
        """A contact as Graph v1.0 returns it. select: property names (id is
        always there); expand: None, or a list of extension keys to include
        ([] = all); immutable: its immutable id, else its regular id."""
        out = OrderedDict()
        out["@odata.etag"] = f'W/"{rec["changeKey"]}"'
        out["id"] = self._out_id(mb, rec["id"], rec["folder"], immutable)
        out["createdDateTime"] = rec["createdDateTime"]
        out["lastModifiedDateTime"] = rec["lastModifiedDateTime"]
        out["changeKey"] = rec["changeKey"]
        out["categories"] = list(rec["props"]["categories"])
        out["parentFolderId"] = rec["folder"]
        for name in CONTACT_FIELDS:
            if name != "categories":
                out[name] = copy.deepcopy(rec["props"][name])
        emails = rec["props"]["emailAddresses"]
        for i, name in enumerate(("primaryEmailAddress", "secondaryEmailAddress", "tertiaryEmailAddress")):
            out[name] = copy.deepcopy(emails[i]) if i < len(emails) else None
        if select:
            out = OrderedDict((k, v) for k, v in out.items()
                              if k in ("@odata.etag", "id") or k in select)
        if expand is not None:
            out["extensions"] = [self._render_ext(e) for key, e in rec["extensions"].items()
                                 if not expand or key in expand]
        if props is not None:
            out["singleValueExtendedProperties"] = [
                OrderedDict([("id", text_of_key(k)), ("value", self._property_value(rec, k))])
                for k in props if self._property_value(rec, k) is not None]
        return out

    @staticmethod
    def _render_ext(ext):
        out = OrderedDict([("@odata.type", "#microsoft.graph.openTypeExtension"),
                           ("id", ID_PREFIX_EXT + ext["extensionName"]),
                           ("extensionName", ext["extensionName"])])
        out.update(copy.deepcopy(ext["props"]))
        return out

    def get_contact(self, upn, folder_id, contact_id, select=None, expand=None, immutable=True,
                    props=None):
        with self.lock:
            mb = self.mailbox(upn)
            return self.render_contact(mb, self._contact(mb, folder_id, contact_id), select, expand,
                                       immutable, props)

    # -- beta: the follow-up flag only --

    BETA_SELECTABLE = ("id", "changeKey", "createdDateTime", "lastModifiedDateTime", "parentFolderId", "flag")

    def render_beta(self, mb, rec, select, immutable=True):
        """A contact as the emulator's beta shows it: @odata.etag, id and the
        selected properties of BETA_SELECTABLE."""
        full = OrderedDict([
            ("@odata.etag", f'W/"{rec["changeKey"]}"'),
            ("id", self._out_id(mb, rec["id"], rec["folder"], immutable)),
            ("createdDateTime", rec["createdDateTime"]), ("lastModifiedDateTime", rec["lastModifiedDateTime"]),
            ("changeKey", rec["changeKey"]), ("parentFolderId", rec["folder"]),
            ("flag", copy.deepcopy(rec["flag"]) or OrderedDict([("flagStatus", "notFlagged")]))])
        return OrderedDict((k, v) for k, v in full.items() if k in ("@odata.etag", "id") or k in select)

    def beta_get(self, upn, contact_id, select, immutable=True):
        """beta GET /contacts/{id}: any folder of the mailbox."""
        with self.lock:
            mb = self.mailbox(upn)
            return self.render_beta(mb, self._contact(mb, None, contact_id), select, immutable)

    def beta_list(self, upn, folder_id, skip, top, select, immutable=True):
        """One page of beta contacts: a folder's, or (folder_id None) every
        folder's, as beta /contacts spans the mailbox. Returns (page, total)."""
        with self.lock:
            mb = self.mailbox(upn)
            if folder_id is not None:
                self._folder(mb, folder_id)
            recs = [r for r in mb.contacts.values() if folder_id is None or r["folder"] == folder_id]
            return [self.render_beta(mb, r, select, immutable) for r in recs[skip:skip + top]], len(recs)

    def beta_update_flag(self, upn, contact_id, flag_patch, if_match=None, immutable=True):
        """beta PATCH /contacts/{id} with {"flag": ...}: a new changeKey."""
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, None, contact_id)
            self.check_if_match(rec, if_match)
            rec["flag"] = merge_flag(rec["flag"], flag_patch)
            self._touch(mb, rec)
            return self.render_beta(mb, rec, set(self.BETA_SELECTABLE), immutable)

    def list_contacts(self, upn, folder_id, query, immutable=True):
        """One page of a folder's contacts. query: {"filter": None | ("email",
        address) | ("extension", key), "orderby": None | (prop, descending),
        "skip", "top", "select", "expand"}. Returns (page, total)."""
        with self.lock:
            mb = self.mailbox(upn)
            self._folder(mb, folder_id)
            recs = [r for r in mb.contacts.values() if r["folder"] == folder_id]
            flt = query.get("filter")
            if flt and flt[0] == "email":
                want = flt[1].lower()
                recs = [r for r in recs if any((e.get("address") or "").lower() == want
                                               for e in r["props"]["emailAddresses"])]
            elif flt and flt[0] == "extension":
                recs = [r for r in recs if flt[1] in r["extensions"]]
            elif flt and flt[0] == "property":
                # Value compared as its type: a Boolean against true/false.
                want = flt[2]
                if isinstance(want, bool):
                    want = "true" if want else "false"
                recs = [r for r in recs if self._property_value(r, flt[1]) is not None
                        and (want is None or self._property_value(r, flt[1]) == want)]
            order = query.get("orderby")
            if order:
                prop, desc = order
                present = [r for r in recs if self._sort_value(r, prop) is not None]
                absent = [r for r in recs if self._sort_value(r, prop) is None]
                present.sort(key=lambda r: self._sort_value(r, prop), reverse=desc)
                recs = present + absent
            total = len(recs)
            page = recs[query["skip"]:query["skip"] + query["top"]]
            return [self.render_contact(mb, r, query.get("select"), query.get("expand"), immutable)
                    for r in page], total

    @staticmethod
    def _sort_value(rec, prop):
        if prop in ("createdDateTime", "lastModifiedDateTime"):
            return rec[prop]
        value = rec["props"].get(prop)
        return value.lower() if isinstance(value, str) and value else None

    # -- photos --

    def _set_photo(self, rec, data, content_type, bump):
        size = image_info(data, content_type)
        if size is None:
            raise GraphError(400, "ErrorInvalidImage" if data else "ErrorInvalidRequest",
                             f"The photo is not a valid {content_type} image.")
        rec["photo"] = {"data": bytes(data), "contentType": content_type, "width": size[0],
                        "height": size[1], "etag": hashlib.sha256(data).hexdigest()[:8].upper()}
        if bump is not None:
            self._touch(bump, rec)

    def put_photo(self, upn, folder_id, contact_id, data, content_type, sets_flag=True):
        # A photo upload changes the contact's changeKey (README: the photo is
        # part of the item, whose changeKey changes with every change), and
        # sets PidLidHasPicture as Outlook does, unless sets_flag is false
        # (knob photo_sets_has_picture: a server or client that does not).
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            self._set_photo(rec, data, content_type, bump=mb)
            if sets_flag:
                rec["hasPicture"] = True

    def remove_photo(self, upn, contact_id):
        """What Outlook does when its user removes a contact's picture (no
        Graph request can): no photo, PidLidHasPicture false, a new
        changeKey."""
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, None, contact_id)
            rec["photo"] = None
            rec["hasPicture"] = False
            self._touch(mb, rec)

    def get_photo(self, upn, folder_id, contact_id):
        """The contact's photo {"data","contentType","width","height","etag"}; 404 if none."""
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            if rec["photo"] is None:
                raise GraphError(404, "ErrorItemNotFound", "The photo wasn't found.")
            return dict(rec["photo"])

    # -- open extensions --
    #
    # An open extension is a MAPI named property of the contact, so writing
    # one changes the contact: a new changeKey, and delta reports it, unless
    # the ext_changes_key knob is false (README).

    def _ext_touch(self, mb, rec):
        if self.knob("ext_changes_key"):
            self._touch(mb, rec)

    def list_extensions(self, upn, folder_id, contact_id):
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            return [self._render_ext(e) for e in rec["extensions"].values()]

    def _extension(self, rec, ext_id):
        ext = rec["extensions"].get(ext_key(ext_id))
        if ext is None:
            raise not_found()
        return ext

    def get_extension(self, upn, folder_id, contact_id, ext_id):
        with self.lock:
            mb = self.mailbox(upn)
            return self._render_ext(self._extension(self._contact(mb, folder_id, contact_id), ext_id))

    def create_extension(self, upn, folder_id, contact_id, body):
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            name, props = validate_extension(body, creating=True)
            if ext_key(name) in rec["extensions"]:
                raise GraphError(409, "nameAlreadyExists", f"An extension named '{name}' already exists.")
            rec["extensions"][ext_key(name)] = {"extensionName": name, "props": props}
            self._ext_touch(mb, rec)
            return self._render_ext(rec["extensions"][ext_key(name)])

    def update_extension(self, upn, folder_id, contact_id, ext_id, body):
        """Merge: given properties are set, the others kept."""
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            ext = self._extension(rec, ext_id)
            name, props = validate_extension(body, creating=False)
            if name is not None and name.lower() != ext["extensionName"].lower():
                raise bad_request("extensionName cannot be changed.", "ErrorInvalidRequest")
            ext["props"].update(props)
            self._ext_touch(mb, rec)
            return self._render_ext(ext)

    def delete_extension(self, upn, folder_id, contact_id, ext_id):
        with self.lock:
            mb = self.mailbox(upn)
            rec = self._contact(mb, folder_id, contact_id)
            self._extension(rec, ext_id)
            del rec["extensions"][ext_key(ext_id)]
            self._ext_touch(mb, rec)

    # -- master categories --

    def _create_category(self, mb, body):
        if not isinstance(body, dict):
            raise not_an_object()
        for k in body:
            if not k.startswith("@") and k not in ("displayName", "color"):
                raise bad_request(f"The property '{k}' does not exist on type "
                                  "'microsoft.graph.outlookCategory'.")
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("displayName is required.", "ErrorInvalidRequest")
        color = body.get("color", "none")
        if color not in CATEGORY_COLORS:
            raise bad_request(f"The value '{color}' is not a valid categoryColor.")
        if any(c["displayName"].lower() == name.lower() for c in mb.categories.values()):
            raise GraphError(409, "nameAlreadyExists", f"A category named '{name}' already exists.")
        cat = OrderedDict([("id", str(uuid.UUID(int=self._rng.getrandbits(128), version=4))),
                           ("displayName", name), ("color", color)])
        mb.categories[cat["id"]] = cat
        return cat

    def list_categories(self, upn):
        with self.lock:
            return [dict(c) for c in self.mailbox(upn).categories.values()]

    def _category(self, mb, cat_id):
        cat = mb.categories.get(cat_id)
        if cat is None:
            raise not_found()
        return cat

    def get_category(self, upn, cat_id):
        with self.lock:
            return dict(self._category(self.mailbox(upn), cat_id))

    def create_category(self, upn, body):
        with self.lock:
            return dict(self._create_category(self.mailbox(upn), body))

    def update_category(self, upn, cat_id, body):
        """Only color is writable; displayName is read-only once created."""
        with self.lock:
            cat = self._category(self.mailbox(upn), cat_id)
            if not isinstance(body, dict):
                raise not_an_object()
            for k, v in body.items():
                if k.startswith("@"):
                    continue
                if k == "displayName":
                    raise GraphError(400, "ErrorInvalidProperty",
                                     "The property 'displayName' is read-only once the category exists.")
                if k != "color":
                    raise bad_request(f"The property '{k}' does not exist on type "
                                      "'microsoft.graph.outlookCategory'.")
                if v not in CATEGORY_COLORS:
                    raise bad_request(f"The value '{v}' is not a valid categoryColor.")
                cat["color"] = v
            return dict(cat)

    def delete_category(self, upn, cat_id):
        with self.lock:
            mb = self.mailbox(upn)
            self._category(mb, cat_id)
            del mb.categories[cat_id]

    # -- People: a relevance-ranked, read-only view --

    def people(self, upn):
        """Every person the mailbox knows, most relevant first: its contacts
        with an email address, plus a few directory entries."""
        with self.lock:
            mb = self.mailbox(upn)
            out = []
            for rec in mb.contacts.values():
                p = rec["props"]
                emails = [e for e in p["emailAddresses"] if e.get("address")]
                if not emails:
                    continue
                score = int(hashlib.sha256(rec["id"].encode()).hexdigest()[:4], 16) % 90 + 5
                phones = ([{"type": "business", "number": n} for n in p["businessPhones"]]
                          + [{"type": "home", "number": n} for n in p["homePhones"]]
                          + ([{"type": "mobile", "number": p["mobilePhone"]}] if p["mobilePhone"] else []))
                im = p["imAddresses"][0] if p["imAddresses"] else None
                out.append(self._person(rec["id"], p["displayName"], p["givenName"], p["surname"],
                                        p["jobTitle"], p["companyName"], p["department"],
                                        p["officeLocation"], "", im,
                                        [(e["address"], float(score)) for e in emails], phones,
                                        ("Person", "PersonalContact")))
            domain = mb.upn.split("@", 1)[1]
            extras = [("Megan Bowen", "Megan", "Bowen", "Marketing Manager", f"MeganB@{domain}", 99.0,
                       ("Person", "OrganizationUser")),
                      ("Alex Wilber", "Alex", "Wilber", "Marketing Assistant", f"AlexW@{domain}", 97.5,
                       ("Person", "OrganizationUser")),
                      ("Marketing", None, None, None, f"Marketing@{domain}", 30.0,
                       ("Group", "UnifiedGroup"))]
            for name, given, sur, job, mail, score, ptype in extras:
                out.append(self._person(mail, name, given, sur, job, None, None, None,
                                        mail if ptype[0] == "Person" else "", None, [(mail, score)],
                                        [], ptype))
            out.sort(key=lambda p: -p["scoredEmailAddresses"][0]["relevanceScore"])
            return out

    @staticmethod
    def _person(key, display, given, surname, job, company, dept, office, upn_, im, emails, phones, ptype):
        return OrderedDict([
            ("id", str(uuid.uuid5(_NS, "person:" + key))), ("displayName", display),
            ("givenName", given), ("surname", surname), ("birthday", ""), ("personNotes", ""),
            ("isFavorite", False), ("jobTitle", job), ("companyName", company), ("yomiCompany", ""),
            ("department", dept), ("officeLocation", office), ("profession", ""),
            ("userPrincipalName", upn_), ("imAddress", im),
            ("scoredEmailAddresses", [{"address": a, "relevanceScore": s,
                                       "selectionLikelihood": "notSpecified"} for a, s in emails]),
            ("phones", phones), ("postalAddresses", []), ("websites", []),
            ("personType", {"class": ptype[0], "subclass": ptype[1]})])

    # -- delta --
    #
    # A round is the list of entries one delta "sync" returns, page by page;
    # a cursor (behind a deltaLink) remembers the change sequence a round
    # started from. Both live in delta_states, which forgets the oldest when
    # it holds more than the delta_token_cap knob, and everything on
    # expire_delta: then a token is well formed but unknown -> 410.

    def _token(self, payload):
        raw = json.dumps(payload, separators=(",", ":")).encode()
        mac = hashlib.sha256(self._secret + raw).digest()[:9]
        return (base64.urlsafe_b64encode(raw).decode().rstrip("=") + "."
                + base64.urlsafe_b64encode(mac).decode())

    def _untoken(self, token):
        try:
            body, mac = token.split(".")
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if base64.urlsafe_b64decode(mac) != hashlib.sha256(self._secret + raw).digest()[:9]:
                raise ValueError("mac")
            payload = json.loads(raw)
            if not isinstance(payload, dict) or "id" not in payload:
                raise ValueError("shape")
            return payload
        except (ValueError, TypeError):
            raise GraphError(400, "BadRequest", "Badly formed token.") from None

    def _remember(self, state):
        sid = uuid.uuid4().hex
        self.delta_states[sid] = state
        cap = max(1, int(self.knob("delta_token_cap")))
        while len(self.delta_states) > cap:
            self.delta_states.popitem(last=False)
        return sid

    def expire_delta(self):
        with self.lock:
            self.delta_states.clear()

    def _new_round(self, mb, scope, since, prev):
        """The entries of a delta round of scope ("contacts", folder id) or
        ("folders", None) for changes after sequence `since` (None: all)."""
        kind, folder_id = scope
        replay = float(self.knob("delta_replay") or 0)
        if since is not None and prev is not None and replay and self._rng.random() < replay:
            since = prev                       # replay the previous round's changes too
        entries = []
        if kind == "contacts":
            for rec in mb.contacts.values():
                if rec["folder"] == folder_id and (since is None or rec["seq"] > since):
                    entries.append((rec["seq"], "item", rec["id"], None))
            if since is not None:
                entries += [(seq, "removed", cid, reason) for seq, cid, fid, reason in mb.contact_tombstones
                            if fid == folder_id and seq > since]
        else:
            # The folder_delta knob: which folders the folder delta covers.
            mode = self.knob("folder_delta")
            for f in mb.folders.values():
                if (since is None or f["seq"] > since) and self._in_folder_view(mb, f, mode):
                    entries.append((f["seq"], "item", f["id"], None))
            if since is not None:
                entries += [(seq, "removed", fid, "deleted") for seq, fid, parent in mb.folder_tombstones
                            if seq > since and (mode != "top" or parent == mb.default_id)]
                if mode == "top":
                    # A folder moved away from the top level leaves the view.
                    entries += [(seq, "removed", fid, "changed") for seq, fid, parent in mb.folder_moves
                                if seq > since and parent == mb.default_id and fid in mb.folders
                                and mb.folders[fid]["parentFolderId"] != mb.default_id]
        entries.sort(key=lambda e: e[0])
        entries = [e[1:] for e in entries]
        if replay:
            # "The same item can show up anywhere": duplicates and any order.
            for e in list(entries):
                if self._rng.random() < replay:
                    entries.insert(self._rng.randint(0, len(entries)), e)
            if self._rng.random() < replay:
                self._rng.shuffle(entries)
        return {"type": "round", "scope": [kind, folder_id], "mailbox": mb.upn.lower(),
                "entries": entries, "watermark": mb.seq, "since": since}

    @staticmethod
    def _in_folder_view(mb, folder, mode):
        """Whether contactFolders/delta shows `folder` under folder_delta
        `mode`: "all" every folder below the default one, "top" only its
        direct children, "with_default" all of them and the default folder."""
        if folder["id"] == mb.default_id:
            return mode == "with_default"
        if mode == "top":
            return folder["parentFolderId"] == mb.default_id
        return True

    def delta(self, upn, scope, link, skiptoken=None, deltatoken=None, select=None, page_size=DELTA_PAGE,
              immutable=True):
        """One delta page for scope ("contacts", folder id) or ("folders",
        None). link is the absolute URL of the delta resource (no query); the
        page's nextLink / deltaLink are built on it. immutable: the page's
        contact ids are immutable ones, else regular ones (each page follows
        its own request; the tokens do not care). Returns the response body
        (without @odata.context)."""
        with self.lock:
            mb = self.mailbox(upn)
            scope = list(scope)
            if scope[0] == "contacts":
                self._folder(mb, scope[1])
            offset = 0
            if skiptoken is not None or deltatoken:
                payload = self._untoken(skiptoken if skiptoken is not None else deltatoken)
                want = "round" if skiptoken is not None else "cursor"
                state = self.delta_states.get(payload["id"])
                if payload.get("type") != want or payload.get("scope") != scope \
                        or payload.get("mailbox") != mb.upn.lower():
                    raise GraphError(400, "BadRequest", "Badly formed token.")
                if state is None:
                    location = link + "?" + (f"$select={','.join(payload['select'])}&"
                                             if payload.get("select") else "") + "$deltatoken="
                    raise GraphError(410, "syncStateNotFound",
                                     "The sync state generation is not found. The delta token is "
                                     "expired and data must be synchronized again.",
                                     headers={"Location": location})
                select = payload.get("select")
                if want == "round":
                    round_id, rnd, offset = payload["id"], state, int(payload.get("offset", 0))
                else:
                    rnd = self._new_round(mb, scope, state["watermark"], state["since"])
                    round_id = self._remember(rnd)
            else:
                rnd = self._new_round(mb, scope, None, None)
                round_id = self._remember(rnd)
            page = rnd["entries"][offset:offset + page_size]
            body = OrderedDict()
            common = {"mailbox": mb.upn.lower(), "scope": scope, "select": select}
            end = offset + len(page)
            if end < len(rnd["entries"]):
                body["@odata.nextLink"] = link + "?$skiptoken=" + self._token(
                    dict(common, type="round", id=round_id, offset=end))
            else:
                cursor = self._remember({"type": "cursor", "watermark": rnd["watermark"],
                                         "since": rnd["since"]})
                body["@odata.deltaLink"] = link + "?$deltatoken=" + self._token(
                    dict(common, type="cursor", id=cursor))
            body["value"] = [self._render_delta_entry(mb, scope, e, select, immutable) for e in page]
            return body

    def _render_delta_entry(self, mb, scope, entry, select, immutable=True):
        what, item_id, reason = entry
        kind, folder_id = scope
        odata_type = "#microsoft.graph.contact" if kind == "contacts" else "#microsoft.graph.contactFolder"
        if what == "item":
            if kind == "contacts":
                rec = mb.contacts.get(item_id)
                if rec is not None and rec["folder"] == folder_id:
                    return self.render_contact(mb, rec, select, immutable=immutable)
                reason = "changed" if rec is not None else "deleted"
            else:
                folder = mb.folders.get(item_id)
                if folder is not None and self._in_folder_view(mb, folder, self.knob("folder_delta")):
                    out = self._render_folder(folder)
                    return OrderedDict((k, v) for k, v in out.items()
                                       if not select or k == "id" or k in select)
                reason = "deleted" if folder is None else "changed"
        if kind == "contacts":
            # A removal names the contact as the client knew it: in this folder.
            item_id = self._out_id(mb, item_id, folder_id, immutable)
        return OrderedDict([("@odata.type", odata_type), ("id", item_id),
                            ("@removed", {"reason": reason})])

    # -- admin --

    def snapshot(self):
        """Everything, for GET /_emulator/state."""
        with self.lock:
            boxes = OrderedDict()
            for mb in self.mailboxes.values():
                contacts = [self._state_contact(mb, rec) for rec in mb.contacts.values()]
                deleted = []
                for rec in mb.deleted_contacts:
                    c = self._state_contact(mb, rec)
                    c["deletedDateTime"] = rec["deletedDateTime"]
                    deleted.append(c)
                folders = [dict(self._render_folder(f), isDefault=f["id"] == mb.default_id)
                           for f in mb.folders.values()]
                boxes[mb.upn] = OrderedDict([
                    ("userId", mb.user_id), ("readonly", mb.readonly),
                    ("defaultFolderId", mb.default_id), ("folders", folders),
                    ("contacts", contacts), ("categories", [dict(c) for c in mb.categories.values()]),
                    ("deletedItems", {"contacts": deleted, "folders": list(mb.deleted_folders)})])
            return {"mailboxes": boxes}

    def _state_contact(self, mb, rec):
        """A contact in /_emulator/state: its v1.0 JSON with the immutable id,
        its current regular id as mutableId, extensions, a photo summary and
        the beta flag when it has one."""
        c = self.render_contact(mb, rec, expand=[])
        c["mutableId"] = self._mutable_id(mb, rec["id"], rec["folder"])
        c["photo"] = self._photo_summary(rec)
        c["hasPicture"] = rec["hasPicture"]
        if rec.get("flag") is not None:
            c["flag"] = copy.deepcopy(rec["flag"])
        return c

    @staticmethod
    def _photo_summary(rec):
        p = rec["photo"]
        if p is None:
            return None
        return {"sha256": hashlib.sha256(p["data"]).hexdigest(), "contentType": p["contentType"],
                "size": len(p["data"]), "width": p["width"], "height": p["height"]}
