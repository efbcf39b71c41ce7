#!/usr/bin/env python3
"""pyas2lib (1.4.4) as an independent AS2 SENDER to a running Atom, for
tests/e2e_pyas2lib.rs. Run it with the venv made by .ci/setup-peers.

    pyas2_sender.py DIR

DIR/config.json (written by the Rust test):

    {
      "url": "http://127.0.0.1:PORT/as2/acme",   Atom's AS2 endpoint
      "pyas2_id": "...", "atom_id": "...",       AS2 IDs (sender, receiver)
      "pyas2_pem": "path",                       pyas2lib's key + certificate (PEM)
      "atom_cert": "path",                       Atom's certificate (PEM)
      "payloads": [{"name", "path", "content_type", "filename"}, ...],
      "async_cases": [{"digest", "cipher", "compressed"}, ...],
      "timeout": 30                              seconds per HTTP request / async wait
    }

What it does (nothing but one JSON object goes to stdout):

- builds with pyas2lib's Message.build the 50-message matrix of
  connectors/tests/peers/pyas2_peer.py (signing {unsigned, sha1, sha256,
  sha384, sha512} x encryption {none, tripledes_192_cbc, aes_128_cbc,
  aes_192_cbc, aes_256_cbc} x compressed or not), each asking for a
  synchronous MDN, signed with the same digest when the message is signed;
  POSTs each to `url` (headers as pyas2lib gives them, body = its content)
  and parses the MDN in the response with pyas2lib's Mdn.parse;
- then builds `async_cases` asking for an asynchronous MDN with
  Receipt-Delivery-Option pointing at a small HTTP receiver this script runs
  on 127.0.0.1, POSTs them, waits for the MDNs and parses them the same way.

Output: {"mdn_url": ..., "sync": [result...], "async": [result...],
"unexpected_mdns": N}; one result per message: the case, pyas2lib's MIC,
the HTTP status, pyas2lib's (status, detailed_status) for the MDN, the
MDN's original Message-ID / recipient, the verified MDN signature digest
and the Received-Content-MIC the MDN carried.
"""

import email
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyas2lib import Mdn, Message, Organization, Partner

# Reuse the matrix definition and the config loader of the interop peer.
sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "connectors", "tests", "peers"),
)
from pyas2_peer import CIPHERS, DIGESTS, DOMAIN, load_config  # noqa: E402

logging.disable(logging.CRITICAL)  # pyas2lib logs tracebacks at ERROR level


def one_line(value):
    """A header value without folding (the email package may fold long values)."""
    return " ".join(str(value).split())


def as_bytes(content):
    return content.encode("utf-8") if isinstance(content, str) else content


class MdnInbox:
    """A tiny HTTP server collecting asynchronous MDNs (headers + body)."""

    def __init__(self):
        self.received = []
        self.cond = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with inbox.cond:
                    inbox.received.append({"path": self.path, "raw": head + b"\r\n" + body})
                    inbox.cond.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mdn"

    def wait_for(self, count, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.received)


def post(url, message, timeout):
    """POSTs a built pyas2lib message; returns (status, raw MDN or None, error)."""
    headers = {k: one_line(v) for k, v in message.headers.items()}
    request = urllib.request.Request(url, data=as_bytes(message.content), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            head = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items()).encode("utf-8")
            return response.status, head + b"\r\n" + body, len(body), None
    except urllib.error.HTTPError as e:
        return e.code, None, 0, f"HTTP {e.code}: {e.read()[:500]!r}"
    except Exception as e:  # noqa: BLE001 - reported to the test
        return None, None, 0, f"{type(e).__name__}: {e}"


def received_mic(mdn):
    """The Received-Content-MIC of a parsed Mdn (its report part)."""
    if mdn.payload is None:
        return None
    for part in mdn.payload.walk():
        if part.get_content_type() == "message/disposition-notification":
            fields = part.get_payload()
            if isinstance(fields, list):
                fields = fields[-1]
            else:
                fields = email.message_from_string(fields)
            value = fields.get("Received-Content-MIC")
            return one_line(value) if value else None
    return None


