"""Run tests/graph_emulator/server.py for a test that drives contactfs
against it: start on a free port, admin calls, stop (exit 0 expected)."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "graph_emulator" / "server.py"


class Emulator:
    def __init__(self, *args, token="test-token"):
        self.args = args
        self.token = token
        self.proc = None
        self.url = None

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0", "--token", self.token, *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        if not m:
            self.proc.kill()
            raise AssertionError("emulator did not start: %r %s" % (line, self.proc.stderr.read()))
        self.url = m.group(1)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=30)
        if exc[0] is None:
            assert self.proc.returncode == 0, err

    def admin(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/_emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def faults(self, knobs):
        return self.admin("POST", "faults", knobs)

    def state(self):
        return self.admin("GET", "state")

    def requests(self):
        return self.admin("GET", "requests")
