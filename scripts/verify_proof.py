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

Exit status 0 when the proof holds, 1 when it does not, 2 on bad input.
A file name "-" reads standard input.
"""

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


MODES = {
    "merkle": cmd_merkle,
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
