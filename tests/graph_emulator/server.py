#!/usr/bin/env python3
"""A strict Microsoft Graph v1.0 stand-in for personal contacts.

    python3 tests/graph_emulator/server.py --port PORT [--seed FILE.json]
        [--contacts N --folders M --photos P] [--latency-ms MS] [--token TOKEN]

Prints exactly "listening on http://127.0.0.1:PORT" when ready. README.md in
this folder says what it serves, how strict it is, and how tests drive it
(admin endpoints under /_emulator/, fault knobs).

Layout: store.py keeps the mailboxes (one lock), identity.py the OAuth side,
generator.py makes test data. This file is HTTP: the request handler, the
routes of /v1.0 (one small function each), $batch, the per-mailbox
concurrency limit, fault injection, request counting and the admin API.
"""
import argparse
import base64
import datetime
import itertools
import json
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote, urlsplit

sys.dont_write_bytecode = True      # never leave __pycache__ in the source tree
import generator                                            # noqa: E402
from identity import DEFAULT_SCOPES, Identity, OAuthError, parse_scopes  # noqa: E402
from store import (CONTACT_FIELDS, DELTA_PAGE, FOLDER_FIELDS, LIST_PAGE, MAX_PAGE,  # noqa: E402
                   SELECTABLE, GraphError, Store, bad_request, ext_key, validate_flag)

DEFAULT_UPN = "me@contoso.example"
MAX_BODY = 4 * 1024 * 1024          # Graph's limit on one REST request (photos "under 4 MB")
MAX_BATCH = 20
BATCH_PARALLEL = 4                  # Outlook runs four items of a batch at a time
JSON_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"
             "charset=utf-8")
PHOTO_TYPES = ("image/jpeg", "image/png", "image/gif")


# ---- fault knobs ---------------------------------------------------------------------

class Faults:
    """The knobs POST /_emulator/faults sets (README: "Fault knobs"), and the
    random rolls made from them."""

    DEFAULTS = OrderedDict([
        ("latency_ms", 0), ("rate_429", 0.0), ("retry_after", 1), ("rate_503", 0.0),
        ("rate_drop", 0.0), ("rate_drop_after", 0.0), ("token_ttl_s", 3600), ("delta_replay", 0.0),
        ("delta_token_cap", 10000), ("next_device_flow", None), ("device_user", None),
        ("device_interval_s", 1), ("device_pending_polls", 2), ("readonly_users", []),
        ("max_concurrency", 4), ("early_grace_ms", 50), ("birthday_noon", False), ("seed", None),
        ("immutable_ids", "request"), ("folder_delta", "all"), ("ext_changes_key", True),
        ("extra_scopes", []), ("beta_patch_error", None), ("photo_sets_has_picture", True),
        ("has_picture_filter_error", None), ("drop_after_route", None), ("fail_route", None),
        ("folder_error", None), ("route_latency", None),
    ])
    CHOICES = {"immutable_ids": ("request", "always"), "folder_delta": ("all", "top", "with_default")}
    BOOLEANS = ("birthday_noon", "ext_changes_key", "photo_sets_has_picture")
    PROBABILITIES = ("rate_429", "rate_503", "rate_drop", "rate_drop_after", "delta_replay")
    NUMBERS = ("latency_ms", "retry_after", "token_ttl_s", "delta_token_cap", "device_interval_s",
               "device_pending_polls", "max_concurrency", "early_grace_ms")
    ACTIONS = ("expire_delta", "expire_tokens", "revoke_refresh_tokens")

    def __init__(self):
        self.lock = threading.Lock()
        self.values = json.loads(json.dumps(self.DEFAULTS))
        self.rng = random.Random()
        self.folder_error_seen = 0   # requests the folder_error knob matched (under lock)

    def get(self, name):
        with self.lock:
            return self.values[name]

    def take(self, name):
        """Read a one-shot knob and put it back to its default."""
        with self.lock:
            value = self.values[name]
            self.values[name] = self.DEFAULTS[name]
            return value

    def roll(self, name):
        with self.lock:
            p = self.values[name]
            return bool(p) and self.rng.random() < p

    def chance(self, p):
        with self.lock:
            return self.rng.random() < p

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.values))

    def update(self, doc):
        """Validate every key first, then apply; returns the actions asked for."""
        if not isinstance(doc, dict):
            raise bad_request("faults: expected a JSON object", "InvalidFaults")
        for k, v in doc.items():
            if k in self.ACTIONS:
                if not isinstance(v, bool):
                    raise bad_request(f"faults: {k} must be true or false", "InvalidFaults")
            elif k in self.PROBABILITIES:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    raise bad_request(f"faults: {k} must be a probability 0..1", "InvalidFaults")
            elif k in self.NUMBERS:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise bad_request(f"faults: {k} must be a number >= 0", "InvalidFaults")
            elif k == "next_device_flow":
                if v not in (None, "declined", "expired"):
                    raise bad_request("faults: next_device_flow is null, \"declined\" or \"expired\"",
                                      "InvalidFaults")
            elif k == "device_user":
                if v is not None and not isinstance(v, str):
                    raise bad_request("faults: device_user must be a UPN or null", "InvalidFaults")
            elif k == "readonly_users":
                if not isinstance(v, list) or not all(isinstance(u, str) for u in v):
                    raise bad_request("faults: readonly_users must be a list of UPNs", "InvalidFaults")
            elif k == "extra_scopes":
                if not isinstance(v, list) or not all(isinstance(u, str) for u in v):
                    raise bad_request("faults: extra_scopes must be a list of scope names", "InvalidFaults")
            elif k in self.BOOLEANS:
                if not isinstance(v, bool):
                    raise bad_request(f"faults: {k} must be true or false", "InvalidFaults")
            elif k in self.CHOICES:
                if v not in self.CHOICES[k]:
                    raise bad_request(f"faults: {k} is one of {', '.join(self.CHOICES[k])}", "InvalidFaults")
            elif k == "drop_after_route":
                if v is not None and not (isinstance(v, str) and " /" in v):
                    raise bad_request("faults: drop_after_route is null or a route as by_route names it "
                                      "(\"POST /me/contactFolders\")", "InvalidFaults")
            elif k == "fail_route":
                if v is not None and not (isinstance(v, list) and
                                          all(isinstance(x, str) and " /" in x for x in v)):
                    raise bad_request("faults: fail_route is null or a list of routes as by_route names "
                                      "them ([\"DELETE /me/contacts/{id}\"])", "InvalidFaults")
            elif k == "route_latency":
                if v is not None and not (isinstance(v, dict) and all(
                        isinstance(r, str) and " /" in r and isinstance(ms, int)
                        and not isinstance(ms, bool) and 0 <= ms <= 60000 for r, ms in v.items())):
                    raise bad_request("faults: route_latency is null or {route as by_route names it: "
                                      "milliseconds 0..60000}", "InvalidFaults")
            elif k == "beta_patch_error":
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 400 <= v <= 599):
                    raise bad_request("faults: beta_patch_error is null or an HTTP status 400..599",
                                      "InvalidFaults")
            elif k == "has_picture_filter_error":
                if v not in (None, 400, 501):
                    raise bad_request("faults: has_picture_filter_error is null, 400 or 501",
                                      "InvalidFaults")
            elif k == "folder_error":
                ok = v is None or (isinstance(v, dict) and isinstance(v.get("folder"), str)
                                   and v.get("status") in (404, 503)
                                   and all(isinstance(v.get(n, 0), int) and not isinstance(v.get(n, 0), bool)
                                           and v.get(n, 0) >= 0 for n in ("after", "count"))
                                   and set(v) <= {"folder", "status", "after", "count"})
                if not ok:
                    raise bad_request("faults: folder_error is null or {folder: ID, status: 404 or 503, "
                                      "after: N, count: M}", "InvalidFaults")
            elif k == "seed":
                if v is not None and not isinstance(v, int):
                    raise bad_request("faults: seed must be an integer or null", "InvalidFaults")
            else:
                raise bad_request(f"faults: unknown knob '{k}'", "InvalidFaults")
        with self.lock:
            for k, v in doc.items():
                if k in self.DEFAULTS:
                    self.values[k] = v
                if k == "folder_error":
                    self.folder_error_seen = 0      # counted from the knob's setting
                if k == "seed" and v is not None:
                    self.rng.seed(v)
        return [k for k in self.ACTIONS if doc.get(k)]


# ---- request counting, concurrency and early retries -------------------------------------

