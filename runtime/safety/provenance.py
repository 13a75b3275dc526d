"""Content credentials: a signed C2PA manifest in every MP4 kinema writes, and reading one back.

The manifest (written with c2pa-python, the Content Authenticity Initiative's library) says:
action `c2pa.created` with IPTC digital source type `trainedAlgorithmicMedia`, claim
generator "kinema <version>", and an `org.kinema.generation` assertion with the bundle's
name and sha256, the seed and the sampling settings (the prompt only when asked). C2PA
hashes the file's boxes, so any change to the video data after signing makes it invalid.

Signing needs an X.509 certificate chain and its private key. Without one supplied
(`--sign-cert`, `--sign-key`), kinema makes a local one on first use, with `cryptography`:
an EC P-256 certificate authority and a signer certificate it issues (the shape C2PA's
signer profile asks for), kept in the user's config folder ($KINEMA_CONFIG_DIR, else
$XDG_CONFIG_HOME/kinema, else ~/.config/kinema). Nobody else trusts that authority, so
other C2PA readers report the manifest as valid but the signer as untrusted; `kinema verify`
on the same machine adds the local authority as a trust anchor and says so.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "org.kinema.generation"
CONFIG_ENV = "KINEMA_CONFIG_DIR"
CA_CERT, SIGNER_CERT, SIGNER_KEY = "c2pa-ca.pem", "c2pa-signer.pem", "c2pa-signer.key"
MAX_PEM_BYTES = 1 << 20
# Settings recorded in the manifest; the prompt and negative prompt only on request.
_SETTINGS = ("frames", "height", "width", "fps", "steps", "guidance", "shift", "seed", "sampler", "cfg_mode")
_PROMPTS = ("prompt", "negative_prompt")


@dataclass(frozen=True)
class Credentials:
    """A signer: certificate chain (signer first, PEM) and private key (PEM), and where they came from."""

    chain_pem: bytes
    key_pem: bytes
    alg: str  # es256, es384, es512, ed25519
    origin: str  # "local" or "user"
    anchor_pem: bytes | None = None  # the local authority, a trust anchor when verifying on this machine


def config_dir() -> Path:
    """The folder kinema keeps its local signing key in."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kinema"


# ---------------------------------------------------------------------------- credentials


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kinema (local)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_local(folder: Path) -> None:
    """An EC P-256 authority and a signer certificate it issues (EKU emailProtection), valid 10 years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"kinema local authority {secrets.token_hex(4)}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("kinema local signer")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {
        CA_CERT: (ca.public_bytes(pem), 0o644),
        SIGNER_CERT: (cert.public_bytes(pem) + ca.public_bytes(pem), 0o644),
        SIGNER_KEY: (key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600),
    }
    # The authority's own key is not kept: nothing else is ever issued with it.
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmps = []
    try:
        for name, (data, mode) in files.items():
            tmp = folder / f".{name}.{secrets.token_hex(4)}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            tmps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for tmp, name in zip(tmps, files):
            os.replace(tmp, folder / name)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def local_credentials(create: bool = True) -> Credentials | None:
    """This machine's signer from the config folder, made on first use; None when absent and create is False."""
    folder = config_dir()
    paths = [folder / n for n in (CA_CERT, SIGNER_CERT, SIGNER_KEY)]
    if not all(p.is_file() for p in paths):
        if not create:
            return None
        try:
            _make_local(folder)
        except OSError as e:
            raise InputError(f"cannot create the local signing key in {folder}: {e.strerror or e}; "
                             f"set {CONFIG_ENV} to a writable folder or pass --sign-cert and --sign-key") from None
    try:
        ca, chain, key = (p.read_bytes() for p in paths)
    except OSError as e:
        raise InputError(f"cannot read the local signing key in {folder}: {e.strerror or e}") from None
    try:  # checked now, not after a whole generation: a damaged file is one line before any work
        _, alg = _check_pair(chain, key, SIGNER_CERT, SIGNER_KEY)
    except InputError as e:
        raise InputError(f"the local signing key in {folder} is unusable ({e}); remove {SIGNER_CERT}, {SIGNER_KEY} and {CA_CERT} "
                         "there to have a new one made, or pass --sign-cert and --sign-key") from None
    return Credentials(chain, key, alg, "local", anchor_pem=ca)


