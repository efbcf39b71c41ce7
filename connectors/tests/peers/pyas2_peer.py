#!/usr/bin/env python3
"""pyas2lib (1.4.4) as an independent AS2 peer for connectors/tests/interop_pyas2lib.rs.

Run with the venv made by .ci/setup-peers. Every subcommand takes a working
directory DIR holding `config.json` (written by the Rust test):

    {
      "pyas2_id": "...",            AS2 ID of the pyas2lib side
      "atom_id": "...",             AS2 ID of our side
      "pyas2_pem": "path",          pyas2lib's private key + certificate (PEM)
      "atom_cert": "path",          our certificate (PEM)
      "payloads": [{"name": ..., "path": ..., "content_type": ..., "filename": ...}, ...]
    }

Subcommands (results as JSON on stdout; nothing else is printed there):

  build-matrix DIR   pyas2lib builds 50 messages from the pyas2lib side to
                     ours: signing {unsigned, sha1, sha256, sha384, sha512} x
                     encryption {none, tripledes_192_cbc, aes_128_cbc,
                     aes_192_cbc, aes_256_cbc} x compression {no, yes}, each
                     asking for a sync MDN, signed (same digest) when the
                     message is signed. Writes DIR/case-NN.as2 (HTTP headers,
                     blank line, body) and DIR/matrix.json.
  check-mdns DIR     parses the MDNs listed in DIR/mdns.json ([{"name", "file"}])
                     with pyas2lib's Mdn().parse; the original messages are
                     rebuilt from DIR/matrix.json.
  open-matrix DIR    parses the messages listed in DIR/outbound.json
                     ([{"name", "file"}]) with pyas2lib's Message().parse and
                     writes pyas2lib's MDN for each to DIR/<name>.mdn.
  build-extras DIR   pyas2lib's optional algorithms: an RSASSA-PSS signed
                     message (sign_alg="rsassa_pss") and one encrypted with
                     key_enc_alg="rsaes_oaep"; same output format as
                     build-matrix, in DIR/extras.json.
"""

import hashlib
import json
import logging
import os
import sys

from pyas2lib import Mdn, Message, Organization, Partner

logging.disable(logging.CRITICAL)  # pyas2lib logs tracebacks at ERROR level

DIGESTS = [None, "sha1", "sha256", "sha384", "sha512"]
CIPHERS = [None, "tripledes_192_cbc", "aes_128_cbc", "aes_192_cbc", "aes_256_cbc"]
DOMAIN = "pyas2.example"


def load_config(workdir):
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(config["pyas2_pem"], "rb") as f:
        config["pyas2_pem_bytes"] = f.read()
    with open(config["atom_cert"], "rb") as f:
        config["atom_cert_bytes"] = f.read()
    return config


