#!/usr/bin/python3
"""A second, independent verifier of OpenSSF model-signing bundles (key method), written for the
tests from the published format, not from Aegis's code: Sigstore bundle v0.3 JSON -> DSSE envelope
-> in-toto Statement v1 with predicate https://model_signing/signature/v1.0.

    independent_verify.py MODEL_DIR BUNDLE PUBLIC_KEY_PEM

Exit 0 when the signature verifies over DSSE's PAE and every file under MODEL_DIR (minus the
statement's ignore_paths and the bundle) has the digest the statement lists, and the subject digest
is SHA-256 over the resource digests in name order; exit 1 otherwise, saying why.
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def fail(why):
    print("independent_verify: FAIL:", why)
    sys.exit(1)


def main(model, bundle_path, key_path):
    bundle = json.load(open(bundle_path))
    if bundle.get("mediaType") != "application/vnd.dev.sigstore.bundle.v0.3+json":
        fail("media type")
    env = bundle["dsseEnvelope"]
    payload = base64.b64decode(env["payload"])
    ptype = env["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    key = serialization.load_pem_public_key(open(key_path, "rb").read())
    algorithm = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    try:
        key.verify(base64.b64decode(env["signatures"][0]["sig"]), pae, ec.ECDSA(algorithm))
    except Exception:
        fail("signature")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if bundle["verificationMaterial"]["publicKey"]["hint"] != hashlib.sha256(pem).hexdigest():
        fail("public key hint")
    statement = json.loads(payload)
    if statement["_type"] != "https://in-toto.io/Statement/v1":
        fail("statement type")
    if statement["predicateType"] != "https://model_signing/signature/v1.0":
        fail("predicate type")
    predicate = statement["predicate"]
    ser = predicate["serialization"]
    if ser["method"] != "files" or ser["hash_type"] != "sha256":
        fail("serialization")
    ignored = set(ser.get("ignore_paths", [])) | {os.path.relpath(bundle_path, model)}
    listed = {r["name"]: r["digest"] for r in predicate["resources"]}
    found = {}
    for folder, dirs, files in os.walk(model):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), model).replace(os.sep, "/")
            parts = rel.split("/")
            if any("/".join(parts[:i + 1]) in ignored for i in range(len(parts))):
                continue
            found[rel] = hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
    if found != listed:
        fail("files differ: %s" % sorted(set(found.items()) ^ set(listed.items())))
    subject = hashlib.sha256(b"".join(bytes.fromhex(listed[n]) for n in sorted(listed))).hexdigest()
    if statement["subject"][0]["digest"]["sha256"] != subject:
        fail("subject digest")
    print("independent_verify: OK", len(listed), "files")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    main(*sys.argv[1:])
