"""Whether an artifact is the one its deployer signed off: pinned hashes and Ed25519 signatures.

The manifest pins the ``.so``'s sha256, but whoever can rewrite the ``.so`` can rewrite the manifest
too. So a deployer pins the hash they expect (``load(expected_sha256=...)``, from ``autotune history
artifacts``), or signs the manifest with a private key only they hold (``autotune sign``): the
detached signature ``model.so.sig`` covers the manifest's exact bytes, and with them the ``.so``'s
hash. ``load(public_key=...)``, or ``$AUTOTUNE_PUBLIC_KEY`` naming a key file, makes a valid
signature mandatory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from ..errors import AutotuneError

SIGNATURE_FORMAT = "autotune-signature/1"
PUBLIC_KEY_ENV = "AUTOTUNE_PUBLIC_KEY"


def signature_path(so_path: str | Path) -> Path:
    """Where the detached signature of ``so_path`` lives: beside it, ``model.so.sig``."""
    return Path(f"{so_path}.sig")


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise AutotuneError("signatures need the cryptography package: pip install cryptography") from None
    return serialization, ed25519


def generate_keys(stem: str | Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair: ``STEM.key`` (private, readable by its owner only) and ``STEM.pub``."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = Path(f"{stem}.key"), Path(f"{stem}.pub")
    for path in (private, public):
        if path.exists():
            raise AutotuneError(f"{path} exists: refusing to overwrite a key")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _load_key(path: str | Path, private: bool):
    serialization, ed25519 = _crypto()
    try:
        data = Path(path).read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError) as err:
        raise AutotuneError(f"cannot read the {'private' if private else 'public'} key {path}: {err}") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise AutotuneError(f"{path} is not an Ed25519 {'private' if private else 'public'} key")
    return key


def fingerprint(public_key) -> str:
    """The sha256 of a public key's raw bytes, to say which key signed."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(so_path: str | Path, private_key: str | Path, document: Path | None = None) -> Path:
    """Sign the manifest beside ``so_path`` (as its bytes are now), or ``document``, the manifest
    that stands for it (a generator's, which pins its parts); the signature file's path."""
    from .manifest import manifest_path

    key = _load_key(private_key, private=True)
    manifest_bytes = (document or manifest_path(so_path)).read_bytes()
    record = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519",
              "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
              "public_key_sha256": fingerprint(key.public_key()),
              "signature": base64.b64encode(key.sign(manifest_bytes)).decode()}
    path = signature_path(so_path)
    path.write_text(json.dumps(record, indent=2))
    return path


def public_key_from(explicit: str | Path | None) -> str | None:
    """The key that signatures must verify with: the caller's, else ``$AUTOTUNE_PUBLIC_KEY``."""
    return str(explicit) if explicit else os.environ.get(PUBLIC_KEY_ENV) or None


def verify_signature(so_path: Path, manifest_bytes: bytes, public_key: str | Path) -> str:
    """Check the detached signature of ``so_path`` over ``manifest_bytes`` with ``public_key``;
    returns the signing key's fingerprint, or raises naming what is wrong."""
    from cryptography.exceptions import InvalidSignature

    key = _load_key(public_key, private=False)
    path = signature_path(so_path)
    try:
        record = json.loads(path.read_text())
        signature = base64.b64decode(record["signature"], validate=True)
    except FileNotFoundError:
        raise AutotuneError(f"{so_path} has no signature {path}, and a signed artifact is required "
                            f"(public key {public_key})") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AutotuneError(f"signature {path} is unreadable: {err}") from None
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise AutotuneError(f"{so_path}: its manifest does not carry a valid signature of the key "
                            f"{public_key} (signature {path}); refusing to load it") from None
    return fingerprint(key)