class Stats:
    """What GET /_emulator/requests reports, and the live in-flight count per
    mailbox that the concurrency limit uses."""

    SEQUENCE_MAX = 100000  # HTTP requests whose route is kept in arrival order

    def __init__(self, faults):
        self.lock = threading.Lock()
        self.faults = faults
        self.in_flight = Counter()        # live; never reset
        self.serving = 0                  # live: Graph requests from arrival until answered
        self.reset()

    def reset(self):
        with self.lock:
            self.by_route = Counter()
            self.by_status = Counter()
            self.total = 0
            self.batch_items = 0
            self.max_in_flight = 0
            self.max_by_mailbox = Counter()
            self.throttled = 0
            self.early_retries = 0
            self.early_details = []   # the last early requests, for a test's message
            self.dropped = 0
            self.prefer_lines_multi = 0  # requests with more than one Prefer header line
            self.sequence = []           # routes of HTTP requests as they arrived (SEQUENCE_MAX)
            self.windows = {}            # mailbox -> [(sent, until, connection id)]

    def serve(self, d):
        """A Graph request arrived (d = 1) or was answered (d = -1): "serving"
        covers what in_flight does not, a $batch envelope's own latency and
        an answer not yet written."""
        with self.lock:
            self.serving += d

    def count(self, route, kind):
        """Count a request to `route`; kind is "request" (an HTTP request to
        /v1.0), "item" (a $batch item) or "other" (identity endpoints)."""
        with self.lock:
            self.by_route[route] += 1
            if kind == "request":
                self.total += 1
                if len(self.sequence) < self.SEQUENCE_MAX:
                    self.sequence.append(route)
            elif kind == "item":
                self.batch_items += 1

    def count_status(self, status):
        with self.lock:
            self.by_status[str(status)] += 1
            if status == 429:
                self.throttled += 1

    def count_drop(self):
        with self.lock:
            self.dropped += 1

    def count_prefer_lines(self):
        with self.lock:
            self.prefer_lines_multi += 1

    def enter(self, mailbox):
        """Take an in-flight slot; False (and no slot) when the mailbox is at
        its limit. The attempt counts toward max_in_flight either way, so a
        client that sends a fifth request is seen doing it."""
        limit = int(self.faults.get("max_concurrency"))
        with self.lock:
            self.in_flight[mailbox] += 1
            n = self.in_flight[mailbox]
            self.max_in_flight = max(self.max_in_flight, n)
            self.max_by_mailbox[mailbox] = max(self.max_by_mailbox[mailbox], n)
            if n > limit:
                self.in_flight[mailbox] -= 1
                return False
            return True

    def leave(self, mailbox):
        with self.lock:
            self.in_flight[mailbox] -= 1

    def note_retry_after(self, mailbox, conn_id, sent, seconds):
        """A response told the client to leave `mailbox` alone for `seconds`
        from `sent` (when the response was written)."""
        with self.lock:
            self.windows.setdefault(mailbox, []).append((sent, sent + seconds, conn_id))

    def check_early(self, mailboxes, conn_id, arrival):
        """Count a request that arrived while a Retry-After it was given
        still ran. A request on the connection that carried the Retry-After
        was surely sent after the client read it; one on another connection
        may have been on its way already, so those count only after a grace
        period (early_grace_ms)."""
        grace = float(self.faults.get("early_grace_ms")) / 1000
        with self.lock:
            early = False
            for mb in mailboxes:
                live = [w for w in self.windows.get(mb, []) if w[1] > arrival]
                self.windows[mb] = live
                for sent, until, conn in live:
                    if sent <= arrival < until and (conn == conn_id or arrival >= sent + grace):
                        early = True
                        detail = {"same_connection": conn == conn_id,
                                  "ms_into_window": round((arrival - sent) * 1000, 1),
                                  "window_ms": round((until - sent) * 1000, 1)}
            if early:
                self.early_retries += 1
                self.early_details.append(detail)
            return early

    def snapshot(self):
        with self.lock:
            return OrderedDict([
                ("by_route", dict(sorted(self.by_route.items()))), ("by_status", dict(self.by_status)),
                ("total", self.total), ("batch_items", self.batch_items),
                ("max_in_flight", self.max_in_flight),
                ("max_in_flight_by_mailbox", dict(self.max_by_mailbox)),
                ("in_flight", {k: v for k, v in self.in_flight.items() if v}),
                ("serving", self.serving),
                ("early_retries", self.early_retries),
                ("early_details", self.early_details[-20:]), ("throttled", self.throttled),
                ("dropped", self.dropped), ("prefer_lines_multi", self.prefer_lines_multi)])

    def arrivals(self):
        with self.lock:
            return {"sequence": list(self.sequence)}


# ---- responses ------------------------------------------------------------------------

DROP = object()          # close the connection without answering


class Resp:
    """A response: JSON body (dict/list), raw bytes, or nothing."""

    def __init__(self, status, body=None, headers=None, raw=None, content_type=None):
        self.status = status
        self.body = body
        self.raw = raw
        self.content_type = content_type
        self.headers = OrderedDict(headers or {})
        self.retry_after = []            # [(mailbox, seconds)] to note once sent

    def payload(self):
        """(bytes, content type or None)."""
        if self.raw is not None:
            return self.raw, self.content_type
        if self.body is None:
            return b"", None
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8"), self.content_type or JSON_TYPE


def utc_stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def error_resp(err, request_id, client_request_id, inner=None):
    """Graph's error envelope for a GraphError."""
    inner_error = OrderedDict([("date", utc_stamp()), ("request-id", request_id),
                               ("client-request-id", client_request_id)])
    inner_error.update(inner or {})
    body = {"error": OrderedDict([("code", err.code), ("message", err.message),
                                  ("innerError", inner_error)])}
    return Resp(err.status, body, headers=err.headers)


def seconds_text(seconds):
    """Retry-After as Graph writes it: whole seconds plain ("1"), fractions
    as decimals ("2.128")."""
    return str(int(seconds)) if float(seconds) == int(seconds) else f"{seconds:g}"


# ---- one Graph request ----------------------------------------------------------------

class Call:
    """A /v1.0 (or /beta) request, top-level or a $batch item. path is
    relative to the service root ("/me/contacts/ID"); headers have
    lower-case names; version is "v1.0" or "beta"."""

    def __init__(self, method, path, query, headers, body, caller, base, version="v1.0"):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.caller = caller
        self.base = base
        self.request_id = str(uuid.uuid4())
        self.client_request_id = headers.get("client-request-id") or self.request_id
        self.upn = None                  # the mailbox addressed, once routed
        self.user_id = None
        self.prefix = None               # "/me" or "/users/{upn}" as requested
        self.applied = []                # Preference-Applied values
        self.prefer = parse_prefer(headers.get("prefer", ""))
        self.version = version
        self.scopes = set()              # the token's scopes (lower case), once checked
        self.envelope = False            # a $batch: its own headers apply to no item
        self.immutable = True            # set from the immutable_ids knob and Prefer

    def wants_immutable(self):
        return self.prefer.get("idtype", "").lower() == "immutableid"

    def link(self, tail=""):
        return f"{self.base}/{self.version}{self.path}{tail}"

    def context(self, tail):
        return f"{self.base}/{self.version}/$metadata#users('{self.user_id}')/{tail}"


def _split_outside_quotes(text, sep):
    """text split at `sep` where it is not inside a quoted-string."""
    parts, cur, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote_word(word):
    word = word.strip()
    if len(word) >= 2 and word[0] == word[-1] == '"':
        return re.sub(r"\\(.)", r"\1", word[1:-1])
    return word


def parse_prefer(value):
    """{lower-case preference: value} from a Prefer header (RFC 7240): one
    line or several joined with ", ", preferences separated by commas, values
    tokens or quoted strings, optional ";" parameters (ignored). The first
    occurrence of a preference wins (RFC 7240 §2)."""
    prefs = {}
    for element in _split_outside_quotes(value, ","):
        head = _split_outside_quotes(element, ";")[0]
        name, eq, val = head.partition("=")
        name = name.strip().lower()
        if name and name not in prefs:
            prefs[name] = _unquote_word(val) if eq else ""
    return prefs


def split_segments(path):
    """Path segments, percent-decoded; OData key syntax name('key') becomes
    two segments."""
    segs = []
    for raw in path.strip("/").split("/"):
        seg = unquote(raw)
        if not seg:
            raise GraphError(400, "BadRequest", "Empty path segment in the request URL.")
        m = re.match(r"^([A-Za-z][A-Za-z.]*)\('(.*)'\)$", seg)
        if m:
            segs += [m.group(1), m.group(2).replace("''", "'")]
        else:
            segs.append(seg)
    return segs


_ID_AFTER = {"contacts": "{id}", "contactfolders": "{id}", "childfolders": "{id}",
             "mastercategories": "{id}", "extensions": "{id}", "users": "{upn}"}
_CANON = {"contacts": "contacts", "contactfolders": "contactFolders", "childfolders": "childFolders",
          "mastercategories": "masterCategories", "extensions": "extensions", "users": "users",
          "me": "me", "outlook": "outlook", "people": "people", "photo": "photo", "delta": "delta",
          "permanentdelete": "permanentDelete", "$value": "$value", "$batch": "$batch"}


def route_name(method, segs, version="v1.0"):
    """"GET /me/contactFolders/{id}/contacts/delta": the route, ids replaced
    ("GET beta /me/contacts/{id}" under /beta)."""
    out, want_id = [], None
    for seg in segs:
        low = seg.lower()
        if want_id and not (low == "delta" and want_id == "{id}"):
            out.append(want_id)
            want_id = None
            continue
        want_id = _ID_AFTER.get(low)
        out.append(_CANON.get(low, seg))
    return f"{method} {'beta ' if version == 'beta' else ''}/" + "/".join(out)


def options(call, allowed):
    """The request's OData system query options ({lower-case name: value}),
    each checked against what this resource allows. Other query parameters
    are ignored, as Graph ignores them."""
    opts = {}
    for name, value in parse_qsl(call.query, keep_blank_values=True):
        if not name.startswith("$"):
            continue
        low = name.lower()
        if low in opts:
            raise GraphError(400, "BadRequest", f"Query option '{name}' was specified more than once.")
        if low not in allowed:
            raise GraphError(400, "BadRequest",
                             f"Query option '{name}' is not allowed for this resource.")
        opts[low] = value
    return opts


def int_option(opts, name, low, high):
    try:
        n = int(opts[name])
    except ValueError:
        raise GraphError(400, "BadRequest", f"Invalid value '{opts[name]}' for {name}.") from None
    if not low <= n <= high:
        raise GraphError(400, "ErrorInvalidUrlQuery",
                         f"The value of {name} must be between {low} and {high}.")
    return n


