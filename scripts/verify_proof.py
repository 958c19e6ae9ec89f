#!/usr/bin/env python3
"""Check DeFarm proofs offline, from their JSON alone (no server, no trust).

    verify_proof.py attestation <attestation.json> <key.json>

An attestation (GET /api/proofs/:id, or POST /api/proofs/submit's answer)
against the server's published key (GET /api/proofs/key): the Ed25519
signature over "payload" (its exact UTF-8 bytes) with the key's
public_key (or public_key_pem), "statement" equal to the parsed payload,
and the key ids of the attestation, of its statement and of the key
(hex SHA-256 of the raw 32-byte public key) the same.  An attestation is
the server's signature over a statement it checked against its data, not
a zero-knowledge proof: it shows that the holder of the key said it.
Needs python3-cryptography (Debian's package).

Exit status 0 when the proof holds, 1 when it does not, 2 on bad input.
A file name "-" reads standard input.
"""

import base64
import binascii
import hashlib
import json
import sys


def load(name):
    if name == "-":
        return json.load(sys.stdin)
    with open(name, encoding="utf-8") as f:
        return json.load(f)


def b64(text):
    return base64.b64decode(text.encode("ascii"), validate=True)


def public_key(key):
    """The Ed25519 key of key.json (public_key, else public_key_pem) and
    its raw 32 bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if isinstance(key.get("public_key"), str):
        raw = b64(key["public_key"])
        return ed25519.Ed25519PublicKey.from_public_bytes(raw), raw

    pem = serialization.load_pem_public_key(
        key["public_key_pem"].encode("ascii"))
    if not isinstance(pem, ed25519.Ed25519PublicKey):
        raise ValueError("public_key_pem is not an Ed25519 key")
    raw = pem.public_bytes(serialization.Encoding.Raw,
                           serialization.PublicFormat.Raw)
    return pem, raw


def attestation_check(att, key):
    """(ok, message): whether the key signed the attestation's payload."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(att, dict) or not isinstance(key, dict):
        raise ValueError("the attestation and the key must be JSON objects")

    pub, raw = public_key(key)
    key_id = hashlib.sha256(raw).hexdigest()
    payload = att.get("payload")

    if not isinstance(payload, str):
        return False, "no payload"

    if att.get("algorithm") != "Ed25519" \
            or key.get("algorithm", "Ed25519") != "Ed25519":
        return False, "not an Ed25519 attestation or key"

    try:
        pub.verify(b64(att.get("signature", "")), payload.encode("utf-8"))
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        return False, "the signature is not this key's over the payload"

    statement = json.loads(payload)
    if att.get("statement") != statement:
        return False, "statement is not the signed payload"

    if not (isinstance(statement, dict)
            and att.get("key_id") == key_id
            and statement.get("key_id") == key_id
            and key.get("key_id", key_id) == key_id):
        return False, "the key ids differ from the key's %s" % key_id

    return True, "valid: proof %s signed by key %s" % (
        statement.get("proof_id"), key_id)


def cmd_attestation(args):
    if len(args) != 2:
        raise ValueError("usage: verify_proof.py attestation "
                         "<attestation.json> <key.json>")
    return attestation_check(load(args[0]), load(args[1]))


MODES = {
    "attestation": cmd_attestation,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in MODES:
        sys.stderr.write(__doc__)
        return 2
    try:
        ok, message = MODES[argv[1]](argv[2:])
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.stderr.write("verify_proof.py: %s\n" % e)
        return 2
    print(("OK " if ok else "FAIL ") + message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
