#!/usr/bin/env python3
"""A small AS2 receiver built on pyas2lib (1.4.4), independent of Atom, for
tests/send_client.rs (`atom send` end to end). Run it with the venv made by
.ci/setup-peers.

    pyas2_server.py --org-id ID --org-pem PEM --out DIR
                    --partner ID CERT [--partner ID CERT ...]
                    [--require-encryption ID ...] [--require-signature ID ...]
                    [--tamper-mic ID ...] [--port PORT] [--detect-duplicates]
                    [--lose-first-responses N] [--mdn-before-response]

- Listens on 127.0.0.1, port chosen by the system; prints the port on
  stdout (one line) once it is ready. AS2 messages are POSTed to /as2;
  other paths get HTTP 404.
- --org-pem: our (the receiver's) private key and certificate in one PEM:
  decrypts messages and signs MDNs. --partner: a sender's AS2 ID and its
  certificate (PEM), to verify signatures.
- --require-encryption / --require-signature: pyas2lib's per-partner
  policy; a message without that layer gets pyas2lib's negative MDN
  (insufficient-message-security).
- --tamper-mic: the MDN for that partner carries a wrong
  Received-Content-MIC (for testing the sender's MIC check).
- --port: listen there instead of on a port the system picks.
- --detect-duplicates: a Message-ID seen before from the same partner gets
  pyas2lib's duplicate handling (processed/Warning: duplicate-document,
  the payload not stored again).
- --lose-first-responses N: the first N messages are processed and stored,
  then the connection is closed without an answer (a receipt lost on the
  way back, for testing the sender's resend).
- --mdn-before-response: an asynchronous MDN is POSTed (and answered)
  before the message's own HTTP response is sent.
- Every message is parsed by pyas2lib's Message.parse and answered with
  pyas2lib's own MDN: in the response (sync), or HTTP 200 with an empty body
  followed by a POST of the MDN to Receipt-Delivery-Option (async).
- For each message a JSON line goes to DIR/received.jsonl (status, layers,
  MIC, payload file); a processed payload is written to DIR/payload-N.bin.
- Exits when its standard input closes (the test process ended).
"""

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyas2lib import Mdn, Message, Organization, Partner

logging.disable(logging.CRITICAL)  # pyas2lib logs tracebacks at ERROR level


def one_line(value):
    """A header value without folding (email may fold long values)."""
    return " ".join(str(value).split())


