"""An SMTP server for tests that captures every accepted message as a JSON file.

    smtp_capture.py --port P --dir D [--tls none|starttls|implicit --cert C --key K]
                    [--user U --password W] [--slow-seconds S]

With --user, AUTH (PLAIN, LOGIN) is offered and required before MAIL; with --tls starttls,
STARTTLS is offered and required before AUTH. Recipients steer the server, by local part:
  reject-*      RCPT TO is answered 550 (permanent)
  defer-once-*  the first RCPT TO for the address is answered 451, later ones accepted
  slow-*        the message is captured, then the reply to DATA waits --slow-seconds
Every RCPT TO is appended to D/rcpt.log; every accepted message becomes a JSON file in D.
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import signal
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Capture:
    def __init__(self, directory, slow_seconds):
        self.directory = directory
        self.slow_seconds = slow_seconds
        self.counter = itertools.count(1)
        self.deferred = set()
        self.lock = threading.Lock()

    def log_rcpt(self, address, reply):
        with self.lock, open(os.path.join(self.directory, "rcpt.log"), "a") as log:
            log.write(f"{address}\t{reply}\n")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.startswith("reject-"):
            reply = "550 5.1.1 <%s>: mailbox unavailable (test rejection)" % address
        elif local.startswith("defer-once-") and address not in self.deferred:
            self.deferred.add(address)
            reply = "451 4.3.2 try again later (test deferral)"
        else:
            envelope.rcpt_tos.append(address)
            reply = "250 OK"
        self.log_rcpt(address, reply)
        return reply

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {"text/plain": None, "text/html": None}
        for part in message.walk():
            kind = part.get_content_type()
            if kind in parts and parts[kind] is None:
                parts[kind] = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # session.ssl is set by STARTTLS; an implicit TLS transport carries an ssl_object.
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "auth_login": getattr(session, "capture_login", None),
            "message_id": message.get("Message-ID"),
            "subject": message.get("Subject"),
            "from": message.get("From"),
            "to": message.get("To"),
            "content_type": message.get_content_type(),
            "text": parts["text/plain"],
            "html": parts["text/html"],
        }
        number = next(self.counter)
        # Named by time, so that names sort in arrival order across restarts of the server.
        path = os.path.join(self.directory, "%020d-%06d.json" % (time.time_ns(), number))
        with open(path + ".tmp", "w") as out:
            json.dump(record, out)
        os.rename(path + ".tmp", path)
        if any(rcpt.split("@", 1)[0].startswith("slow-") for rcpt in envelope.rcpt_tos):
            await asyncio.sleep(self.slow_seconds)
        return "250 2.0.0 Ok: queued as capture-%d" % number


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        ):
            session.capture_login = user
            return AuthResult(success=True)
        # handled=False lets aiosmtpd answer 535; handled=True would leave the client hanging.
        return AuthResult(success=False, handled=False)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    args = parser.parse_args()

    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    options = {}
    if args.user:
        options.update(
            authenticator=authenticator(args.user, args.password),
            auth_required=True,
            # With implicit TLS every session is encrypted already (and aiosmtpd would not
            # offer AUTH at all if asked to require STARTTLS first).
            auth_require_tls=args.tls == "starttls",
        )
    if args.tls == "starttls":
        options.update(tls_context=context, require_starttls=True)

    controller = Controller(
        Capture(args.dir, args.slow_seconds),
        hostname="127.0.0.1",
        port=args.port,
        ssl_context=context if args.tls == "implicit" else None,
        **options,
    )
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        time.sleep(0.1)
    controller.stop()


if __name__ == "__main__":
    main()
