"""An aiosmtpd server on 127.0.0.1 at a free port, for mailroom's tests (started by aiosmtpd.ts).

Usage: python3 aiosmtpd-peer.py '<options as JSON>'

Options (all optional): {"auth": {"username": str, "password": str}, "tls": {"cert": path, "key":
path}, "smtputf8": bool (default true), "dataSizeLimit": int (bytes; 0 = no limit), "refuseRecipients":
[{"prefix": str, "code": int, "message": str}]}.

Writes JSON lines on stdout: {"event": "listening", "host", "port", "pid", "version"} once it listens,
then {"event": "message", ...} for every accepted message. Exits when stdin reaches end of file (the
parent went away), on SIGTERM or SIGINT.
"""

import asyncio
import base64
import json
import os
import signal
import ssl
import sys

import aiosmtpd
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"


def emit(event):
    """Writes one JSON line on stdout (the parent reads it with readline)."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def as_text(value):
    """aiosmtpd hands over addresses as str and credentials as bytes; the parent wants str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


class Handler:
    """Accepts every message (after the recipient refusals) and reports it on stdout."""

    def __init__(self, refuse_recipients, offer_auth):
        self.refuse_recipients = refuse_recipients
        self.offer_auth = offer_auth

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # aiosmtpd 1.4 advertises "AUTH" (with no mechanism left) even when every mechanism is
        # excluded; a server without AUTH must not mention it.
        session.host_name = hostname
        if self.offer_auth:
            return responses
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for rule in self.refuse_recipients:
            if address.startswith(rule["prefix"]):
                return f'{int(rule["code"])} {rule["message"]}'
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # original_content: the bytes as received, dot-unstuffed (decode_data is off).
        user = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            user = as_text(session.auth_data.login)
        emit(
            {
                "event": "message",
                # aiosmtpd keeps the null sender as "<>"; report it as smtp-server.ts does, empty.
                "from": "" if envelope.mail_from == "<>" else as_text(envelope.mail_from),
                "to": [as_text(address) for address in envelope.rcpt_tos],
                "mailOptions": list(envelope.mail_options),
                "rcptOptions": list(envelope.rcpt_options),
                "raw": base64.b64encode(envelope.original_content or b"").decode("ascii"),
                "secure": session.ssl is not None,
                "user": user,
            }
        )
        return "250 OK"


def make_authenticator(username, password):
    """AUTH PLAIN and LOGIN both end here with a LoginPassword; one pair is valid."""

    def authenticator(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and as_text(auth_data.login) == username
            and as_text(auth_data.password) == password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    return authenticator


async def main(options):
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    # The parent holds our stdin open and never writes to it; its end means the parent is gone and
    # nobody else will stop us.
    stdin = sys.stdin.fileno()

    def on_stdin():
        if not os.read(stdin, 4096):
            loop.remove_reader(stdin)
            stopped.set()

    loop.add_reader(stdin, on_stdin)

    tls_context = None
    if options.get("tls"):
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(options["tls"]["cert"], options["tls"]["key"])

    auth = options.get("auth")
    limit = options.get("dataSizeLimit")
    smtp_options = {
        "hostname": "aiosmtpd.localhost",  # no getfqdn(): no DNS lookup
        "enable_SMTPUTF8": options.get("smtputf8", True),
        "data_size_limit": None if limit == 0 else (limit or 64 * 1024 * 1024),
        "tls_context": tls_context,
        # A test peer: AUTH is offered on plain connections too, and stays optional.
        "auth_require_tls": False,
        "auth_required": False,
        "authenticator": make_authenticator(auth["username"], auth["password"]) if auth else None,
    }
    if not auth:
        smtp_options["auth_exclude_mechanism"] = ["PLAIN", "LOGIN"]
    handler = Handler(options.get("refuseRecipients") or [], offer_auth=bool(auth))
    server = await loop.create_server(lambda: SMTP(handler, **smtp_options), HOST, 0)
    port = server.sockets[0].getsockname()[1]
    emit({"event": "listening", "host": HOST, "port": port, "pid": os.getpid(), "version": aiosmtpd.__version__})
    await stopped.wait()
    # No wait_closed(): it would wait for clients still connected; the process is ending anyway.
    server.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