def parse_select(value, allowed, type_name):
    """$select as a set of canonical property names (matched case-insensitively)."""
    canon = {p.lower(): p for p in allowed}
    out = set()
    for item in value.split(","):
        name = item.strip()
        if name.lower() not in canon:
            raise GraphError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{name}' on type '{type_name}'.")
        out.add(canon[name.lower()])
    return out


_QUOTED = r"'((?:[^']|'')*)'"
_FILTER_EMAIL = re.compile(r"^\s*emailAddresses/any\(\s*(\w+)\s*:\s*\1/address\s+eq\s+" + _QUOTED
                           + r"\s*\)\s*$", re.IGNORECASE)
_FILTER_EXT = re.compile(r"^\s*extensions/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+" + _QUOTED + r"\s*\)\s*$",
                         re.IGNORECASE)
_EXPAND_EXT = re.compile(r"^\s*extensions\s*(?:\(\s*\$filter\s*=\s*id\s+eq\s+" + _QUOTED
                         + r"\s*\))?\s*$", re.IGNORECASE)


# singlevaluelegacyextendedproperty-get.md: a collection filtered on a
# single-value extended property is "Any(ep: ep/id eq '{id}' and <a test of
# ep/value>)"; the id alone ("apply an eq operator on the id property") is the
# other documented form. A value that is not a string is compared through
# cast(ep/value, Edm.<type>) (the page's path parameter table); the operators
# are eq, ne, ge, gt, le, lt for numbers and contains, startswith, eq, ne for
# strings. Only Boolean and String properties are modelled: a Boolean takes
# eq against true or false, through the cast.
_FILTER_SVEP = re.compile(r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+" + _QUOTED
                          + r"(?:\s+and\s+(.*?))?\s*\)\s*$", re.IGNORECASE)
_SVEP_CAST_BOOL = re.compile(r"^cast\(\s*(\w+)/value\s*,\s*Edm\.Boolean\s*\)\s+eq\s+(true|false)$",
                             re.IGNORECASE)
_SVEP_STRING_EQ = re.compile(r"^(\w+)/value\s+eq\s+" + _QUOTED + r"$", re.IGNORECASE)
_PROP_ID = re.compile(r"^(Boolean|String|Integer)\s+\{([0-9a-fA-F-]{36})\}\s+(Id\s+0x[0-9a-fA-F]{1,4}|Name\s+\S.*)$")


def prop_key(text):
    """An extended property id (extended-properties-overview.md, "id formats")
    as (type, guid, "id"|"name", id or name): the GUID and a numeric id match
    in any case, a name only as written (the get page: filtering the Name is
    case-sensitive). A malformed id is 400."""
    m = _PROP_ID.match(text.strip())
    if not m:
        raise GraphError(400, "ErrorInvalidProperty", f"The extended property id '{text}' is not valid.")
    kind, rest = m.group(3).split(None, 1)
    if kind.lower() == "id":
        return (m.group(1), m.group(2).lower(), "id", int(rest, 16))
    return (m.group(1), m.group(2).lower(), "name", rest)


def _svep_filter(m):
    var, key, test = m.group(1), prop_key(m.group(2).replace("''", "'")), m.group(3)
    if test is None:
        return ("property", key, None)
    b = _SVEP_CAST_BOOL.match(test.strip())
    if b and b.group(1) == var and key[0] == "Boolean":
        return ("property", key, b.group(2).lower() == "true")
    s = _SVEP_STRING_EQ.match(test.strip())
    if s and s.group(1) == var and key[0] == "String":
        return ("property", key, s.group(2).replace("''", "'"))
    raise GraphError(400, "ErrorInvalidUrlQueryFilter",
                     "The query filter contains one or more invalid nodes.")


def parse_filter(value):
    """The $filter forms Graph documents for contacts: emailAddresses/any
    (api-reference/v1.0/api/user-list-contacts.md), Extensions/any
    (opentypeextension-get.md; docs/graph.md, "Reading contacts") and
    singleValueExtendedProperties/Any (singlevaluelegacyextendedproperty-get.md)."""
    m = _FILTER_EMAIL.match(value)
    if m:
        return ("email", m.group(2).replace("''", "'"))
    m = _FILTER_EXT.match(value)
    if m:
        return ("extension", ext_key(m.group(2).replace("''", "'")))
    m = _FILTER_SVEP.match(value)
    if m:
        return _svep_filter(m)
    raise GraphError(400, "ErrorInvalidUrlQueryFilter",
                     "The query filter contains one or more invalid nodes.")


_EXPAND_SVEP = re.compile(r"^\s*singleValueExtendedProperties\s*\(\s*\$filter\s*=\s*id\s+eq\s+"
                          + _QUOTED + r"\s*\)\s*$", re.IGNORECASE)


def parse_expand(value, instance=False):
    """$expand=extensions[($filter=id eq '...')] -> {"extensions": list of
    extension keys ([] = all)}; on a single contact (instance) also
    singleValueExtendedProperties($filter=id eq '...') -> {"properties":
    [key]}, the one form singlevaluelegacyextendedproperty-get.md gives,
    and for a resource instance only. photo is accepted and adds nothing
    (README, "How strict it is")."""
    out = {}
    for item in re.split(r",(?![^(]*\))", value):
        if item.strip().lower() == "photo":
            continue
        m = _EXPAND_SVEP.match(item)
        if m and instance:
            out.setdefault("properties", []).append(prop_key(m.group(1).replace("''", "'")))
            continue
        m = _EXPAND_EXT.match(item)
        if not m:
            raise GraphError(400, "BadRequest", f"$expand of '{item.strip()}' is not supported.")
        out["extensions"] = [] if m.group(1) is None else [ext_key(m.group(1).replace("''", "'"))]
    return out


def page_size(call, opts, default, cap):
    """$top if given, else Prefer: odata.maxpagesize (capped, and echoed in
    Preference-Applied), else the default."""
    if "$top" in opts:
        return int_option(opts, "$top", 1, MAX_PAGE)
    pref = call.prefer.get("odata.maxpagesize")
    if pref:
        try:
            n = int(pref)
        except ValueError:
            return default
        if n >= 1:
            n = min(n, cap)
            call.applied.append(f"odata.maxpagesize={n}")
            return n
    return default


def next_link(call, skip):
    pairs = [(k, v) for k, v in parse_qsl(call.query, keep_blank_values=True) if k.lower() != "$skip"]
    pairs.append(("$skip", str(skip)))
    return call.link("?" + "&".join(f"{k}={quote(v, safe=',()$=:/@*')}" for k, v in pairs))


def json_body(call):
    if not call.body:
        raise GraphError(400, "UnableToDeserializePostBody", "Empty Payload. JSON content expected.")
    ctype = call.headers.get("content-type", "")
    if not ctype.lower().startswith("application/json"):
        raise GraphError(415, "UnsupportedMediaType",
                         f"Content-Type '{ctype}' is not supported; send application/json.")
    try:
        return json.loads(call.body.decode("utf-8"), object_pairs_hook=OrderedDict)
    except (UnicodeDecodeError, ValueError):
        raise GraphError(400, "UnableToDeserializePostBody",
                         "Unable to read JSON request payload. Please ensure Content-Type header "
                         "is set and payload is of valid JSON format.") from None


def entity(call, tail, obj, status=200):
    body = OrderedDict([("@odata.context", call.context(tail))])
    body.update(obj)
    return Resp(status, body)


# ---- routes: contacts ---------------------------------------------------------------------

CONTACT_LIST_OPTIONS = {"$select", "$top", "$skip", "$filter", "$expand", "$orderby", "$count"}
SORTABLE = set(CONTACT_FIELDS) - {"emailAddresses", "imAddresses", "homePhones", "businessPhones",
                                  "children", "categories", "homeAddress", "businessAddress",
                                  "otherAddress"} | {"createdDateTime", "lastModifiedDateTime"}


def list_contacts(app, call, chain):
    folder_id = app.store.resolve_folder(call.upn, chain)
    opts = options(call, CONTACT_LIST_OPTIONS)
    query = {"skip": int_option(opts, "$skip", 0, 10 ** 9) if "$skip" in opts else 0,
             "top": page_size(call, opts, LIST_PAGE, MAX_PAGE),
             "select": parse_select(opts["$select"], SELECTABLE, "microsoft.graph.contact")
             if "$select" in opts else None,
             "filter": parse_filter(opts["$filter"]) if "$filter" in opts else None,
             "expand": parse_expand(opts["$expand"]).get("extensions") if "$expand" in opts else None,
             "orderby": None}
    if query["filter"] and query["filter"][0] == "property":
        refuse = app.faults.get("has_picture_filter_error")
        if refuse == 400:
            raise GraphError(400, "ErrorInvalidUrlQueryFilter",
                             "The query filter contains one or more invalid nodes (fault knob "
                             "has_picture_filter_error).")
        if refuse == 501:
            raise GraphError(501, "notImplemented", "This filter is not supported (fault knob "
                                                    "has_picture_filter_error).")
    if "$orderby" in opts:
        m = re.match(r"^\s*(\w+)(?:\s+(asc|desc))?\s*$", opts["$orderby"], re.IGNORECASE)
        canon = {p.lower(): p for p in SORTABLE}
        if not m or m.group(1).lower() not in canon:
            raise GraphError(400, "BadRequest", f"$orderby '{opts['$orderby']}' is not supported.")
        query["orderby"] = (canon[m.group(1).lower()], (m.group(2) or "").lower() == "desc")
    page, total = app.store.list_contacts(call.upn, folder_id, query, call.immutable)
    body = OrderedDict([("@odata.context", call.context("contacts"))])
    if opts.get("$count", "").lower() == "true":
        body["@odata.count"] = total
    body["value"] = page
    if query["skip"] + len(page) < total:
        body["@odata.nextLink"] = next_link(call, query["skip"] + len(page))
    return Resp(200, body)


