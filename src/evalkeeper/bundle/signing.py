"""Ed25519 keys and DSSE envelopes (https://github.com/secure-systems-lab/dsse) over the provenance statement.

The signature covers PAE(payloadType, payload), never the raw JSON, so a verifier cannot be tricked into
interpreting the signed bytes as another type.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evalkeeper.core.atomic import atomic_write_bytes
from evalkeeper.core.errors import EvalkeeperError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PASSPHRASE_ENV = "EVALKEEPER_KEY_PASSPHRASE"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key: short, stable, and computable from either PEM."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def generate_keys(out_dir: str | os.PathLike[str], *, force: bool = False) -> KeyPair:
    """Write `private.pem` (PKCS#8, mode 0600, encrypted when $EVALKEEPER_KEY_PASSPHRASE is set) and
    `public.pem` (SubjectPublicKeyInfo). Refuses to overwrite existing keys unless `force`."""
    out = Path(out_dir)
    priv_path, pub_path = out / "private.pem", out / "public.pem"
    for p in (priv_path, pub_path):
        if p.exists() and not force:
            raise EvalkeeperError(
                "key file already exists; refusing to overwrite",
                path=str(p),
                hint="choose another --out folder or pass --force",
            )
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    old_umask = os.umask(0o077)
    try:
        atomic_write_bytes(priv_path, priv)
    finally:
        os.umask(old_umask)
    os.chmod(priv_path, 0o600)
    atomic_write_bytes(pub_path, pub)
    os.chmod(pub_path, 0o644)
    return KeyPair(priv_path, pub_path, key_id(key.public_key()))


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EvalkeeperError(f"cannot read private key ({exc.strerror})", path=str(path)) from None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise EvalkeeperError(
            f"not a usable PEM private key ({exc})",
            path=str(path),
            hint=f"encrypted keys need ${PASSPHRASE_ENV}",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvalkeeperError(
            "private key is not Ed25519",
            path=str(path),
            hint="create one with `evalkeeper keys generate --out keys/`",
        )
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EvalkeeperError(f"cannot read public key ({exc.strerror})", path=str(path)) from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise EvalkeeperError(f"not a PEM public key ({exc})", path=str(path)) from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvalkeeperError("public key is not Ed25519", path=str(path))
    return key


def sign_envelope(payload: bytes, key: Ed25519PrivateKey, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """A DSSE envelope (JSON bytes) carrying `payload` and one Ed25519 signature over its PAE."""
    sig = key.sign(pae(payload_type, payload))
    env = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key_id(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }
    return (json.dumps(env, indent=2) + "\n").encode()


@dataclass(frozen=True)
class EnvelopeCheck:
    payload: bytes | None
    payload_type: str | None
    key_ids: list[str]
    signature_valid: bool | None  # None: not checked (no public key given)
    problem: str | None


def open_envelope(raw: bytes, public_key: Ed25519PublicKey | None = None) -> EnvelopeCheck:
    """Parse a DSSE envelope and, with a public key, check that one of its signatures is valid."""
    try:
        env: Any = json.loads(raw)
        payload_type = env["payloadType"]
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = [(s.get("keyid", ""), base64.b64decode(s["sig"], validate=True)) for s in env["signatures"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return EnvelopeCheck(None, None, [], False, f"malformed DSSE envelope ({type(exc).__name__}: {exc})")
    ids = [k for k, _ in sigs]
    if public_key is None:
        return EnvelopeCheck(payload, payload_type, ids, None, None)
    message = pae(payload_type, payload)
    for _, sig in sigs:
        try:
            public_key.verify(sig, message)
            return EnvelopeCheck(payload, payload_type, ids, True, None)
        except InvalidSignature:
            continue
    want = key_id(public_key)
    why = "no signature by this key" if want not in ids else "signature does not match the statement"
    return EnvelopeCheck(payload, payload_type, ids, False, f"{why} (key {want[:16]})")