def parse_mdn(raw, messages):
    """pyas2lib's Mdn.parse, with the sender's store of messages as the callback."""
    seen = {}

    def find_message(message_id, recipient):
        seen["message_id"], seen["recipient"] = message_id, recipient
        return messages.get(message_id)

    mdn = Mdn()
    status, detailed_status = mdn.parse(raw, find_message)
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").lower()
    return {
        "status": status,
        "detailed_status": detailed_status,
        "orig_message_id": seen.get("message_id"),
        "orig_recipient": seen.get("recipient"),
        "mdn_digest_alg": mdn.digest_alg,
        "mdn_signed": "multipart/signed" in head,
        "mdn_mic": received_mic(mdn),
    }


def main(workdir):
    config = load_config(workdir)
    timeout = config.get("timeout", 30)
    inbox = MdnInbox()
    sender = Organization(
        as2_name=config["pyas2_id"],
        sign_key=config["pyas2_pem_bytes"],
        domain=DOMAIN,
        mdn_url=inbox.url,
    )
    payloads = config["payloads"]
    messages = {}  # Message-ID (no brackets) -> pyas2lib Message, the sender's store
    run_tag = f"{os.getpid()}-{int(time.time())}"

    def build(name, digest, cipher, compress, payload, mdn_mode):
        with open(payload["path"], "rb") as f:
            data = f.read()
        receiver = Partner(
            as2_name=config["atom_id"],
            verify_cert=config["atom_cert_bytes"],
            encrypt_cert=config["atom_cert_bytes"],
            compress=compress,
            sign=digest is not None,
            digest_alg=digest or "sha256",
            encrypt=cipher is not None,
            enc_alg=cipher or "tripledes_192_cbc",
            mdn_mode=mdn_mode,
            mdn_digest_alg=digest,
        )
        message = Message(sender, receiver)
        message.build(
            data,
            filename=payload.get("filename"),
            content_type=payload["content_type"],
            subject=f"pyas2lib e2e {name}",
            message_id=f"{name}-{run_tag}",
        )
        messages[message.message_id] = message
        return message, {
            "name": name,
            "message_id": message.message_id,
            "digest": digest,
            "cipher": cipher,
            "compressed": compress,
            "payload": payload["name"],
            "mic": message.mic.decode() if message.mic else None,
            "mic_alg": message.digest_alg,
            "receipt_delivery_option": message.headers.get("receipt-delivery-option"),
        }

    sync_results = []
    index = 0
    for si, digest in enumerate(DIGESTS):
        for ei, cipher in enumerate(CIPHERS):
            for compress in (False, True):
                payload = payloads[(si + ei) % len(payloads)]
                message, result = build(f"sync-{index:02d}", digest, cipher, compress, payload, "SYNC")
                status, raw, body_len, error = post(config["url"], message, timeout)
                result.update({"http_status": status, "error": error, "body_len": body_len})
                if raw is not None:
                    result.update(parse_mdn(raw, messages))
                sync_results.append(result)
                index += 1

    async_results = {}
    for i, case in enumerate(config.get("async_cases", [])):
        payload = payloads[i % len(payloads)]
        message, result = build(
            f"async-{i:02d}", case["digest"], case["cipher"], case["compressed"], payload, "ASYNC"
        )
        status, _raw, body_len, error = post(config["url"], message, timeout)
        result.update({"http_status": status, "error": error, "body_len": body_len})
        async_results[message.message_id] = result

    unexpected = 0
    if async_results:
        arrived = inbox.wait_for(len(async_results), timeout)
        for item in arrived:
            parsed = parse_mdn(item["raw"], messages)
            parsed["mdn_path"] = item["path"]
            result = async_results.get(parsed["orig_message_id"])
            if result is None or "status" in result:
                unexpected += 1
                continue
            result.update(parsed)

    json.dump(
        {
            "mdn_url": inbox.url,
            "sync": sync_results,
            "async": list(async_results.values()),
            "unexpected_mdns": unexpected,
        },
        sys.stdout,
    )
    inbox.server.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    main(sys.argv[1])