def create_contact(app, call, chain):
    options(call, set())
    folder_id = app.store.resolve_folder(call.upn, chain)
    contact = app.store.create_contact(call.upn, folder_id, json_body(call), call.immutable)
    return entity(call, "contacts/$entity", contact, 201)


def _contact_folder(app, call, chain):
    # /me/contacts/{id} addresses the default folder only (v1.0 semantics).
    return app.store.resolve_folder(call.upn, chain)


def get_contact(app, call, chain, contact_id):
    opts = options(call, {"$select", "$expand"})
    select = (parse_select(opts["$select"], SELECTABLE, "microsoft.graph.contact")
              if "$select" in opts else None)
    expand = parse_expand(opts["$expand"], instance=True) if "$expand" in opts else {}
    folder_id = _contact_folder(app, call, chain)
    contact = app.store.get_contact(call.upn, folder_id, contact_id, select, expand.get("extensions"),
                                    call.immutable, expand.get("properties"))
    return entity(call, "contacts/$entity", contact)


def update_contact(app, call, chain, contact_id):
    options(call, set())
    folder_id = _contact_folder(app, call, chain)
    contact = app.store.update_contact(call.upn, folder_id, contact_id, json_body(call),
                                       call.headers.get("if-match"), call.immutable)
    if call.prefer.get("return") == "minimal":
        call.applied.append("return=minimal")
        return Resp(204)
    return entity(call, "contacts/$entity", contact)


def delete_contact(app, call, chain, contact_id):
    options(call, set())
    app.store.delete_contact(call.upn, _contact_folder(app, call, chain), contact_id,
                             call.headers.get("if-match"))
    return Resp(204)


def permanent_delete_contact(app, call, chain, contact_id):
    options(call, set())
    app.store.delete_contact(call.upn, _contact_folder(app, call, chain), contact_id,
                             call.headers.get("if-match"), permanent=True)
    return Resp(204)


def contacts_delta(app, call, chain):
    if not chain:
        # contact-delta.md documents only /contactFolders/{id}/contacts/delta;
        # Graph answers a delta it does not track this way (README).
        raise GraphError(400, "BadRequest", "Unsupported request: Change tracking is not supported "
                                            "against 'microsoft.graph.contact'.")
    folder_id = app.store.resolve_folder(call.upn, chain)
    return _delta(app, call, ("contacts", folder_id), SELECTABLE, "microsoft.graph.contact", "contact")


def _delta(app, call, scope, selectable, type_name, short):
    """Shared by contact and folder delta: $select only on the first call
    (later it rides in the token), page size from odata.maxpagesize."""
    opts = options(call, {"$select", "$skiptoken", "$deltatoken"})
    skiptoken = opts.get("$skiptoken")
    deltatoken = opts.get("$deltatoken")
    if (skiptoken is not None or deltatoken) and "$select" in opts:
        raise GraphError(400, "BadRequest", "$select is only allowed on the initial delta request; "
                                            "it is kept in the token.")
    select = parse_select(opts["$select"], selectable, type_name) if "$select" in opts else None
    size = page_size(call, {}, DELTA_PAGE, DELTA_PAGE)
    body = app.store.delta(call.upn, scope, call.link(), skiptoken=skiptoken, deltatoken=deltatoken,
                           select=sorted(select) if select else None, page_size=size,
                           immutable=call.immutable)
    out = OrderedDict([("@odata.context", f"{call.base}/v1.0/$metadata#Collection({short})")])
    out.update(body)
    return Resp(200, out)


# ---- routes: photos -------------------------------------------------------------------------

def get_photo_meta(app, call, chain, contact_id):
    options(call, {"$select"})
    folder_id = _contact_folder(app, call, chain)
    photo = app.store.get_photo(call.upn, folder_id, contact_id)
    ref = app.store.contact_ref(call.upn, folder_id, contact_id, call.immutable)
    return Resp(200, OrderedDict([
        ("@odata.context", call.context(f"contacts('{ref}')/photo/$entity")),
        ("@odata.mediaContentType", photo["contentType"]),
        ("@odata.mediaEtag", f'"{photo["etag"]}"'),
        ("id", f"{photo['width']}X{photo['height']}"), ("width", photo["width"]),
        ("height", photo["height"])]))


def get_photo_value(app, call, chain, contact_id):
    options(call, set())
    photo = app.store.get_photo(call.upn, _contact_folder(app, call, chain), contact_id)
    return Resp(200, raw=photo["data"], content_type=photo["contentType"])


def put_photo(app, call, chain, contact_id):
    options(call, set())
    ctype = call.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in PHOTO_TYPES:
        raise GraphError(400, "ErrorInvalidRequest",
                         f"Content-Type '{ctype}' is not a supported image type (image/jpeg, "
                         "image/png, image/gif).")
    if not call.body:
        raise GraphError(400, "ErrorInvalidRequest", "The photo body is empty.")
    if len(call.body) >= MAX_BODY:
        # profilephoto-update.md: a REST request is limited to 4 MB, so a
        # photo must be under 4 MB.
        raise GraphError(413, "RequestEntityTooLarge", "The photo is 4 MB or more.")
    app.store.put_photo(call.upn, _contact_folder(app, call, chain), contact_id, call.body, ctype,
                        app.faults.get("photo_sets_has_picture"))
    return Resp(200)


def refuse_photo_delete(app, call, chain, contact_id):
    raise GraphError(405, "ErrorInvalidRequest",
                     "The delete operation supports only user or group photos, but not Outlook "
                     "contact nor Teams photos.")


# ---- routes: open extensions ------------------------------------------------------------------

def _ext_entity(app, call, chain, contact_id, ext, status=200):
    ref = app.store.contact_ref(call.upn, _contact_folder(app, call, chain), contact_id, call.immutable)
    return entity(call, f"contacts('{ref}')/extensions/$entity", ext, status)


def list_extensions(app, call, chain, contact_id):
    options(call, set())
    folder_id = _contact_folder(app, call, chain)
    exts = app.store.list_extensions(call.upn, folder_id, contact_id)
    ref = app.store.contact_ref(call.upn, folder_id, contact_id, call.immutable)
    return Resp(200, OrderedDict([("@odata.context", call.context(f"contacts('{ref}')/extensions")),
                                  ("value", exts)]))


def create_extension(app, call, chain, contact_id):
    options(call, set())
    ext = app.store.create_extension(call.upn, _contact_folder(app, call, chain), contact_id, json_body(call))
    return _ext_entity(app, call, chain, contact_id, ext, 201)


def get_extension(app, call, chain, contact_id, ext_id):
    options(call, set())
    return _ext_entity(app, call, chain, contact_id, app.store.get_extension(
        call.upn, _contact_folder(app, call, chain), contact_id, ext_id))


def update_extension(app, call, chain, contact_id, ext_id):
    options(call, set())
    return _ext_entity(app, call, chain, contact_id, app.store.update_extension(
        call.upn, _contact_folder(app, call, chain), contact_id, ext_id, json_body(call)))


def delete_extension(app, call, chain, contact_id, ext_id):
    options(call, set())
    app.store.delete_extension(call.upn, _contact_folder(app, call, chain), contact_id, ext_id)
    return Resp(204)


# ---- routes: folders ------------------------------------------------------------------------

def list_folders(app, call, chain):
    opts = options(call, {"$select", "$top", "$skip", "$count"})
    parent = app.store.resolve_folder(call.upn, chain)
    select = parse_select(opts["$select"], FOLDER_FIELDS, "microsoft.graph.contactFolder") \
        if "$select" in opts else None
    skip = int_option(opts, "$skip", 0, 10 ** 9) if "$skip" in opts else 0
    top = page_size(call, opts, LIST_PAGE, MAX_PAGE)
    folders = app.store.list_folders(call.upn, parent)
    page = [OrderedDict((k, v) for k, v in f.items() if not select or k == "id" or k in select)
            for f in folders[skip:skip + top]]
    tail = "contactFolders" if not chain else f"contactFolders('{parent}')/childFolders"
    body = OrderedDict([("@odata.context", call.context(tail))])
    if opts.get("$count", "").lower() == "true":
        body["@odata.count"] = len(folders)
    body["value"] = page
    if skip + len(page) < len(folders):
        body["@odata.nextLink"] = next_link(call, skip + len(page))
    return Resp(200, body)


def create_folder(app, call, chain):
    options(call, set())
    parent = app.store.resolve_folder(call.upn, chain)
    folder = app.store.create_folder(call.upn, parent, json_body(call))
    return entity(call, "contactFolders/$entity", folder, 201)


def get_folder(app, call, chain):
    opts = options(call, {"$select"})
    folder = app.store.get_folder(call.upn, app.store.resolve_folder(call.upn, chain))
    if "$select" in opts:
        select = parse_select(opts["$select"], FOLDER_FIELDS, "microsoft.graph.contactFolder")
        folder = OrderedDict((k, v) for k, v in folder.items() if k == "id" or k in select)
    return entity(call, "contactFolders/$entity", folder)


