#!/usr/bin/env python3
"""pyas2lib (1.4.4) as an independent AS2 message BUILDER, for tests that
need many distinct signed+encrypted messages (tests/molecule.rs). Run it
with the venv made by .ci/setup-peers.

    pyas2_build.py DIR

DIR/config.json (written by the Rust test):

    {
      "pyas2_id": "...", "atom_id": "...",   AS2 IDs (sender, receiver)
      "pyas2_pem": "path",                   pyas2lib's key + certificate (PEM)
      "atom_cert": "path",                   Atom's certificate (PEM)
      "count": N, "prefix": "ha",            messages to build and their ID prefix
      "digest": "sha256", "cipher": "aes_128_cbc",
      "payload_file": null or "path",        optional: every payload is this file
      "compress": false                      optional: compress before signing
    }

For each n in 0..N it builds with pyas2lib's Message.build a message signed
with `digest`, encrypted with `cipher`, asking for a signed synchronous MDN,
whose payload is the line `ISA*00*{prefix}*{n}~`, and writes
DIR/{n}.capture (HTTP headers as pyas2lib gives them, a blank line, the
body). Prints one JSON list: [{"file", "message_id", "mic", "payload"}].
"""

import json
import logging
import os
import sys

from pyas2lib import Message, Organization, Partner

logging.disable(logging.CRITICAL)  # pyas2lib logs tracebacks at ERROR level


def one_line(value):
    """A header value without folding (the email package may fold long values)."""
    return " ".join(str(value).split())


def main(workdir):
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(config["pyas2_pem"], "rb") as f:
        pyas2_pem = f.read()
    with open(config["atom_cert"], "rb") as f:
        atom_cert = f.read()
    sender = Organization(as2_name=config["pyas2_id"], sign_key=pyas2_pem, domain="pyas2.example")
    receiver = Partner(
        as2_name=config["atom_id"],
        verify_cert=atom_cert,
        encrypt_cert=atom_cert,
        sign=True,
        digest_alg=config["digest"],
        encrypt=True,
        enc_alg=config["cipher"],
        mdn_mode="SYNC",
        mdn_digest_alg=config["digest"],
        compress=bool(config.get("compress")),
    )
    fixed_payload = None
    if config.get("payload_file"):
        with open(config["payload_file"], "rb") as f:
            fixed_payload = f.read()
    built = []
    for n in range(config["count"]):
        payload = fixed_payload or f"ISA*00*{config['prefix']}*{n}~".encode("ascii")
        message = Message(sender, receiver)
        message.build(
            payload,
            content_type="application/edi-x12",
            subject=f"pyas2lib build {n}",
            message_id=f"{config['prefix']}-{n}@pyas2.example",
        )
        path = os.path.join(workdir, f"{n}.capture")
        head = "".join(f"{k}: {one_line(v)}\r\n" for k, v in message.headers.items()).encode("utf-8")
        content = message.content
        body = content.encode("utf-8") if isinstance(content, str) else content
        with open(path, "wb") as f:
            f.write(head + b"\r\n" + body)
        built.append(
            {
                "file": path,
                "message_id": f"<{message.message_id}>",
                "mic": message.mic.decode() if message.mic else None,
                "payload": "" if fixed_payload else payload.decode("ascii"),
            }
        )
    json.dump(built, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