def _read_pem(path: str | os.PathLike, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {os.fspath(path)!r}: {'is a folder' if p.is_dir() else 'no such file'}")
    if p.stat().st_size > MAX_PEM_BYTES:
        raise InputError(f"{what} {os.fspath(path)!r}: larger than {MAX_PEM_BYTES} bytes; expected a PEM file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise InputError(f"{what} {os.fspath(path)!r}: cannot read it ({e.strerror or e})") from None


def _check_pair(chain_pem: bytes, key_pem: bytes, cert: str, key: str):
    """(the first certificate, the C2PA algorithm) of a PEM chain and key that parse and match; InputError naming them."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise InputError(f"{cert}: not a PEM certificate chain (-----BEGIN CERTIFICATE-----)") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise InputError(f"{key}: the key is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{key}: not a PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name in ("secp256r1", "secp384r1", "secp521r1"):
        alg = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}[private.curve.name]
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    else:
        raise InputError(f"{key}: a key of type {type(private).__name__.strip('_').removesuffix('PrivateKey')}; "
                         "C2PA signing here needs an EC P-256/P-384/P-521 or Ed25519 key")
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise InputError(f"{key} does not match the first certificate in {cert}")
    return certs[0], alg


def user_credentials(cert: str | os.PathLike, key: str | os.PathLike) -> Credentials:
    """A user's certificate chain and key, checked now (parse, match, dates, a trial signature)."""
    chain_pem, key_pem = _read_pem(cert, "--sign-cert"), _read_pem(key, "--sign-key")
    first, alg = _check_pair(chain_pem, key_pem, f"--sign-cert {os.fspath(cert)!r}", f"--sign-key {os.fspath(key)!r}")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not first.not_valid_before_utc <= now <= first.not_valid_after_utc:
        raise InputError(f"--sign-cert {os.fspath(cert)!r}: the certificate is valid from {first.not_valid_before_utc:%Y-%m-%d} "
                         f"to {first.not_valid_after_utc:%Y-%m-%d}, not now")
    creds = Credentials(chain_pem, key_pem, alg, "user")
    try:
        _trial_sign(creds)
    except Exception as e:  # c2pa's own rules (a self-signed or CA signer, a missing key usage...)
        raise InputError(f"--sign-cert {os.fspath(cert)!r}: C2PA refuses this certificate ({one_line(e)}); its signer profile "
                         "wants digitalSignature key usage, an authority key identifier, and no CA flag") from None
    return creds


def resolve_credentials(cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None) -> Credentials:
    """The user's credentials when both are given, else this machine's local ones."""
    if (cert is None) != (key is None):
        raise InputError("give both --sign-cert and --sign-key (a certificate chain and its private key), or neither")
    if cert is None:
        return local_credentials()
    return user_credentials(cert, key)


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (native libraries write several)."""
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(e).strip()).splitlines()
    return text[0] if text else type(e).__name__


# ---------------------------------------------------------------------------- signing


def manifest_definition(metadata: dict[str, str], *, include_prompt: bool = False, title: str = "video.mp4") -> dict:
    """The C2PA manifest definition for a generated video's settings (`Video.metadata`)."""
    from kinema import __version__

    settings = {k: metadata[k] for k in _SETTINGS if k in metadata}
    if include_prompt:
        settings.update({k: metadata[k] for k in _PROMPTS if k in metadata})
    generation = {"bundle": metadata.get("bundle"), "bundle_sha256": metadata.get("bundle_sha256"),
                  "settings": settings, "prompt_included": include_prompt}
    if "watermark" in metadata:
        generation["watermark"] = metadata["watermark"]
    agent = {"name": "kinema", "version": __version__}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": agent,
                "description": "generated by a text-to-video diffusion model",
            }]}},
            {"label": GENERATION_LABEL, "data": generation},
        ],
    }


def _signer(creds: Credentials):
    import c2pa

    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(creds.alg, creds.chain_pem, creds.key_pem, None))


def sign_stream(manifest: dict, creds: Credentials, src, dst) -> None:
    """Write the MP4 in `src` (binary stream) to `dst` with the signed manifest embedded."""
    import c2pa

    with _signer(creds) as signer, c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(signer, "video/mp4", src, dst)


def sign_mp4(src: Path, dst: Path, metadata: dict[str, str], creds: Credentials, *,
             include_prompt: bool = False, title: str | None = None) -> None:
    """Copy the MP4 at `src` to `dst` (an existing, empty temporary file) with a signed manifest."""
    manifest = manifest_definition(metadata, include_prompt=include_prompt, title=title or Path(dst).name)
    with open(src, "rb") as s, open(dst, "w+b") as d:
        sign_stream(manifest, creds, s, d)