def update_folder(app, call, chain):
    # Moving a folder by PATCHing parentFolderId is emulator behaviour
    # (documented as writable; Graph unverified, see README).
    options(call, set())
    folder_id = app.store.resolve_folder(call.upn, chain)
    folder = app.store.update_folder(call.upn, folder_id, json_body(call))
    return entity(call, "contactFolders/$entity", folder)


def delete_folder(app, call, chain):
    options(call, set())
    app.store.delete_folder(call.upn, app.store.resolve_folder(call.upn, chain))
    return Resp(204)


def permanent_delete_folder(app, call, chain):
    options(call, set())
    app.store.delete_folder(call.upn, app.store.resolve_folder(call.upn, chain), permanent=True)
    return Resp(204)


def folders_delta(app, call):
    return _delta(app, call, ("folders", None), FOLDER_FIELDS, "microsoft.graph.contactFolder",
                  "contactFolder")


# ---- routes: categories, people, the user ------------------------------------------------------

def list_categories(app, call):
    options(call, set())
    return Resp(200, OrderedDict([("@odata.context", call.context("outlook/masterCategories")),
                                  ("value", app.store.list_categories(call.upn))]))


def create_category(app, call):
    options(call, set())
    return entity(call, "outlook/masterCategories/$entity",
                  app.store.create_category(call.upn, json_body(call)), 201)


def get_category(app, call, cat_id):
    options(call, set())
    return entity(call, "outlook/masterCategories/$entity", app.store.get_category(call.upn, cat_id))


def update_category(app, call, cat_id):
    options(call, set())
    return entity(call, "outlook/masterCategories/$entity",
                  app.store.update_category(call.upn, cat_id, json_body(call)))


def delete_category(app, call, cat_id):
    options(call, set())
    app.store.delete_category(call.upn, cat_id)
    return Resp(204)


PERSON_FIELDS = ("id", "displayName", "givenName", "surname", "birthday", "personNotes", "isFavorite",
                 "jobTitle", "companyName", "yomiCompany", "department", "officeLocation", "profession",
                 "userPrincipalName", "imAddress", "scoredEmailAddresses", "phones", "postalAddresses",
                 "websites", "personType")


def list_people(app, call):
    for name in ("$search", "$filter", "$orderby"):
        if any(k.lower() == name for k, _ in parse_qsl(call.query)):
            raise GraphError(501, "NotImplemented", f"The emulator does not implement {name} on people.")
    opts = options(call, {"$top", "$skip", "$select"})
    top = int_option(opts, "$top", 1, MAX_PAGE) if "$top" in opts else 10
    skip = int_option(opts, "$skip", 0, 10 ** 9) if "$skip" in opts else 0
    select = (parse_select(opts["$select"], PERSON_FIELDS, "microsoft.graph.person")
              if "$select" in opts else None)
    people = app.store.people(call.upn)[skip:skip + top]
    if select:
        people = [OrderedDict((k, v) for k, v in p.items() if k == "id" or k in select) for p in people]
    # No nextLink: page with $top and $skip, as the People docs do.
    return Resp(200, OrderedDict([("@odata.context", call.context("people")), ("value", people)]))


def get_user(app, call):
    options(call, {"$select"})
    mb = app.store.mailbox(call.upn)
    return Resp(200, OrderedDict([("@odata.context", f"{call.base}/v1.0/$metadata#users/$entity"),
                                  ("id", mb.user_id), ("displayName", mb.upn.split("@")[0]),
                                  ("userPrincipalName", mb.upn), ("mail", mb.upn)]))


# ---- routes: beta (the contact's follow-up flag only) ----------------------------------------
#
# Graph has contact.flag only in beta (api-reference/beta/resources/contact.md,
# followupflag.md). The emulator's beta serves that and nothing else: other
# beta routes, properties and query options are 501 (or 400 in a body).

BETA_ONLY = "This emulator models only the contact's flag in beta."
BETA_KNOWN = SELECTABLE | {"flag", "phones", "postalAddresses", "websites", "gender", "isFavorite",
                           "weddingAnniversary"}


BETA_REFUSALS = {400: "ErrorInvalidRequest", 403: "ErrorAccessDenied", 404: "ErrorItemNotFound",
                 409: "ErrorIrresolvableConflict", 503: "serviceNotAvailable"}


def _beta_select(opts):
    if "$select" not in opts:
        raise GraphError(501, "NotImplemented", BETA_ONLY + " Ask for it with $select=flag.")
    names = parse_select(opts["$select"], BETA_KNOWN, "microsoft.graph.contact")
    other = names - set(Store.BETA_SELECTABLE)
    if other:
        raise GraphError(501, "NotImplemented",
                         f"{BETA_ONLY} $select may name only {', '.join(Store.BETA_SELECTABLE)}; "
                         f"not {', '.join(sorted(other))}.")
    return names


def beta_list_contacts(app, call, chain):
    """beta GET /contacts (every folder: beta /contacts spans the mailbox) or
    /contactFolders/{id}/contacts, paged like v1.0 lists."""
    opts = options(call, {"$select", "$top", "$skip", "$count"})
    select = _beta_select(opts)
    folder_id = None if chain is None else app.store.resolve_folder(call.upn, chain)
    skip = int_option(opts, "$skip", 0, 10 ** 9) if "$skip" in opts else 0
    top = page_size(call, opts, LIST_PAGE, MAX_PAGE)
    page, total = app.store.beta_list(call.upn, folder_id, skip, top, select, call.immutable)
    body = OrderedDict([("@odata.context", call.context(f"contacts({','.join(sorted(select))})"))])
    if opts.get("$count", "").lower() == "true":
        body["@odata.count"] = total
    body["value"] = page
    if skip + len(page) < total:
        body["@odata.nextLink"] = next_link(call, skip + len(page))
    return Resp(200, body)


def beta_get_contact(app, call, contact_id):
    opts = options(call, {"$select"})
    select = _beta_select(opts)
    return entity(call, f"contacts({','.join(sorted(select))})/$entity",
                  app.store.beta_get(call.upn, contact_id, select, call.immutable))


def beta_update_contact(app, call, contact_id):
    """beta PATCH /contacts/{id} whose body sets only flag."""
    options(call, set())
    body = json_body(call)
    if not isinstance(body, dict):
        raise GraphError(400, "UnableToDeserializePostBody", "The request body must be a JSON object.")
    names = [k for k in body if not k.startswith("@") and "@" not in k]
    if names != ["flag"]:
        raise GraphError(400, "ErrorInvalidRequest",
                         f"{BETA_ONLY} A beta PATCH body may set only flag"
                         + (f", not {', '.join(n for n in names if n != 'flag')}." if names else "."))
    flag = validate_flag(body["flag"])
    refused = app.faults.get("beta_patch_error")
    if refused:
        # A refusal of the flag alone (knob beta_patch_error): nothing changes.
        raise GraphError(refused, BETA_REFUSALS.get(refused, "generalException"),
                         "The flag cannot be set on this contact (fault knob beta_patch_error).")
    contact = app.store.beta_update_flag(call.upn, contact_id, flag,
                                         call.headers.get("if-match"), call.immutable)
    if call.prefer.get("return") == "minimal":
        call.applied.append("return=minimal")
        return Resp(204)
    return entity(call, "contacts/$entity", contact)


def match_beta_route(rest):
    """The Route for a beta path after /me or /users/{upn}."""
    low = [s.lower() for s in rest]
    if low[:1] == ["contacts"]:
        if len(rest) == 1:
            return Route({"GET": beta_list_contacts}, (None,))
        if len(rest) == 2 and low[1] != "delta":
            return Route({"GET": beta_get_contact, "PATCH": beta_update_contact}, (rest[1],))
    if low[:1] == ["contactfolders"] and len(rest) >= 3:
        chain, i = [rest[1]], 2
        while i + 1 < len(rest) and low[i] == "childfolders":
            chain.append(rest[i + 1])
            i += 2
        if low[i:] == ["contacts"]:
            return Route({"GET": beta_list_contacts}, (chain,))
    raise GraphError(501, "NotImplemented", BETA_ONLY + " Not modelled: /" + "/".join(rest) + ".")


# ---- routing -------------------------------------------------------------------------------

class Route:
    def __init__(self, methods, params, outlook=True, kind=None):
        self.methods = methods           # {"GET": handler, ...}
        self.params = params
        self.outlook = outlook           # counts toward the mailbox's concurrency
        self.kind = kind                 # "people" / "categories": permission checks


def _unknown_segment(seg):
    return GraphError(400, "BadRequest", f"Resource not found for the segment '{seg}'.")


def _contact_routes(chain, tail):
    low = [s.lower() for s in tail]
    if not tail:
        return Route({"GET": list_contacts, "POST": create_contact}, (chain,))
    if low == ["delta"]:
        return Route({"GET": contacts_delta}, (chain,))
    cid, rest, rlow = tail[0], tail[1:], low[1:]
    if not rest:
        return Route({"GET": get_contact, "PATCH": update_contact, "DELETE": delete_contact}, (chain, cid))
    if rlow == ["permanentdelete"]:
        return Route({"POST": permanent_delete_contact}, (chain, cid))
    if rlow == ["photo"]:
        return Route({"GET": get_photo_meta, "DELETE": refuse_photo_delete}, (chain, cid))
    if rlow == ["photo", "$value"]:
        return Route({"GET": get_photo_value, "PUT": put_photo, "PATCH": put_photo,
                      "DELETE": refuse_photo_delete}, (chain, cid))
    if rlow == ["extensions"]:
        return Route({"GET": list_extensions, "POST": create_extension}, (chain, cid))
    if len(rest) == 2 and rlow[0] == "extensions":
        return Route({"GET": get_extension, "PATCH": update_extension, "DELETE": delete_extension},
                     (chain, cid, rest[1]))
    raise _unknown_segment(rest[0] if rlow[0] not in ("photo", "extensions") else rest[-1])