def write_capture(path, headers, body):
    """HTTP headers as pyas2lib hands them to its HTTP client, a blank line, the body."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("utf-8")
    with open(path, "wb") as f:
        f.write(head + b"\r\n" + body)


def read_list(workdir, name):
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return json.load(f)


def build_matrix(workdir):
    config = load_config(workdir)
    sender = Organization(
        as2_name=config["pyas2_id"], sign_key=config["pyas2_pem_bytes"], domain=DOMAIN
    )
    payloads = config["payloads"]
    cases = []
    index = 0
    for si, digest in enumerate(DIGESTS):
        for ei, cipher in enumerate(CIPHERS):
            for compress in (False, True):
                # Alternate payload kinds so that every digest and every
                # cipher meets each kind.
                payload = payloads[(si + ei) % len(payloads)]
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
                    mdn_mode="SYNC",
                    mdn_digest_alg=digest,
                )
                message = Message(sender, receiver)
                name = f"case-{index:02d}"
                message.build(
                    data,
                    filename=payload.get("filename"),
                    content_type=payload["content_type"],
                    subject=f"pyas2lib interop {name}",
                    message_id=name,
                )
                file = os.path.join(workdir, name + ".as2")
                write_capture(file, message.headers, message.content)
                cases.append(
                    {
                        "name": name,
                        "file": file,
                        "message_id": message.message_id,
                        "digest": digest,
                        "cipher": cipher,
                        "compressed": compress,
                        "payload": payload["name"],
                        "mic": message.mic.decode() if message.mic else None,
                        "mic_alg": message.digest_alg,
                        "mdn_digest_alg": digest,
                    }
                )
                index += 1
    with open(os.path.join(workdir, "matrix.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1)
    json.dump(cases, sys.stdout)


def build_extras(workdir):
    config = load_config(workdir)
    sender = Organization(
        as2_name=config["pyas2_id"], sign_key=config["pyas2_pem_bytes"], domain=DOMAIN
    )
    payload = config["payloads"][-1]
    with open(payload["path"], "rb") as f:
        data = f.read()
    variants = [
        ("pss-sha256", {"sign": True, "digest_alg": "sha256", "sign_alg": "rsassa_pss"}),
        ("oaep-aes256", {"encrypt": True, "enc_alg": "aes_256_cbc", "key_enc_alg": "rsaes_oaep"}),
    ]
    cases = []
    for name, settings in variants:
        receiver = Partner(
            as2_name=config["atom_id"],
            verify_cert=config["atom_cert_bytes"],
            encrypt_cert=config["atom_cert_bytes"],
            mdn_mode="SYNC",
            **settings,
        )
        message = Message(sender, receiver)
        message.build(data, content_type=payload["content_type"], message_id=name)
        file = os.path.join(workdir, name + ".as2")
        write_capture(file, message.headers, message.content)
        cases.append(
            {
                "name": name,
                "file": file,
                "message_id": message.message_id,
                "payload": payload["name"],
                "mic": message.mic.decode() if message.mic else None,
                "mic_alg": message.digest_alg,
            }
        )
    with open(os.path.join(workdir, "extras.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1)
    json.dump(cases, sys.stdout)


def check_mdns(workdir):
    config = load_config(workdir)
    sender = Organization(
        as2_name=config["pyas2_id"], sign_key=config["pyas2_pem_bytes"], domain=DOMAIN
    )
    by_id = {c["message_id"]: c for c in read_list(workdir, "matrix.json")}
    results = []
    for item in read_list(workdir, "mdns.json"):
        seen = {}

        def find_message(message_id, recipient, seen=seen):
            """Rebuilds the original pyas2lib Message as a sender's store would."""
            seen["message_id"], seen["recipient"] = message_id, recipient
            case = by_id.get(message_id)
            if case is None or recipient != config["atom_id"]:
                return None
            receiver = Partner(
                as2_name=config["atom_id"],
                verify_cert=config["atom_cert_bytes"],
                mdn_mode="SYNC",
                mdn_digest_alg=case["mdn_digest_alg"],
            )
            message = Message(sender, receiver)
            message.message_id = message_id
            message.mic = case["mic"].encode() if case["mic"] else None
            message.digest_alg = case["mic_alg"]
            return message

        with open(item["file"], "rb") as f:
            raw = f.read()
        mdn = Mdn()
        status, detailed_status = mdn.parse(raw, find_message)
        results.append(
            {
                "name": item["name"],
                "status": status,
                "detailed_status": detailed_status,
                "orig_message_id": seen.get("message_id"),
                "orig_recipient": seen.get("recipient"),
                "digest_alg": mdn.digest_alg,
            }
        )
    json.dump(results, sys.stdout)


def open_matrix(workdir):
    config = load_config(workdir)
    receiver = Organization(
        as2_name=config["pyas2_id"],
        sign_key=config["pyas2_pem_bytes"],
        decrypt_key=config["pyas2_pem_bytes"],
        domain=DOMAIN,
    )
    partner = Partner(as2_name=config["atom_id"], verify_cert=config["atom_cert_bytes"])
    results = []
    for item in read_list(workdir, "outbound.json"):
        with open(item["file"], "rb") as f:
            raw = f.read()
        message = Message()
        status, (exc, _tb), mdn = message.parse(
            raw,
            find_org_cb=lambda as2_id: receiver if as2_id == config["pyas2_id"] else None,
            find_partner_cb=lambda as2_id: partner if as2_id == config["atom_id"] else None,
        )
        content = message.content if status == "processed" else b""
        if isinstance(content, str):
            content = content.encode("utf-8")
        mdn_file = None
        if mdn is not None:
            mdn_file = os.path.join(workdir, item["name"] + ".mdn")
            write_capture(mdn_file, mdn.headers, mdn.content)
        results.append(
            {
                "name": item["name"],
                "status": status,
                "error": f"{type(exc).__name__}: {exc}" if exc else None,
                "signed": message.signed,
                "encrypted": message.encrypted,
                "compressed": message.compressed,
                "enc_alg": message.enc_alg,
                "digest_alg": message.digest_alg,
                "mic": message.mic.decode() if message.mic else None,
                "payload_sha256": hashlib.sha256(content).hexdigest(),
                "payload_len": len(content),
                "mdn_file": mdn_file,
            }
        )
    json.dump(results, sys.stdout)


COMMANDS = {
    "build-matrix": build_matrix,
    "build-extras": build_extras,
    "check-mdns": check_mdns,
    "open-matrix": open_matrix,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}} DIR")
    COMMANDS[sys.argv[1]](sys.argv[2])
