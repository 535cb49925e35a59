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


def run_sign(args) -> dict:
    from ..runtime.loader import verify_artifact
    from ..runtime.trust import sign

    verify_artifact(Path(args.artifact))  # only a verified, validated artifact is signed
    path = sign(args.artifact, args.key)
    if not args.json:
        print(f"wrote {path}")
    return {"artifact": args.artifact, "signature": str(path)}


def add_sign(sub) -> None:
    p = sub.add_parser("sign", help="sign an artifact's manifest (and with it the .so's hash)")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it)")
    p.add_argument("--key", required=True, help="Ed25519 private key (autotune keygen)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_sign)


def run_verify(args) -> dict:
    from ..runtime.loader import verify_artifact

    _, manifest = verify_artifact(Path(args.artifact), expected_sha256=args.sha256, public_key=args.public_key)
    result = {"artifact": args.artifact, "sha256": manifest.sha256, "signed": bool(args.public_key),
              "validation_passed": (manifest.validation or {}).get("passed")}
    if not args.json:
        print(f"{args.artifact}: verified (sha256 {manifest.sha256[:16]}…"
              f"{', signature valid' if args.public_key else ''})")
    return result


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check an artifact as load does, without loading it")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it)")
    p.add_argument("--sha256", help="the hash the artifact must have (autotune history artifacts)")
    p.add_argument("--public-key", help="require a valid signature of this Ed25519 public key "
                   "(default: $AUTOTUNE_PUBLIC_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_verify)