def match_route(rest):
    """The Route for the path after /me or /users/{upn}."""
    low = [s.lower() for s in rest]
    if not rest:
        return Route({"GET": get_user}, (), outlook=False)
    if low[0] == "contacts":
        return _contact_routes([], rest[1:])
    if low[0] == "contactfolders":
        if len(rest) == 1:
            return Route({"GET": list_folders, "POST": create_folder}, ([],))
        if low[1:] == ["delta"]:
            return Route({"GET": folders_delta}, ())
        chain, i = [rest[1]], 2
        while i + 1 < len(rest) and low[i] == "childfolders":
            chain.append(rest[i + 1])
            i += 2
        tail, tlow = rest[i:], low[i:]
        if not tail:
            return Route({"GET": get_folder, "PATCH": update_folder, "DELETE": delete_folder}, (chain,))
        if tlow == ["childfolders"]:
            return Route({"GET": list_folders, "POST": create_folder}, (chain,))
        if tlow == ["permanentdelete"]:
            return Route({"POST": permanent_delete_folder}, (chain,))
        if tlow[0] == "contacts":
            return _contact_routes(chain, tail[1:])
        raise _unknown_segment(tail[0])
    if low[:2] == ["outlook", "mastercategories"]:
        if len(rest) == 2:
            return Route({"GET": list_categories, "POST": create_category}, (), kind="categories")
        if len(rest) == 3:
            return Route({"GET": get_category, "PATCH": update_category, "DELETE": delete_category},
                         (rest[2],), kind="categories")
    if low == ["people"]:
        return Route({"GET": list_people}, (), kind="people")
    raise _unknown_segment(rest[-1] if low[0] in ("outlook",) else rest[0])


# ---- the application --------------------------------------------------------------------------

