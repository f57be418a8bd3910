"""Shared helpers for contactfs's Python tests.

Paths are relative to the repository: nothing here knows where the checkout
lives. The program under test is $CONTACTFS_BIN (default build/contactfs; a
relative path is taken from the repository root), so scripts/test can run the
same tests against the plain and the sanitizer build.
"""
import base64
import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
# The shared test data lives beside the repository, never inside it.
TESTDATA = REPO.parent / "shared" / "testdata"

EX_USAGE = 64
EX_DATAERR = 65

# Properties the issue requires the round trip to keep, value for value.
KEY_PROPS = ("FN", "N", "EMAIL", "TEL", "ADR", "ORG", "TITLE", "BDAY", "NOTE", "URL",
             "CATEGORIES")


def contactfs_bin():
    p = Path(os.environ.get("CONTACTFS_BIN", "build/contactfs"))
    return p if p.is_absolute() else REPO / p


def valgrind_wanted():
    return os.environ.get("CONTACTFS_VALGRIND") == "1"


@pytest.fixture(autouse=True)
def _need_binary():
    """A missing binary is a failure (a broken build), never a skip."""
    b = contactfs_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(f"contactfs binary not found at {b}: build it first (scripts/setup) "
                    "or point CONTACTFS_BIN at it")


def run_convert(args, input_bytes=None, valgrind=False, timeout=120, env=None):
    """Run `contactfs convert ARGS` with input_bytes on stdin.

    Returns the CompletedProcess (stdout and stderr as bytes). With valgrind,
    the program runs under memcheck and valgrind's own errors make the exit
    status 99.
    """
    cmd = [str(contactfs_bin()), "convert", *[str(a) for a in args]]
    if valgrind:
        cmd = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
               "--errors-for-leak-kinds=definite"] + cmd
        timeout *= 10
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(cmd, input=input_bytes if input_bytes is not None else b"",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=full_env)


def convert_ok(args, input_bytes=None, **kw):
    """run_convert that must succeed with some output; returns stdout."""
    r = run_convert(args, input_bytes, **kw)
    assert r.returncode == 0, (f"contactfs convert {' '.join(map(str, args))} exited "
                               f"{r.returncode}: {r.stderr.decode(errors='replace')}")
    assert r.stdout.strip(), f"contactfs convert {' '.join(map(str, args))}: exit 0, no output"
    return r.stdout


# ---- reading vCards with python3-vobject ------------------------------------

_QP_PROP = re.compile(r"^[^:]*quoted-printable[^:]*:", re.IGNORECASE)


def join_qp_soft_breaks(text):
    """Join quoted-printable soft line breaks ("=" at the end of a line).

    vobject 0.9.6 with allowQP=True joins such lines with a newline that its
    content-line regex then does not cross, so everything after the first
    soft break is lost. Joining them first is the meaning QP gives them and
    lets vobject read 2.1 files correctly.
    """
    lines = re.split(r"(\r\n|\r|\n)", text)
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        sep = lines[i + 1] if i + 1 < len(lines) else ""
        i += 2
        if _QP_PROP.match(line):
            while line.endswith("=") and i < len(lines):
                line = line[:-1] + lines[i]
                sep = lines[i + 1] if i + 1 < len(lines) else ""
                i += 2
        out.append(line + sep)
    return "".join(out)


def _prepare(data, our_output):
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    if our_output:
        return text
    # vobject does not take a lone CR (old Mac) or CR CR LF as a line end;
    # vCards in the wild use both and the issue requires reading them.
    text = re.sub(r"\r*\n|\r", "\r\n", text)
    return join_qp_soft_breaks(text)


def vobject_read(data, our_output=False):
    """All cards in data (bytes) as vobject components.

    vobject reads text, not bytes: input that is not UTF-8 is not something
    vobject reads (UnicodeDecodeError). Inputs get their QP soft breaks joined
    (see join_qp_soft_breaks); our own output never has any, is read as is
    and must also pass vobject's validation. Raises on anything vobject
    cannot read.
    """
    import vobject

    return list(vobject.readComponents(_prepare(data, our_output), validate=our_output))