def _trial_sign(creds: Credentials) -> None:
    """Sign a one-frame in-memory MP4: c2pa checks the certificate and key as it would on the real file."""
    import av
    import numpy as np

    src = io.BytesIO()
    with av.open(src, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=1)
        s.width = s.height = 16
        s.pix_fmt = "yuv420p"
        for packet in s.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24").reformat(format="yuv420p")):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    src.seek(0)
    sign_stream(manifest_definition({}), creds, src, io.BytesIO())


def signer_for(creds: Credentials, *, include_prompt: bool = False):
    """A `sign(src, dst, metadata)` hook for VideoWriter: MP4s get a manifest signed with `creds`."""

    def sign(src: Path, dst: Path, metadata: dict[str, str]) -> None:
        sign_mp4(src, dst, metadata, creds, include_prompt=include_prompt)

    return sign


# ---------------------------------------------------------------------------- reading


@dataclass
class ManifestReport:
    """What `read_manifest` found: whether a manifest is there, whether it validates, and what it says."""

    present: bool
    state: str | None = None  # c2pa's validation state: Valid, Trusted or Invalid
    failures: list[dict] = field(default_factory=list)  # {"code", "explanation"}
    trusted_locally: bool = False  # signed by this machine's kinema authority
    generator: str | None = None
    actions: list[dict] = field(default_factory=list)
    generation: dict | None = None
    signer: dict | None = None
    note: str | None = None  # why there is no manifest

    @property
    def valid(self) -> bool:
        """Hashes and signature check out (an untrusted signer alone does not make it invalid)."""
        return self.present and not [f for f in self.failures if f["code"] != "signingCredential.untrusted"]

    def to_dict(self) -> dict:
        return {"present": self.present, "valid": self.valid, "state": self.state, "failures": self.failures,
                "trusted_locally": self.trusted_locally, "generator": self.generator, "actions": self.actions,
                "generation": self.generation, "signer": self.signer, "note": self.note}


def read_manifest(path: str | os.PathLike) -> ManifestReport:
    """Read and validate the C2PA manifest of a file, offline; this machine's local authority counts as trusted."""
    import c2pa

    local = local_credentials(create=False)
    context = None
    if local is not None:
        context = c2pa.Context.from_dict({"verify": {"verify_trust": True}, "trust": {"user_anchors": local.anchor_pem.decode()}})
    try:
        reader = c2pa.Reader(str(path), context=context) if context is not None else c2pa.Reader(str(path))
    except c2pa.C2paError as e:
        kind = type(e).__name__.lstrip("_").removeprefix("C2pa")
        if kind == "ManifestNotFound":
            return ManifestReport(False, note="no C2PA manifest (never signed, or stripped by re-encoding)")
        if kind == "NotSupported":
            return ManifestReport(False, note="C2PA is not read from this file type")
        return ManifestReport(False, state="Invalid", note=f"the manifest cannot be read: {one_line(e)}")
    with reader:
        data = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    active = data.get("manifests", {}).get(data.get("active_manifest"), {})
    failures = [{"code": f.get("code"), "explanation": f.get("explanation")}
                for f in results.get("activeManifest", {}).get("failure", [])]
    failures += [{"code": f.get("code"), "explanation": f.get("explanation")} for f in data.get("validation_status", [])
                 if f.get("code") not in {x["code"] for x in failures} and "mismatch" in str(f.get("code"))]
    report = ManifestReport(True, state=state, failures=failures, trusted_locally=state == "Trusted" and local is not None)
    info = (active.get("claim_generator_info") or [{}])[0]
    report.generator = " ".join(str(info[k]) for k in ("name", "version") if k in info) or active.get("claim_generator")
    for a in active.get("assertions", []):
        if a.get("label", "").startswith("c2pa.actions"):
            report.actions = a.get("data", {}).get("actions", [])
        elif a.get("label") == GENERATION_LABEL:
            report.generation = a.get("data")
    sig = active.get("signature_info") or {}
    report.signer = {k: sig[k] for k in ("issuer", "common_name", "alg", "time") if k in sig} or None
    return report


def signer_for_output(output: str | os.PathLike, cert=None, key=None, *, include_prompt: bool = False):
    """The signing hook for a command's output file, credentials checked now; None for non-mp4 output."""
    if Path(os.fspath(output)).suffix.lower() != ".mp4":
        given = [f for f, v in (("--sign-cert", cert), ("--sign-key", key), ("--c2pa-include-prompt", include_prompt)) if v]
        if given:
            raise InputError(f"{', '.join(given)}: content credentials (C2PA) are written into .mp4 output only, not {os.fspath(output)!r}")
        return None
    return signer_for(resolve_credentials(cert, key), include_prompt=include_prompt)
