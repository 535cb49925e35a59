"""``autotune keygen|sign|verify``: artifacts a deployer signs off, and checks before shipping."""

from __future__ import annotations

from pathlib import Path


def run_keygen(args) -> dict:
    from ..runtime.trust import generate_keys

    private, public = generate_keys(args.output)
    if not args.json:
        print(f"wrote {private} (private: keep it off the serving hosts) and {public}")
    return {"private_key": str(private), "public_key": str(public)}


def add_keygen(sub) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing artifacts")
    p.add_argument("-o", "--output", required=True, metavar="STEM", help="writes STEM.key and STEM.pub")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_keygen)


def _verify(path: Path, expected_sha256: str | None = None, public_key: str | None = None) -> dict:
    """Check an artifact, or a generator manifest and its parts, as load does; what it pins."""
    from ..errors import AutotuneError
    from ..runtime.generator import is_generator_manifest, verify_generator
    from ..runtime.loader import verify_artifact

    if is_generator_manifest(path):
        if expected_sha256:
            raise AutotuneError(f"{path}: a generator pins its parts' hashes in its manifest; sign the manifest "
                                "instead of pinning one --sha256")
        manifest = verify_generator(path, public_key)
        return {"parts": {name: part["sha256"] for name, part in manifest["parts"].items()},
                "validation_passed": (manifest.get("validation") or {}).get("passed")}
    _, manifest = verify_artifact(path, expected_sha256=expected_sha256, public_key=public_key)
    return {"sha256": manifest.sha256, "validation_passed": (manifest.validation or {}).get("passed")}


def run_sign(args) -> dict:
    from ..runtime.generator import is_generator_manifest
    from ..runtime.trust import sign

    artifact = Path(args.artifact)
    _verify(artifact)  # only a verified, validated artifact is signed
    path = sign(artifact, args.key, artifact if is_generator_manifest(artifact) else None)
    if not args.json:
        print(f"wrote {path}")
    return {"artifact": args.artifact, "signature": str(path)}


def add_sign(sub) -> None:
    p = sub.add_parser("sign", help="sign an artifact's manifest (and with it the .so's hash)")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it), or a generator's NAME.json")
    p.add_argument("--key", required=True, help="Ed25519 private key (autotune keygen)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_sign)


def run_verify(args) -> dict:
    from ..runtime.trust import public_key_from

    key = public_key_from(args.public_key)
    result = {"artifact": args.artifact, **_verify(Path(args.artifact), args.sha256, key), "signed": bool(key)}
    if not args.json:
        pinned = f"sha256 {result['sha256'][:16]}…" if "sha256" in result else f"{len(result['parts'])} parts pinned"
        print(f"{args.artifact}: verified ({pinned}{', signature valid' if key else ''})")
    return result


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check an artifact as load does, without loading it")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it), or a generator's NAME.json")
    p.add_argument("--sha256", help="the hash the artifact must have (autotune history artifacts)")
    p.add_argument("--public-key", help="require a valid signature of this Ed25519 public key "
                   "(default: $AUTOTUNE_PUBLIC_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_verify)
