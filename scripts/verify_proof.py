#!/usr/bin/env python3
"""Offline checks of what the DeFarm server hands out, from their JSON
alone: nothing here asks the server anything.

  verify_proof.py attestation <attestation.json> <key.json>

    An attestation (GET /api/proofs/:id, or POST /api/proofs/submit's
    answer) against the server's published key (GET /api/proofs/key):
    the Ed25519 signature over "payload" (its exact UTF-8 bytes) with the
    key, "statement" equal to the parsed payload, and the key ids of the
    attestation, of its statement and of the key (hex SHA-256 of the raw
    32-byte public key) the same.  An attestation is the server's
    signature over a statement it checked against its data, not a
    zero-knowledge proof: it shows that the holder of the key said it.

Prints a JSON report; exits 0 when it verifies, 1 when it does not, 2 on
a usage error.  Needs python3-cryptography (Debian's package).
"""

import base64
import binascii
import hashlib
import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
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


def attestation(att_path, key_path):
    from cryptography.exceptions import InvalidSignature

    att = load(att_path)
    key = load(key_path)
    checks = {}

    pub, raw = public_key(key)
    key_id = hashlib.sha256(raw).hexdigest()
    payload = att.get("payload")

    checks["algorithm"] = (att.get("algorithm") == "Ed25519"
                           and key.get("algorithm", "Ed25519") == "Ed25519")

    try:
        sig = b64(att.get("signature", ""))
        pub.verify(sig, payload.encode("utf-8"))
        checks["signature"] = True
    except (InvalidSignature, ValueError, binascii.Error, AttributeError,
            TypeError):
        checks["signature"] = False

    try:
        parsed = json.loads(payload)
    except (TypeError, ValueError):
        parsed = None

    checks["statement"] = parsed is not None and att.get("statement") == parsed
    checks["key_id"] = (att.get("key_id") == key_id
                        and isinstance(parsed, dict)
                        and parsed.get("key_id") == key_id
                        and key.get("key_id", key_id) == key_id)

    ok = all(checks.values())
    print(json.dumps({"valid": ok, "checks": checks, "key_id": key_id,
                      "proof_id": (parsed or {}).get("proof_id")
                      if isinstance(parsed, dict) else None},
                     sort_keys=True))
    return 0 if ok else 1


def main(argv):
    if len(argv) == 4 and argv[1] == "attestation":
        try:
            return attestation(argv[2], argv[3])
        except (OSError, ValueError, KeyError) as e:
            print(json.dumps({"valid": False, "error": str(e)}))
            return 1

    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