class Receiver:
    def __init__(self, args):
        with open(args.org_pem, "rb") as f:
            pem = f.read()
        self.org_id = args.org_id
        self.org = Organization(
            as2_name=args.org_id, sign_key=pem, decrypt_key=pem, domain="pyas2.example"
        )
        self.partners = {}
        for partner_id, cert_path in args.partner:
            with open(cert_path, "rb") as f:
                cert = f.read()
            self.partners[partner_id] = Partner(
                as2_name=partner_id,
                verify_cert=cert,
                encrypt_cert=cert,
                encrypt=partner_id in (args.require_encryption or []),
                sign=partner_id in (args.require_signature or []),
            )
        self.tamper = set(args.tamper_mic or [])
        self.detect_duplicates = args.detect_duplicates
        self.seen = set()
        self.responses_to_lose = args.lose_first_responses
        self.mdn_before_response = args.mdn_before_response
        self.out = args.out
        self.lock = threading.Lock()
        self.count = 0

    def seen_before(self, message_id, partner_id):
        with self.lock:
            return (message_id, partner_id) in self.seen

    def lose_this_response(self):
        with self.lock:
            if self.responses_to_lose > 0:
                self.responses_to_lose -= 1
                return True
            return False

    def record(self, entry, payload):
        with self.lock:
            self.count += 1
            if payload is not None:
                name = os.path.join(self.out, f"payload-{self.count}.bin")
                with open(name, "wb") as f:
                    f.write(payload)
                entry["payload_file"] = name
            with open(os.path.join(self.out, "received.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def handle(self, raw):
        """Parses one message; returns (mdn or None, log entry)."""
        message = Message()
        status, (exc, _tb), mdn = message.parse(
            raw,
            find_org_cb=lambda as2_id: self.org if as2_id == self.org_id else None,
            find_partner_cb=self.partners.get,
            find_message_cb=self.seen_before if self.detect_duplicates else None,
        )
        if status == "processed" and self.detect_duplicates:
            with self.lock:
                self.seen.add((message.message_id, message.sender.as2_name))
        payload = None
        if status == "processed":
            payload = message.content
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
        partner_id = message.sender.as2_name if message.sender else None
        if mdn is not None and partner_id in self.tamper and message.mic:
            # Rebuild pyas2lib's MDN with a MIC that does not match.
            mic = message.mic
            message.mic = (b"BBBB" if mic.startswith(b"AAAA") else b"AAAA") + mic[4:]
            tampered = Mdn(mdn_mode=mdn.mdn_mode, mdn_url=mdn.mdn_url, digest_alg=mdn.digest_alg)
            tampered.build(message=message, status=status)
            mdn = tampered
        filename = None
        if message.payload is not None:
            filename = message.payload.get_filename()
        entry = {
            "message_id": message.message_id,
            "partner": partner_id,
            "status": status,
            "error": f"{type(exc).__name__}: {exc}" if exc else None,
            "signed": message.signed,
            "encrypted": message.encrypted,
            "compressed": message.compressed,
            "digest_alg": message.digest_alg,
            "enc_alg": message.enc_alg,
            "mic": message.mic.decode() if message.mic else None,
            "filename": filename,
            "mdn_mode": mdn.mdn_mode if mdn is not None else None,
            "payload_len": len(payload) if payload is not None else None,
            "payload_sha256": hashlib.sha256(payload).hexdigest() if payload is not None else None,
        }
        self.record(entry, payload)
        return mdn, entry


def post_async_mdn(mdn):
    body = mdn.content
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = {k: one_line(v) for k, v in mdn.headers.items()}
    request = urllib.request.Request(mdn.mdn_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except Exception:  # noqa: BLE001 - report and carry on, like a real server
        print(f"pyas2_server: posting the MDN to {mdn.mdn_url} failed:\n{traceback.format_exc()}", file=sys.stderr)


def make_handler(receiver):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - quiet
            pass

        def reply(self, status, headers, body):
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, one_line(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.read_body()
            if self.path.split("?")[0] != "/as2":
                self.reply(404, {"Content-Type": "text/plain"}, b"no AS2 endpoint here; POST to /as2\n")
                return
            head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode("utf-8")
            try:
                mdn, _entry = receiver.handle(head + b"\r\n" + body)
            except Exception:  # noqa: BLE001
                print(f"pyas2_server: pyas2lib failed:\n{traceback.format_exc()}", file=sys.stderr)
                self.reply(500, {"Content-Type": "text/plain"}, b"pyas2lib failed to process the message\n")
                return
            if receiver.lose_this_response():
                self.close_connection = True
                return
            if mdn is None:
                self.reply(200, {}, b"")
            elif mdn.mdn_mode == "ASYNC" and receiver.mdn_before_response:
                post_async_mdn(mdn)
                self.reply(200, {}, b"")
            elif mdn.mdn_mode == "ASYNC":
                self.reply(200, {}, b"")
                threading.Thread(target=post_async_mdn, args=(mdn,), daemon=True).start()
            else:
                content = mdn.content
                if isinstance(content, str):
                    content = content.encode("utf-8")
                self.reply(200, mdn.headers, content)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--org-id", required=True)
    parser.add_argument("--org-pem", required=True)
    parser.add_argument("--partner", nargs=2, action="append", required=True, metavar=("ID", "CERT"))
    parser.add_argument("--require-encryption", action="append", metavar="ID")
    parser.add_argument("--require-signature", action="append", metavar="ID")
    parser.add_argument("--tamper-mic", action="append", metavar="ID")
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--detect-duplicates", action="store_true")
    parser.add_argument("--lose-first-responses", type=int, default=0, metavar="N")
    parser.add_argument("--mdn-before-response", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Receiver(args)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    # Stop when the parent closes our stdin (or dies).
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