def vobject_lines(data, our_output=False):
    """The cards in data as lists of vobject ContentLines, values undecoded.

    vobject does the reading (unfolding, groups, parameters, 2.1 quoted-
    printable and CHARSET) but its value decoding is lossy: for any text
    property it does not know it keeps only the first comma-separated value
    (VCardTextBehavior.decode), so "NOTE:a, b" reads as "a". normalise()
    decodes the values itself instead. Also checks that vobject reads the
    same number of cards (vobject_read raises where vobject cannot read).
    """
    import io

    from vobject.base import getLogicalLines, textLineToContentLine

    text = _prepare(data, our_output)
    ncards = len(vobject_read(data, our_output))
    cards, cur, depth = [], None, 0
    for line, n in getLogicalLines(io.StringIO(text)):
        cl = textLineToContentLine(line, n)
        if cl.name == "BEGIN":
            depth += 1
            if depth == 1:
                cur = []
            continue
        if cl.name == "END":
            depth -= 1
            if depth == 0:
                cards.append(cur)
            continue
        if depth == 1:
            cur.append(cl)
    assert len(cards) == ncards, f"vobject reads {ncards} cards, lines give {len(cards)}"
    return cards


def unescape_text(s):
    """Undo vCard text escapes: \\n \\N \\, \\; \\\\ (RFC 2426/6350), \\:
    (not an RFC escape, but Apple and Gmail write "http\\://..." and mean a
    colon) and \\" (neither, but Apple's and Gmail's exports write it for a
    quote); leave others as they are."""
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "nN,;:\\\"":
            out.append("\n" if s[i + 1] in "nN" else s[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def split_unescaped(s, sep):
    """Split s at each sep not preceded by an escaping backslash."""
    parts, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _text(s):
    # A line break is a line break: 2.1's QP "=0D=0A" and 3.0's "\n" are
    # the same text.
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _structured(s, ncomps):
    comps = [",".join(_text(unescape_text(v)) for v in split_unescaped(c, ","))
             for c in split_unescaped(s, ";")]
    while len(comps) < ncomps:
        comps.append("")
    return tuple(comps)


_DATA_URI = re.compile(r"^data:([^;,]*)(;[^,]*)?;base64,(.*)$", re.IGNORECASE | re.DOTALL)
_BINARY = ("PHOTO", "LOGO", "SOUND", "KEY")
_DATES = ("BDAY", "ANNIVERSARY", "X-ANNIVERSARY", "DEATHDATE")


def _params_upper(line):
    vals = [v.upper() for v in line.singletonparams]
    for k, vs in line.params.items():
        vals += [f"{k.upper()}={v.upper()}" for v in vs]
    return vals


def normalise(line):
    """One property's value (a raw vobject ContentLine) in a form comparable
    across versions.

    Each normalisation below is a difference of spelling, not of content:
     - N and ADR: the tuple of their components (N 5, ADR 7, missing ones
       empty), unescaped; a component's comma-separated values are compared
       as their text joined by "," ("Richter,James" and "Richter\\,James"
       are the same text: Graph's middleName is one string, and many
       writers leave commas in ADR streets unescaped).
     - ORG: its components, unescaped, trailing empty ones dropped ("Acme;"
       is "Acme"); a comma inside a component is text.
     - CATEGORIES and NICKNAME: the tuple of their comma-separated values.
     - BDAY and other dates: dashes and colons removed and a midnight time
       ("T000000", "T000000Z") dropped: 19790314, 1979-03-14 and
       1979-03-14T00:00:00Z are the same date; any other time must survive.
     - TEL: the number as written; a 4.0 "tel:" URI prefix is spelling.
     - GEO: 3.0 "lat;lon" and 4.0 "geo:lat,lon" are the same point.
     - binary values (ENCODING=b or BASE64, or a data: URI): the bytes.
     - all other text: unescaped; CR LF and CR are LF.
    """
    name = line.name.upper()
    v = line.value
    params = _params_upper(line)
    if "ENCODING=B" in params or "ENCODING=BASE64" in params or "BASE64" in params:
        return ("bytes", base64.b64decode("".join(v.split())))
    m = _DATA_URI.match(v.strip())
    if m:
        return ("bytes", base64.b64decode("".join(m.group(3).split())))
    if name == "N":
        return _structured(v, 5)
    if name == "ADR":
        return _structured(v, 7)
    if name == "ORG":
        return _drop_trailing_empty(_text(unescape_text(c)) for c in split_unescaped(v, ";"))
    if name in ("CATEGORIES", "NICKNAME"):
        return tuple(_text(unescape_text(c)) for c in split_unescaped(v, ","))
    s = _text(unescape_text(v))
    if name in _DATES:
        s = s.strip().replace("-", "").replace(":", "")
        s = re.sub(r"T000000(Z|\+0000)?$", "", s)
    elif name == "TEL":
        s = s.strip()
        if s.lower().startswith("tel:"):
            s = s[4:]
    elif name == "GEO":
        s = s.strip()
        if s.lower().startswith("geo:"):
            s = s[4:]
        s = s.replace(";", ",")
    return s


def _drop_trailing_empty(t):
    t = list(t)
    while t and t[-1] == "":
        t.pop()
    return tuple(t)


def _collapse(v):
    if isinstance(v, str):
        return re.sub(r"\s+", " ", v).strip()
    if isinstance(v, tuple) and v and v[0] != "bytes":
        return tuple(_collapse(x) for x in v)
    return v


def card_version(lines):
    for line in lines:
        if line.name.upper() == "VERSION":
            return line.value.strip()
    return None


def card_values(lines, props=None, exclude=(), collapse_space=False):
    """{property name: Counter of normalised values} for one card (a list
    from vobject_lines).

    props: only these names (None: every property but exclude). CATEGORIES
    are collected as one multiset of category names per card: Graph holds
    one list, so several CATEGORIES lines may come back as one line with the
    same names.
    """
    out = collections.defaultdict(collections.Counter)
    for line in lines:
        name = line.name.upper()
        if name in ("VERSION", "BEGIN", "END") or name in exclude:
            continue
        if props is not None and name not in props:
            continue
        val = normalise(line)
        if collapse_space:
            val = _collapse(val)
        if name == "CATEGORIES":
            for c in val:
                out[name][c.strip()] += 1
        else:
            out[name][val] += 1
    return dict(out)


def compare_cards(want_lines, got_lines, props=None, exclude=()):
    """Differences (a string, "" if none) between an input card and our
    output card, both lists from vobject_lines.

    Two allowances, both about what vCard 3.0 and 2.1 define, not about
    what we keep:
     - 3.0 requires FN and N: when the input has no FN (or only an empty
       one) or no N, our output's synthesised FN or N is not a difference.
     - 2.1 folds keep the whitespace after the line break (the issue's
       "whitespace-preserving folds"), vobject unfolds 2.1 as 3.0 and drops
       one: for a 2.1 input, runs of white space compare as one space.
    """
    loose = card_version(want_lines) == "2.1"
    want = card_values(want_lines, props, exclude, collapse_space=loose)
    got = card_values(got_lines, props, exclude, collapse_space=loose)
    if not any(v for v in want.get("FN", {}) if v.strip()):
        want.pop("FN", None)
        got.pop("FN", None)
    if "N" not in want:
        got.pop("N", None)
    return diff_values(want, got)


def diff_values(want, got):
    """Human-readable differences between two card_values() results."""
    lines = []
    for name in sorted(set(want) | set(got)):
        w = want.get(name, collections.Counter())
        g = got.get(name, collections.Counter())
        if w != g:
            lost = w - g
            extra = g - w
            if lost:
                lines.append(f"{name}: lost {sorted(map(repr, lost.elements()))}")
            if extra:
                lines.append(f"{name}: gained {sorted(map(repr, extra.elements()))}")
    return "\n".join(lines)


# ---- reporting ----------------------------------------------------------------

# Filled by test_corpus.py: {file: reason} for files refused with exit 65.
CORPUS_REFUSED = {}


def pytest_terminal_summary(terminalreporter):
    if CORPUS_REFUSED:
        terminalreporter.section("corpus files refused (exit 65)")
        for f in sorted(CORPUS_REFUSED):
            terminalreporter.write_line(f"{f}: {CORPUS_REFUSED[f]}")


def have(program):
    return shutil.which(program) is not None