class App:
    """Everything a request needs: store, identity, faults, stats."""

    def __init__(self, default_upn=DEFAULT_UPN, verbose=False):
        self.default_upn = default_upn
        self.verbose = verbose
        self.faults = Faults()
        self.stats = Stats(self.faults)
        self.store = Store(self.faults.get, default_upn)
        self.identity = Identity(self.faults, default_upn)

    def readonly(self, upn):
        return self.store.is_readonly(upn) or \
            upn.lower() in (u.lower() for u in self.faults.get("readonly_users"))

    def resolve(self, call, segs):
        """Route a call: sets call.upn/prefix/user_id, returns (Route, handler)."""
        head = segs[0].lower()
        if head == "me":
            if not self.store.has_mailbox(call.caller):
                raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                                 "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
            mb, call.prefix, rest = self.store.mailbox(call.caller), "/me", segs[1:]
        elif head == "users" and len(segs) > 1:
            mb, call.prefix, rest = self.store.mailbox(segs[1]), f"/users/{segs[1]}", segs[2:]
        else:
            raise _unknown_segment(segs[0])
        call.upn, call.user_id = mb.upn, mb.user_id
        route = match_beta_route(rest) if call.version == "beta" else match_route(rest)
        handler = route.methods.get(call.method)
        if handler is None:
            if call.version == "beta":
                raise GraphError(501, "NotImplemented", f"{BETA_ONLY} Not modelled: {call.method}.")
            raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
        return route, handler

    def has_scope(self, call, scope):
        extra = {s.lower() for s in self.faults.get("extra_scopes")}
        return scope.lower() in call.scopes | extra

    def check_permission(self, call, route):
        """What the token may not do with another user's mailbox (README)."""
        if call.caller is None or call.upn.lower() == call.caller.lower():
            return
        if route.kind == "people" and not self.has_scope(call, "People.Read.All"):
            # people-insights-overview.md: /users/{id}/people needs People.Read.All.
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again. "
                                                       "(/users/{id}/people needs People.Read.All.)")
        if route.kind == "categories":
            # outlookuser-list-mastercategories.md: MailboxSettings.Read(Write)
            # only; no .Shared permission reaches another user's categories.
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def execute(self, call, conn_id=None, arrival=None):
        """Run one call: route, concurrency slot, latency, faults, handler.
        Top-level calls (conn_id given) are checked for early retries and may
        be dropped; $batch items are not. Returns a Resp or DROP."""
        top_level = conn_id is not None
        try:
            segs = split_segments(call.path)
            self.stats.count(route_name(call.method, segs, call.version), "request" if top_level else "item")
            route, handler = self.resolve(call, segs)
        except GraphError as err:
            return self.finish(call, error_resp(err, call.request_id, call.client_request_id))
        # The id form follows this request's own Prefer header (README).
        call.immutable = self.faults.get("immutable_ids") == "always" or call.wants_immutable()
        mailbox = call.upn.lower()
        if top_level:
            self.stats.check_early([mailbox], conn_id, arrival)
        if not route.outlook:
            return self.finish(call, self.dispatch(call, route, handler))
        if not self.stats.enter(mailbox):
            return self.finish(call, self.throttled(call, "ApplicationThrottled",
                                                    "Application is over its MailboxConcurrency limit."))
        try:
            latency = float(self.faults.get("latency_ms")) / 1000
            latency += self.route_latency(call, segs)
            if latency:
                time.sleep(latency)
            if self.faults.roll("rate_429"):
                return self.finish(call, self.throttled(call, "TooManyRequests", "Please retry again later."))
            if self.faults.roll("rate_503") or self.fails_route(call, segs):
                return self.finish(call, self.unavailable(call))
            failed = self.folder_failure(call)
            if failed:
                return self.finish(call, failed)
            drop = top_level and self.faults.roll("rate_drop")
            if drop and self.faults.chance(0.5):
                return DROP                             # lost before it was applied
            drop = drop or (top_level and self.faults.roll("rate_drop_after"))
            drop = drop or (top_level and self.drops_route(call, segs))
            resp = self.dispatch(call, route, handler)
            return DROP if drop else self.finish(call, resp)   # else: applied, answer lost
        finally:
            self.stats.leave(mailbox)

    def folder_failure(self, call):
        """The folder_error knob: the contact delta requests of one folder
        (its first and its nextLink pages), after the first `after` of
        them, answer `status` `count` times; a 503 says Retry-After: 0, so a
        client that honours it tries again at once."""
        knob = self.faults.get("folder_error")
        if not knob or call.method != "GET":
            return None
        needle = "/contactfolders/%s/contacts/delta" % knob["folder"].lower()
        if needle not in call.path.lower():
            return None
        with self.faults.lock:
            self.faults.folder_error_seen += 1
            n = self.faults.folder_error_seen
        if not knob.get("after", 0) < n <= knob.get("after", 0) + knob.get("count", 0):
            return None
        if knob["status"] == 404:
            return error_resp(GraphError(404, "ErrorItemNotFound",
                                         "The specified object was not found in the store."),
                              call.request_id, call.client_request_id)
        return error_resp(GraphError(503, "serviceNotAvailable", "The service is temporarily unavailable. "
                                     "Please retry after a delay.", {"Retry-After": "0"}),
                          call.request_id, call.client_request_id)

    def fails_route(self, call, segs):
        """Whether knob fail_route names this call's route (a request or a
        $batch item): it is answered 503 without being carried out."""
        want = self.faults.get("fail_route")
        return bool(want) and route_name(call.method, segs, call.version) in want

    def drops_route(self, call, segs):
        """Whether knob drop_after_route names this call's route: its answer
        is lost after it was carried out."""
        want = self.faults.get("drop_after_route")
        return bool(want) and route_name(call.method, segs, call.version) == want

    def route_latency(self, call, segs):
        """Seconds knob route_latency adds for this call's route."""
        want = self.faults.get("route_latency")
        return want.get(route_name(call.method, segs, call.version), 0) / 1000 if want else 0.0

    def dispatch(self, call, route, handler):
        try:
            self.check_permission(call, route)
            if call.method != "GET" and self.readonly(call.upn):
                raise GraphError(403, "ErrorAccessDenied",
                                 "Access is denied. Check credentials and try again.")
            return handler(self, call, *route.params)
        except GraphError as err:
            return error_resp(err, call.request_id, call.client_request_id)
        except Exception:                                   # a bug here, not the client's fault
            traceback.print_exc(file=sys.stderr)
            return error_resp(GraphError(500, "generalException", "An internal server error occurred."),
                              call.request_id, call.client_request_id)

    def throttled(self, call, code, message):
        seconds = self.faults.get("retry_after")
        resp = error_resp(GraphError(429, code, message, {"Retry-After": seconds_text(seconds)}),
                          call.request_id, call.client_request_id,
                          inner={"code": "429", "message": "Please retry after", "status": "429"}
                          if code == "TooManyRequests" else None)
        resp.retry_after.append((call.upn.lower(), seconds))
        return resp

    def unavailable(self, call):
        # Graph's 503 may or may not say when to come back.
        seconds = self.faults.get("retry_after")
        headers = {"Retry-After": seconds_text(seconds)} if self.faults.chance(0.5) else {}
        resp = error_resp(GraphError(503, "serviceNotAvailable",
                                     "The service is temporarily unavailable. Please retry after a delay.",
                                     headers), call.request_id, call.client_request_id)
        if headers:
            resp.retry_after.append((call.upn.lower(), seconds))
        return resp

    def finish(self, call, resp):
        if call.wants_immutable() and not call.envelope:
            # Honoured for this request (never for a $batch envelope, whose
            # headers do not reach its items).
            call.applied.append('IdType="ImmutableId"')
        if call.applied:
            resp.headers["Preference-Applied"] = ", ".join(call.applied)
        self.stats.count_status(resp.status)
        return resp

    # -- $batch --

    def batch(self, outer, conn_id, arrival):
        """POST /$batch: up to 20 requests, four at a time, dependsOn
        honoured (a failed dependency gives 424), responses in random order.
        The batch is answered 200 whatever its items' statuses."""
        outer.envelope = True
        try:
            items = self._batch_items(outer)
        except GraphError as err:
            return self.finish(outer, error_resp(err, outer.request_id, outer.client_request_id))
        mailboxes = set()
        for item in items:
            if isinstance(item["call"], Call):
                segs = item["call"].path.strip("/").split("/")
                if segs and segs[0].lower() == "me":
                    mailboxes.add(outer.caller.lower())
                elif len(segs) > 1 and segs[0].lower() == "users":
                    mailboxes.add(unquote(segs[1]).lower())
        self.stats.check_early(sorted(mailboxes), conn_id, arrival)
        latency = float(self.faults.get("latency_ms")) / 1000
        if latency:
            time.sleep(latency)
        drop = self.faults.roll("rate_drop")
        if drop and self.faults.chance(0.5):
            return DROP
        drop = drop or self.faults.roll("rate_drop_after")
        drop = drop or any(isinstance(item["call"], Call) and
                           self.drops_route(item["call"], split_segments(item["call"].path))
                           for item in items)
        results = self._run_batch(items)
        if drop:
            return DROP
        responses = []
        resp = Resp(200)
        for item in items:
            r = results[item["id"]]
            responses.append(self._batch_response(item["id"], r))
            resp.retry_after += r.retry_after
        random.shuffle(responses)                           # order is not guaranteed
        resp.body = {"responses": responses}
        return self.finish(outer, resp)

    def _batch_items(self, outer):
        doc = json_body(outer)
        reqs = doc.get("requests") if isinstance(doc, dict) else None
        if not isinstance(reqs, list) or not reqs:
            raise GraphError(400, "BadRequest", "The batch body must have a non-empty \"requests\" array.")
        if len(reqs) > MAX_BATCH:
            raise GraphError(400, "BadRequest",
                             f"Number of batch request steps exceeds the maximum of {MAX_BATCH}.")
        items, ids = [], set()
        for r in reqs:
            if not isinstance(r, dict):
                raise GraphError(400, "BadRequest", "Each batch request must be a JSON object.")
            rid, method, url = r.get("id"), r.get("method"), r.get("url")
            if not isinstance(rid, str) or not rid or rid in ids:
                raise GraphError(400, "BadRequest", "Each batch request needs a unique string id.")
            ids.add(rid)
            if not isinstance(method, str) or method.upper() not in ("GET", "POST", "PATCH", "PUT", "DELETE"):
                raise GraphError(400, "BadRequest", f"Request {rid}: invalid method.")
            if not isinstance(url, str) or not url:
                raise GraphError(400, "BadRequest", f"Request {rid}: missing url.")
            headers = r.get("headers") or {}
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise GraphError(400, "BadRequest", f"Request {rid}: headers must map names to strings.")
            headers = {k.lower(): v for k, v in headers.items()}
            deps = r.get("dependsOn") or []
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                raise GraphError(400, "BadRequest", f"Request {rid}: dependsOn must be a list of ids.")
            body = b""
            if "body" in r and r["body"] is not None:
                ctype = headers.get("content-type")
                if not ctype:
                    raise GraphError(400, "BadRequest", f"Write request id : {rid} does not "
                                                        "contain Content-Type header or body.")
                if isinstance(r["body"], str):              # binary bodies travel as base64
                    text = r["body"]
                    if "-" in text or "_" in text:          # json-batching.md: "base64 URL-encoded"
                        text = text.replace("-", "+").replace("_", "/")
                    try:
                        body = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
                    except ValueError:
                        raise GraphError(400, "BadRequest", f"Request {rid}: body is not base64.") from None
                else:
                    body = json.dumps(r["body"], ensure_ascii=False).encode("utf-8")
            if url.lower().startswith(("http:", "https:")):
                call = GraphError(400, "BadRequest", "Invalid request URL: batch URLs must be relative.")
            else:
                path, _, query = ("/" + url.lstrip("/")).partition("?")
                call = Call(method.upper(), path, query, headers, body, outer.caller, outer.base,
                            outer.version)
                call.scopes = outer.scopes
                if path.strip("/").lower() == "$batch":
                    call = GraphError(400, "BadRequest", "Nested batch requests are not supported.")
            items.append({"id": rid, "deps": deps, "call": call})
        for item in items:
            for d in item["deps"]:
                if d not in ids or d == item["id"]:
                    raise GraphError(400, "BadRequest",
                                     f"Request {item['id']}: dependsOn names unknown id '{d}'.")
        self._check_acyclic(items)
        return items

    @staticmethod
    def _check_acyclic(items):
        deps = {i["id"]: i["deps"] for i in items}
        done, active = set(), set()

        def visit(n):
            if n in done:
                return
            if n in active:
                raise GraphError(400, "BadRequest", "dependsOn forms a cycle.")
            active.add(n)
            for d in deps[n]:
                visit(d)
            active.discard(n)
            done.add(n)
        for n in deps:
            visit(n)

    def _run_batch(self, items):
        results = {}
        pending = list(items)
        cond = threading.Condition()

        def worker():
            while True:
                with cond:
                    while True:
                        if not pending:
                            return
                        item = next((i for i in pending if all(d in results for d in i["deps"])), None)
                        if item is not None:
                            pending.remove(item)
                            break
                        cond.wait()
                    failed = [d for d in item["deps"] if results[d].status >= 400]
                call = item["call"]
                if isinstance(call, GraphError):
                    resp = error_resp(call, str(uuid.uuid4()), str(uuid.uuid4()))
                    self.stats.count_status(resp.status)
                elif failed:
                    resp = self.finish(call, error_resp(
                        GraphError(424, "FailedDependency",
                                   f"Request {failed[0]} failed: failed dependency."),
                        call.request_id, call.client_request_id))
                else:
                    resp = self.execute(call)
                with cond:
                    results[item["id"]] = resp
                    cond.notify_all()

        threads = [threading.Thread(target=worker, daemon=True)
                   for _ in range(min(BATCH_PARALLEL, len(items)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    @staticmethod
    def _batch_response(rid, resp):
        data, ctype = resp.payload()
        headers = OrderedDict()
        if ctype:
            headers["Content-Type"] = ctype
        headers.update(resp.headers)
        if not data:
            body = None
        elif resp.raw is not None:
            body = base64.b64encode(data).decode("ascii")
        else:
            body = resp.body
        return OrderedDict([("id", rid), ("status", resp.status), ("headers", headers), ("body", body)])

    # -- identity platform --

    def oauth(self, method, tenant, endpoint, headers, body):
        self.stats.count(f"{method} /{{tenant}}/oauth2/v2.0/{endpoint}", "other")
        if method != "POST":
            return Resp(405, {"error": "invalid_request", "error_description": "Use POST."})
        try:
            if not headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
                raise OAuthError("invalid_request", "The request body must be "
                                 "application/x-www-form-urlencoded.", 900144)
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            result = (self.identity.device_code(tenant, form) if endpoint == "devicecode"
                      else self.identity.token(tenant, form))
            return Resp(200, result, headers={"Cache-Control": "no-store"},
                        content_type="application/json; charset=utf-8")
        except OAuthError as err:
            return Resp(err.status, err.body(), headers={"Cache-Control": "no-store"},
                        content_type="application/json; charset=utf-8")
        except UnicodeDecodeError:
            return Resp(400, {"error": "invalid_request", "error_description": "The body is not UTF-8."})

    # -- admin --

    def admin(self, method, path, body):
        """The /_emulator/ endpoints (no token needed; see README)."""
        try:
            doc = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError):
            return Resp(400, {"error": {"code": "BadRequest", "message": "admin body: invalid JSON"}})
        try:
            if (method, path) == ("GET", "/_emulator/state"):
                return Resp(200, self.store.snapshot())
            if (method, path) == ("POST", "/_emulator/reset"):
                if isinstance(doc, dict) and "generate" in doc:
                    g = doc["generate"]
                    doc = generator.generate_seed(int(g.get("contacts", 0)), int(g.get("folders", 0)),
                                                  int(g.get("photos", 0)), int(g.get("seed", 1)),
                                                  g.get("upn", self.default_upn),
                                                  bool(g.get("has_picture", True)))
                self.store.load_seed(doc)
                return Resp(200, {"mailboxes": list(self.store.snapshot()["mailboxes"])})
            if (method, path) == ("GET", "/_emulator/requests"):
                return Resp(200, self.stats.snapshot())
            if (method, path) == ("GET", "/_emulator/requests/sequence"):
                return Resp(200, self.stats.arrivals())
            if (method, path) == ("POST", "/_emulator/requests/reset"):
                self.stats.reset()
                return Resp(200, self.stats.snapshot())
            if (method, path) == ("GET", "/_emulator/faults"):
                return Resp(200, self.faults.snapshot())
            if (method, path) == ("POST", "/_emulator/faults"):
                for action in self.faults.update(doc):
                    {"expire_delta": self.store.expire_delta, "expire_tokens": self.identity.expire_all,
                     "revoke_refresh_tokens": self.identity.revoke_refresh_tokens}[action]()
                return Resp(200, self.faults.snapshot())
            if (method, path) == ("POST", "/_emulator/tokens"):
                ttl = doc.get("ttl_s")
                scopes = doc.get("scopes")
                if scopes is not None and not (isinstance(scopes, str) or (
                        isinstance(scopes, list) and all(isinstance(x, str) for x in scopes))):
                    raise ValueError("scopes: a list of scope names or one space-separated string")
                token, ttl = self.identity.issue(doc.get("upn", self.default_upn),
                                                 None if ttl is None else float(ttl),
                                                 scopes=parse_scopes(scopes) if scopes is not None else None)
                return Resp(200, {"access_token": token, "expires_in": ttl})
            if (method, path) == ("POST", "/_emulator/remove_photo"):
                self.store.remove_photo(doc.get("upn", self.default_upn), doc["contactId"])
                return Resp(200, {})
            if (method, path) == ("POST", "/_emulator/move"):
                return Resp(200, self.store.move_contact(doc.get("upn", self.default_upn),
                                                         doc["contactId"], doc["folderId"]))
        except GraphError as err:
            return Resp(err.status, {"error": {"code": err.code, "message": err.message}})
        except (KeyError, TypeError, ValueError) as err:
            return Resp(400, {"error": {"code": "BadRequest", "message": f"admin request: {err!r}"}})
        return Resp(404, {"error": {"code": "NotFound", "message": f"no admin route {method} {path}"}})


# ---- HTTP ----------------------------------------------------------------------------------

_OAUTH = re.compile(r"^/([^/]+)/oauth2/v2\.0/(devicecode|token)$")
_connection_ids = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    """One connection (HTTP/1.1 keep-alive): reads each request, hands it to
    the App, writes the answer with an exact Content-Length."""

    protocol_version = "HTTP/1.1"
    timeout = 300                        # an idle keep-alive connection is closed after this

    def version_string(self):
        return "GraphEmulator/1.0"

    def setup(self):
        super().setup()
        # Headers and body leave in two writes: with Nagle's algorithm the
        # body waited for the client's delayed ACK, adding about 40 ms to
        # every answer (seen in scripts/bench as 45 ms per $batch at
        # "0 ms" latency). Graph's front ends show nothing of the kind.
        if self.request.family in (socket.AF_INET, socket.AF_INET6):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn_id = next(_connection_ids)

    def log_message(self, fmt, *args):
        if self.server.app.verbose:
            sys.stderr.write(f"{self.address_string()} [{self.log_date_time_string()}] {fmt % args}\n")

    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def do_PATCH(self):
        self.serve()

    def do_PUT(self):
        self.serve()

    def do_DELETE(self):
        self.serve()

    def read_body(self):
        """The request body; GraphError 411/413/400 when it cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise GraphError(400, "BadRequest", "Malformed chunked body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline(1024)
                if len(data) >= MAX_BODY:
                    self.close_connection = True
                    raise GraphError(413, "RequestEntityTooLarge", "The request is larger than 4 MB.")
            return bytes(data)
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command in ("POST", "PATCH", "PUT"):
                raise GraphError(411, "LengthRequired", "A Content-Length header is required.")
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise GraphError(400, "BadRequest", "Invalid Content-Length.") from None
        if n >= MAX_BODY:
            # Read (and drop) what a client is likely still sending, so it
            # gets to see the 413 rather than a reset connection.
            if n <= 4 * MAX_BODY:
                self.rfile.read(n)
            else:
                self.close_connection = True
            raise GraphError(413, "RequestEntityTooLarge", "The request is larger than 4 MB.")
        return self.rfile.read(n)

    def serve(self):
        app = self.server.app
        arrival = time.monotonic()
        url = urlsplit(self.path)
        headers = {}
        for name, value in self.headers.items():
            low = name.lower()
            headers[low] = f"{headers[low]}, {value}" if low in headers else value
        base = f"http://{self.headers.get('Host') or '127.0.0.1:%d' % self.server.server_address[1]}"
        version = next((v for v in ("v1.0", "beta") if url.path == "/" + v or url.path.startswith(f"/{v}/")),
                       None)
        root = len(version) + 1 if version else 0
        call = Call(self.command, url.path[root:] or "/", url.query, headers, b"", None, base,
                    version or "v1.0")
        try:
            call.body = self.read_body()
        except GraphError as err:
            return self.send(error_resp(err, call.request_id, call.client_request_id), call)
        oauth = _OAUTH.match(url.path)
        if url.path.startswith("/_emulator/"):
            resp = app.admin(self.command, url.path, call.body)
        elif oauth:
            resp = app.oauth(self.command, oauth.group(1), oauth.group(2), headers, call.body)
        elif version:
            if len(self.headers.get_all("Prefer") or []) > 1:
                app.stats.count_prefer_lines()
            app.stats.serve(1)
            try:
                self.send(self.serve_graph(app, call, arrival), call)
            finally:
                app.stats.serve(-1)
            return
        else:
            resp = error_resp(GraphError(400, "BadRequest", "Invalid version: use /v1.0 or /beta."),
                              call.request_id, call.client_request_id)
        self.send(resp, call)

    def serve_graph(self, app, call, arrival):
        upn, scopes, problem = app.identity.check(call.headers.get("authorization"))
        if problem:
            try:
                app.stats.count(route_name(call.method, split_segments(call.path), call.version), "request")
            except GraphError:
                app.stats.count(f"{call.method} (bad path)", "request")
            challenge = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                         'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"')
            err = GraphError(401, "InvalidAuthenticationToken", problem, {"WWW-Authenticate": challenge})
            return app.finish(call, error_resp(err, call.request_id, call.client_request_id))
        call.caller = upn
        call.scopes = scopes
        if call.path.strip("/").lower() == "$batch":
            app.stats.count(f"{call.method} {'beta ' if call.version == 'beta' else ''}/$batch", "request")
            if call.method != "POST":
                err = GraphError(405, "ErrorInvalidRequest", "Use POST for $batch.")
                return app.finish(call, error_resp(err, call.request_id, call.client_request_id))
            return app.batch(call, self.conn_id, arrival)
        return app.execute(call, self.conn_id, arrival)

    def send(self, resp, call):
        if resp is DROP:
            self.server.app.stats.count_drop()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        data, ctype = resp.payload()
        # A Retry-After window opens as the answer starts out: the client
        # cannot have read it earlier, and timing it after the flush would
        # charge the client for this thread being descheduled (seen on a
        # loaded CI machine: "early" retries 5 ms before the end of a window).
        sent = time.monotonic()
        self.send_response(resp.status)
        self.send_header("request-id", call.request_id)
        self.send_header("client-request-id", call.client_request_id)
        if ctype:
            self.send_header("Content-Type", ctype)
        if resp.status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if resp.status not in (204, 304):
            self.wfile.write(data)
        self.wfile.flush()
        for mailbox, seconds in resp.retry_after:
            self.server.app.stats.note_retry_after(mailbox, self.conn_id, sent, float(seconds))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False               # do not wait for idle keep-alive connections on exit
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) and not self.app.verbose:
            return                       # a client went away; nothing to report
        super().handle_error(request, client_address)


def build_seed(args):
    doc = {}
    if args.seed:
        with open(args.seed, encoding="utf-8") as f:
            doc = json.load(f)
    if args.contacts or args.folders or args.photos:
        gen = generator.generate_seed(args.contacts, args.folders, args.photos, args.gen_seed, args.user)
        boxes = doc.setdefault("mailboxes", {})
        mine = boxes.setdefault(args.user, {})
        ours = gen["mailboxes"][args.user]
        mine["contacts"] = (mine.get("contacts") or []) + ours["contacts"]
        mine["folders"] = (mine.get("folders") or []) + ours["folders"]
        mine.setdefault("categories", ours["categories"])
        doc.setdefault("seed", gen["seed"])
    return doc


def main(argv=None):
    parser = argparse.ArgumentParser(description="A strict Microsoft Graph v1.0 emulator for contacts.")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--seed", help="seed file (JSON, see README)")
    parser.add_argument("--contacts", type=int, default=0, help="generate N contacts")
    parser.add_argument("--folders", type=int, default=0, help="... in M more folders (some nested)")
    parser.add_argument("--photos", type=int, default=0, help="... P of them with a photo")
    parser.add_argument("--gen-seed", type=int, default=1, help="random seed of the generator")
    parser.add_argument("--latency-ms", type=float, default=0, help="initial latency_ms fault")
    parser.add_argument("--token", action="append", default=[], help="an access token that never expires")
    parser.add_argument("--token-scopes", default=None,
                        help="the scopes of the --token tokens (space- or comma-separated; default: "
                             + " ".join(DEFAULT_SCOPES) + ")")
    parser.add_argument("--user", default=DEFAULT_UPN, help="the default user (/me of --token)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    app = App(args.user, args.verbose)
    try:
        app.store.load_seed(build_seed(args))
    except (OSError, ValueError, GraphError) as err:
        sys.stderr.write(f"graph emulator: bad seed: {getattr(err, 'message', err)}\n")
        return 2
    app.faults.update({"latency_ms": args.latency_ms})
    scopes = parse_scopes(args.token_scopes) if args.token_scopes is not None else None
    for token in args.token:
        app.identity.add_token(token, args.user, scopes=scopes)

    server = Server(("127.0.0.1", args.port), Handler)
    server.app = app

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
