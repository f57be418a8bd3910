"""The Microsoft identity platform's device code flow and token endpoint, as
far as contactfs uses them (docs/graph.md, "Signing in").

  POST /{tenant}/oauth2/v2.0/devicecode   client_id, scope
  POST /{tenant}/oauth2/v2.0/token        grant_type=urn:ietf:params:oauth:grant-type:device_code
                                          grant_type=refresh_token

A device flow is approved after `device_pending_polls` polls that got
authorization_pending (the user "signs in" meanwhile), unless the
next_device_flow knob said it ends declined or expired. Polling sooner than the
interval answers slow_down (RFC 8628 §3.5); the emulator does not raise the
interval afterwards, so a client that adds 5 s as the RFC asks is still right.
"""
import base64
import json
import secrets
import threading
import time
import uuid

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRAPH_RESOURCE = "https://graph.microsoft.com/"
# The scopes of a token made without a flow (--token, POST /_emulator/tokens)
# unless it is given others: what contactfs asks for.
DEFAULT_SCOPES = ("Contacts.ReadWrite", "Contacts.ReadWrite.Shared", "People.Read",
                  "MailboxSettings.ReadWrite", "offline_access")


def parse_scopes(value):
    """Scope names from a scope string ("a b", commas too) or a list, with
    the Graph resource prefix dropped: ["Contacts.ReadWrite", ...]."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if item.lower().startswith(GRAPH_RESOURCE):
            item = item[len(GRAPH_RESOURCE):]
        if item and item not in out:
            out.append(item)
    return out


class OAuthError(Exception):
    """An identity platform error: HTTP 400 (or 401) with {"error": code, ...}."""

    def __init__(self, error, description, aadsts, status=400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.aadsts = aadsts
        self.status = status

    def body(self):
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        return {"error": self.error,
                "error_description": f"AADSTS{self.aadsts}: {self.description}\r\n"
                                     f"Trace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}",
                "error_codes": [self.aadsts], "timestamp": stamp, "trace_id": trace,
                "correlation_id": corr}


def _b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Identity:
    """Access tokens, refresh tokens and device flows, behind one lock.
    faults: the Faults object (its knobs set TTLs, intervals, outcomes)."""

    def __init__(self, faults, default_upn):
        self.lock = threading.Lock()
        self.faults = faults
        self.knob = faults.get
        self.default_upn = default_upn
        self.access = {}     # access token -> {"upn", "expires": monotonic time or None, "scopes"}
        self.refresh = {}    # refresh token -> {"upn", "client_id", "scope"}
        self.flows = {}      # device code -> flow dict

    # -- access tokens --

    def _jwt_like(self, upn, ttl):
        """An opaque token shaped like a JWT (clients must not parse it)."""
        header = _b64url(json.dumps({"typ": "JWT", "alg": "RS256"}).encode())
        claims = _b64url(json.dumps({"upn": upn, "exp": int(time.time() + ttl),
                                     "jti": secrets.token_hex(8)}).encode())
        return f"{header}.{claims}.{_b64url(secrets.token_bytes(32))}"

    def add_token(self, token, upn, ttl=None, scopes=None):
        """Accept `token` for `upn` (ttl None: never expires) with `scopes`
        (None: DEFAULT_SCOPES)."""
        scopes = DEFAULT_SCOPES if scopes is None else scopes
        with self.lock:
            self.access[token] = {"upn": upn, "expires": None if ttl is None else time.monotonic() + ttl,
                                  "scopes": {s.lower() for s in scopes}}

    def issue(self, upn, ttl=None, scopes=None):
        ttl = float(self.knob("token_ttl_s")) if ttl is None else ttl
        token = self._jwt_like(upn, ttl)
        self.add_token(token, upn, ttl, scopes)
        return token, ttl

    def check(self, authorization):
        """(UPN, lower-case scopes, None) of an Authorization header's bearer
        token, or (None, None, a message saying why it is refused)."""
        if not authorization:
            return None, None, "Access token is empty."
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, None, "Access token is empty."
        with self.lock:
            entry = self.access.get(token.strip())
            if entry is None:
                return None, None, "Access token validation failure. Invalid audience."
            if entry["expires"] is not None and time.monotonic() >= entry["expires"]:
                return None, None, "Lifetime validation failed, the token is expired."
            return entry["upn"], set(entry["scopes"]), None

    def expire_all(self):
        """Make every access token issued so far expired (--token ones too)."""
        with self.lock:
            now = time.monotonic()
            for entry in self.access.values():
                entry["expires"] = now

    def revoke_refresh_tokens(self):
        with self.lock:
            self.refresh.clear()

    # -- endpoints --

    def device_code(self, tenant, form):
        client_id = form.get("client_id")
        if not client_id:
            raise OAuthError("invalid_request", "The request body must contain the following "
                             "parameter: 'client_id'.", 900144)
        scope = form.get("scope", "")
        if not scope.strip():
            raise OAuthError("invalid_scope", "The provided value for the input parameter 'scope' "
                             "is not valid.", 70011)
        device_code = _b64url(secrets.token_bytes(48))
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        interval = float(self.knob("device_interval_s"))
        with self.lock:
            outcome = self.faults.take("next_device_flow")   # applies to one flow only
            self.flows[device_code] = {
                "tenant": tenant, "client_id": client_id, "scope": scope,
                "upn": self.knob("device_user") or self.default_upn,
                "outcome": outcome, "polls": 0, "last_poll": None, "interval": interval,
                "expires": time.monotonic() + 900, "done": False}
        uri = "https://microsoft.com/devicelogin"
        return {"user_code": user_code, "device_code": device_code, "verification_uri": uri,
                "expires_in": 900, "interval": int(interval) if interval == int(interval) else interval,
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                           f"{user_code} to authenticate."}

    def token(self, tenant, form):
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "The request body must contain the following "
                             "parameter: 'grant_type'.", 900144)
        if not form.get("client_id"):
            raise OAuthError("invalid_request", "The request body must contain the following "
                             "parameter: 'client_id'.", 900144)
        if grant == DEVICE_GRANT:
            return self._poll(tenant, form)
        if grant == "refresh_token":
            return self._refresh(form)
        raise OAuthError("unsupported_grant_type", f"The provided value for the input parameter "
                         f"'grant_type' is not valid: {grant}.", 70003)

    def _poll(self, tenant, form):
        code = form.get("device_code")
        with self.lock:
            flow = self.flows.get(code or "")
            if flow is None or flow["done"]:
                raise OAuthError("bad_verification_code" if flow is None else "invalid_grant",
                                 "The provided value for the device code is not valid.", 70000)
            if flow["tenant"].lower() != tenant.lower() or flow["client_id"] != form["client_id"]:
                raise OAuthError("invalid_grant", "The device code was issued to another tenant "
                                 "or client.", 70000)
            now = time.monotonic()
            if now >= flow["expires"]:
                flow["done"] = True
                raise OAuthError("expired_token", "The device code has expired.", 70019)
            if flow["last_poll"] is not None and now - flow["last_poll"] < flow["interval"] * 0.95:
                flow["last_poll"] = now
                raise OAuthError("slow_down", "The client is polling too fast.", 70016)
            flow["last_poll"] = now
            flow["polls"] += 1
            if flow["polls"] <= int(self.knob("device_pending_polls")):
                raise OAuthError("authorization_pending", "OAuth 2.0 device flow error. Authorization "
                                 "is pending. Continue polling.", 70016)
            flow["done"] = True
            if flow["outcome"] == "declined":
                raise OAuthError("authorization_declined", "The end user denied the authorization "
                                 "request.", 70000)
            if flow["outcome"] == "expired":
                raise OAuthError("expired_token", "The device code has expired.", 70019)
        return self._grant(flow["upn"], flow["client_id"], flow["scope"])

    def _refresh(self, form):
        old = form.get("refresh_token")
        with self.lock:
            entry = self.refresh.get(old or "")
            if entry is None or entry["client_id"] != form["client_id"]:
                raise OAuthError("invalid_grant", "The refresh token has expired or is invalid due "
                                 "to sign-in frequency checks or revocation.", 700082)
        # The old refresh token stays valid (the platform does not revoke it);
        # the client is to store the new one.
        return self._grant(entry["upn"], entry["client_id"], form.get("scope") or entry["scope"])

    def _grant(self, upn, client_id, scope):
        # The access token carries the scopes asked for (device flow) or
        # asked for again (refresh).
        token, ttl = self.issue(upn, scopes=parse_scopes(scope))
        scopes = scope.split()
        body = {"token_type": "Bearer", "scope": " ".join(s for s in scopes if s not in
                                                          ("offline_access", "openid", "profile")),
                "expires_in": int(ttl), "ext_expires_in": int(ttl), "access_token": token}
        # As on the real platform: a refresh token only with offline_access,
        # an id token only with openid.
        if "offline_access" in scopes:
            rt = "0.A" + _b64url(secrets.token_bytes(60))
            with self.lock:
                self.refresh[rt] = {"upn": upn, "client_id": client_id, "scope": scope}
            body["refresh_token"] = rt
        if "openid" in scopes:
            claims = _b64url(json.dumps({"aud": client_id, "preferred_username": upn,
                                         "tid": str(uuid.uuid4())}).encode())
            header = _b64url(json.dumps({"typ": "JWT", "alg": "none"}).encode())
            body["id_token"] = f"{header}.{claims}."
        return body
