#!/usr/bin/env python3
"""Check DeFarm proofs offline, from their JSON alone (no server, no trust).

    verify_proof.py merkle <proof.json> [expected_root]

A Merkle inclusion proof as GET /api/merkle/.../merkle-proof/... answers it
(an event in an item's tree, or an item in a circuit's tree).  The rules are
those of docs/api.md "Merkle":

    leaf    given as leaf_hash; when leaf_data is present, leaf_hash must be
            SHA-256(UTF-8 leaf_data)
    pair    SHA-256(UTF-8 "<left hex>|<right hex>"), lowercase hex
    path    from the leaf up; each step's "position" is the side of the
            sibling ("right": current|sibling, "left": sibling|current)
    root    the result; it must equal expected_root when given, else the
            proof's merkle_root

    verify_proof.py attestation <attestation.json> <key.json>

An attestation (GET /api/proofs/:id, or POST /api/proofs/submit's answer)
against the server's published key (GET /api/proofs/key): the Ed25519
signature over "payload" (its exact UTF-8 bytes) with the key's
public_key (or public_key_pem), "statement" equal to the parsed payload,
and the key ids of the attestation, of its statement and of the key
(hex SHA-256 of the raw 32-byte public key) the same; the Merkle proof an
event_in_item statement carries must lead to its merkle_root.  An
attestation is the server's signature over a statement it checked
against its data, not a zero-knowledge proof: it shows that the holder of
the key said it.  Needs python3-cryptography (Debian's package).

Exit status 0 when the proof holds, 1 when it does not, 2 on bad input.
A file name "-" reads standard input.
"""

import base64
import binascii
import hashlib
import json
import re
import sys

HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def load(name):
    if name == "-":
        return json.load(sys.stdin)
    with open(name, encoding="utf-8") as f:
        return json.load(f)


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def merkle_pair(left, right):
    return sha256_hex(left + "|" + right)


def merkle_check(proof, expected_root=None):
    """(ok, message): whether the proof leads to the root."""
    if isinstance(proof, dict) and "proof" in proof and "leaf_hash" not in proof:
        # a verify-proof body {proof, expected_root} works too
        expected_root = expected_root or proof.get("expected_root")
        proof = proof["proof"]

    if not isinstance(proof, dict):
        raise ValueError("the proof must be a JSON object")

    leaf = proof.get("leaf_hash")
    if not isinstance(leaf, str) or not HEX64.match(leaf):
        raise ValueError("leaf_hash must be 64 hexadecimal digits")
    leaf = leaf.lower()

    path = proof.get("path")
    if not isinstance(path, list):
        raise ValueError("path must be an array")

    root = expected_root if expected_root is not None \
        else proof.get("merkle_root")
    if not isinstance(root, str) or not HEX64.match(root):
        raise ValueError("no expected root: give one, or a proof with "
                         "merkle_root")
    root = root.lower()

    data = proof.get("leaf_data")
    if data is not None:
        if not isinstance(data, str):
            raise ValueError("leaf_data must be a string")
        if sha256_hex(data) != leaf:
            return False, "leaf_data does not hash to leaf_hash"

    cur = leaf
    for i, step in enumerate(path):
        if (not isinstance(step, dict)
                or not isinstance(step.get("hash"), str)
                or not HEX64.match(step["hash"])
                or step.get("position") not in ("left", "right")):
            raise ValueError("path[%d] must be {hash, position: left|right}"
                             % i)
        sib = step["hash"].lower()
        if step["position"] == "right":
            cur = merkle_pair(cur, sib)
        else:
            cur = merkle_pair(sib, cur)

    if cur != root:
        return False, "computed root %s differs from %s" % (cur, root)

    return True, "valid: root %s" % root


def cmd_merkle(args):
    if len(args) not in (1, 2):
        raise ValueError("usage: verify_proof.py merkle <proof.json> "
                         "[expected_root]")
    proof = load(args[0])
    return merkle_check(proof, args[1] if len(args) == 2 else None)


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

    facts = statement.get("facts")
    if isinstance(facts, dict) and isinstance(facts.get("proof"), dict):
        ok, message = merkle_check(facts["proof"], facts.get("merkle_root"))
        if not ok:
            return False, "the Merkle proof it carries: " + message

    return True, "valid: proof %s signed by key %s" % (
        statement.get("proof_id"), key_id)


def cmd_attestation(args):
    if len(args) != 2:
        raise ValueError("usage: verify_proof.py attestation "
                         "<attestation.json> <key.json>")
    return attestation_check(load(args[0]), load(args[1]))


MODES = {
    "merkle": cmd_merkle,
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
