"""Content credentials: `kinema generate` MP4s carry a C2PA manifest that c2pa-python's Reader validates;
a changed frame invalidates it; user keys are checked before any work; `kinema verify` reports both marks."""

from __future__ import annotations

import datetime
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import av
import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kinema.runtime.safety.marks import MarkRule
from kinema.runtime.safety import provenance
from kinema.runtime.bundle.load import load_bundle
from kinema.runtime.errors import InputError
from kinema.runtime.video.core import Video, read_video

FAST = ["--steps", "2", "--frames", "5"]
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def run_cli(*args, cwd, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "kinema.runtime.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level ISO BMFF boxes: type -> (offset, size), from the box headers."""
    out, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        out.setdefault(kind.decode("latin-1"), (pos, size))
        pos += size
    return out


def read_c2pa(path: Path) -> tuple[str, dict, dict]:
    """c2pa-python's own Reader, default settings: (validation state, active manifest, validation results)."""
    with c2pa.Reader(str(path)) as r:
        data = json.loads(r.json())
        return r.get_validation_state(), data["manifests"][data["active_manifest"]], r.get_validation_results()


@pytest.fixture(scope="module")
def generated(tiny_bundle, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gen")
    r = run_cli("generate", "a red ball bouncing", "--bundle", tiny_bundle, *FAST, "--seed", "7", "-q", "-o", d / "clip.mp4", cwd=d)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in d.iterdir()) == ["clip.mp4"]  # no temporary file left
    return d / "clip.mp4"


@pytest.fixture(scope="module")
def shapes_clip(tmp_path_factory) -> Path:
    """A kinema-made clip with realistic content (a ShapesWorld render, 17 frames), saved as kinema saves it.

    The random-init test bundle draws noise, which hides the watermark (score ~3.5 on its
    5-frame clips); trained-model output scores 13-16 (benchmarks/results/watermark_robustness/result.md)."""
    from kinema.models import shapes_bench

    row = shapes_bench.load_prompts(Path(shapes_bench.__file__).parent / "data" / "shapes_prompts.jsonl")[3]
    video = Video(shapes_bench.ground_truth_generate(row, 0), 8.0, {"generator": "kinema test", "seed": "0"}, marks=MarkRule())
    return video.save(tmp_path_factory.mktemp("shapes") / "shapes.mp4")


def test_generated_mp4_validates_with_c2pa_reader(generated, tiny_bundle):
    state, m, results = read_c2pa(generated)
    assert state == "Valid"
    failures = [f["code"] for f in results["activeManifest"]["failure"]]
    assert failures == ["signingCredential.untrusted"]  # a local authority nobody else trusts; nothing else fails
    successes = {f["code"] for f in results["activeManifest"]["success"]}
    assert {"claimSignature.validated", "assertion.bmffHash.match"} <= successes
    from kinema import __version__

    assert m["claim_generator_info"][0]["name"] == "kinema" and m["claim_generator_info"][0]["version"] == __version__
    assertions = {a["label"]: a["data"] for a in m["assertions"]}
    (action,) = assertions["c2pa.actions.v2"]["actions"]
    assert action["action"] == "c2pa.created" and action["digitalSourceType"] == TRAINED
    gen = assertions[provenance.GENERATION_LABEL]
    bundle = load_bundle(tiny_bundle)
    assert gen["bundle"] == bundle.name and gen["bundle_sha256"] == bundle.digest
    assert gen["settings"]["seed"] == "7" and gen["settings"]["steps"] == "2" and gen["settings"]["frames"] == "5"
    assert "prompt" not in gen["settings"] and gen["prompt_included"] is False
    assert "red ball" not in json.dumps(m)


def test_changed_frame_is_invalid(generated, tmp_path):
    data = bytearray(generated.read_bytes())
    off, size = boxes(bytes(data))["mdat"]
    for i in range(off + size // 2, off + size // 2 + 16):  # 16 bytes of coded picture data
        data[i] ^= 0xFF
    bad = tmp_path / "tampered.mp4"
    bad.write_bytes(bytes(data))
    frames_ok, frames_bad = read_video(generated)[0], read_video(bad)[0]
    assert frames_ok.shape == frames_bad.shape and not np.array_equal(frames_ok, frames_bad)  # a frame really changed
    state, _, results = read_c2pa(bad)
    assert state == "Invalid"
    assert "assertion.bmffHash.mismatch" in [f["code"] for f in results["activeManifest"]["failure"]]
    r = run_cli("verify", bad, cwd=tmp_path)
    assert r.returncode == 1 and "C2PA       INVALID: assertion.bmffHash.mismatch" in r.stdout, r.stdout + r.stderr


def test_verify_reports_manifest_and_watermark(generated, shapes_clip, tmp_path):
    r = run_cli("verify", generated, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "C2PA       valid, signed by this machine's kinema key" in r.stdout  # the local authority is the anchor here
    assert "action     c2pa.created (trainedAlgorithmicMedia)" in r.stdout
    assert "watermark  " in r.stdout
    r = run_cli("verify", shapes_clip, cwd=tmp_path)
    assert r.returncode == 0 and "watermark  detected" in r.stdout, r.stdout + r.stderr
    j = json.loads(run_cli("verify", shapes_clip, "--json", cwd=tmp_path).stdout)
    assert j["c2pa"]["valid"] and j["c2pa"]["state"] == "Trusted" and j["watermark"]["present"]
    assert j["watermark"]["score"] > 2 * j["watermark"]["threshold"]


def test_verify_finds_watermark_after_reencode_strips_manifest(shapes_clip, tmp_path):
    frames, _ = read_video(shapes_clip)
    out = tmp_path / "reencoded.mp4"
    with av.open(str(out), "w") as c:  # libx264 CRF 28, what a video site might do
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt, s.options = frames.shape[2], frames.shape[1], "yuv420p", {"crf": "28"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    j = json.loads(run_cli("verify", out, "--json", cwd=tmp_path).stdout)
    assert j["c2pa"]["present"] is False and "no C2PA manifest" in j["c2pa"]["note"]
    assert j["watermark"]["present"], j["watermark"]


def test_include_prompt(tiny_bundle, tmp_path):
    r = run_cli("generate", "a blue square", "--bundle", tiny_bundle, *FAST, "-q", "--c2pa-include-prompt", "-o", tmp_path / "p.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, m, _ = read_c2pa(tmp_path / "p.mp4")
    gen = {a["label"]: a["data"] for a in m["assertions"]}[provenance.GENERATION_LABEL]
    assert gen["settings"]["prompt"] == "a blue square" and gen["prompt_included"] is True


# ---------------------------------------------------------------------------- user credentials


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, days: int = 30, start_days: int = -1, aki: bool = True):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)])).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now + datetime.timedelta(days=start_days))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True))
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    if not ca and aki:  # C2PA's certificate profile wants the authority key identifier on a signer certificate
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


PEM = serialization.Encoding.PEM


def _key_pem(key, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, enc)


@pytest.fixture(scope="module")
def user_pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, key, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("Test Studio CA", ca_key, "Test Studio CA", ca_key, ca=True, days=365)
    leaf = _cert("Test Studio signer", key, "Test Studio CA", ca_key, ca=False)
    files = {
        "chain": leaf.public_bytes(PEM) + ca.public_bytes(PEM),
        "key": _key_pem(key),
        "other_key": _key_pem(other),
        "encrypted_key": _key_pem(key, b"secret"),
        "no_aki": _cert("Test Studio signer", key, "Test Studio CA", ca_key, ca=False, aki=False).public_bytes(PEM) + ca.public_bytes(PEM),
        "expired": _cert("Test Studio signer", key, "Test Studio CA", ca_key, ca=False, days=-1, start_days=-10).public_bytes(PEM) + ca.public_bytes(PEM),
        "rsa_key": _key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "text": b"hello, not a certificate\n",
    }
    for name, data in files.items():
        (d / f"{name}.pem").write_bytes(data)
    return {name: d / f"{name}.pem" for name in files}


def test_user_supplied_key_signs(tiny_bundle, user_pki, tmp_path):
    r = run_cli("generate", "a red ball", "--bundle", tiny_bundle, *FAST, "-q", "--sign-cert", user_pki["chain"],
                "--sign-key", user_pki["key"], "-o", tmp_path / "u.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state, m, _ = read_c2pa(tmp_path / "u.mp4")
    assert state == "Valid" and m["signature_info"]["common_name"] == "Test Studio signer"


@pytest.mark.parametrize("cert, key, needle", [
    ("missing", "key", "--sign-cert"),
    ("chain", "missing", "--sign-key"),
    ("text", "key", "not a PEM certificate chain"),
    ("chain", "text", "not a PEM private key"),
    ("chain", "other_key", "does not match the first certificate"),
    ("chain", "encrypted_key", "the key is encrypted"),
    ("chain", "rsa_key", "a key of type RSA; C2PA signing here needs an EC"),
    ("expired", "key", "not now"),
    ("no_aki", "key", "C2PA refuses this certificate"),
    ("chain", None, "give both --sign-cert and --sign-key"),
])
def test_bad_user_credentials_one_line_before_work(user_pki, tmp_path, cert, key, needle):
    out = tmp_path / "out"
    out.mkdir()
    args = ["--sign-cert", user_pki.get(cert, tmp_path / "nope.pem")]
    if key is not None:
        args += ["--sign-key", user_pki.get(key, tmp_path / "nope.pem")]
    # the bundle does not exist: the credentials are checked before it would be opened
    r = run_cli("generate", "a red ball", "--bundle", tmp_path / "no-bundle", *args, "-o", out / "x.mp4", cwd=out)
    one_line_error(r, "kinema generate: error:", needle)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: d, "is a folder"),
    (lambda d: (d / "notes.mp4").write_text("just text") and d / "notes.mp4", "not a readable video"),
    (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "not a readable video"),
])
def test_verify_bad_files_one_line(tmp_path, make, needle):
    path = make(tmp_path)
    one_line_error(run_cli("verify", path, cwd=tmp_path), "kinema verify: error:", needle)


def test_verify_audio_only_file(tmp_path):
    path = tmp_path / "tone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    one_line_error(run_cli("verify", path, cwd=tmp_path), "not a video (no video stream)")


# ---------------------------------------------------------------------------- local key, atomic write


def test_local_key_made_once_in_config_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert provenance.config_dir() == tmp_path / "xdg" / "kinema"
    assert provenance.local_credentials(create=False) is None
    first = provenance.local_credentials()
    folder = tmp_path / "xdg" / "kinema"
    assert sorted(p.name for p in folder.iterdir()) == sorted([provenance.CA_CERT, provenance.SIGNER_CERT, provenance.SIGNER_KEY])
    assert (folder / provenance.SIGNER_KEY).stat().st_mode & 0o077 == 0  # the key is private to the user
    assert provenance.local_credentials() == first  # reused, not remade
    certs = x509.load_pem_x509_certificates(first.chain_pem)
    assert [c.subject for c in certs][1] == certs[0].issuer  # signer issued by the local authority
    key = serialization.load_pem_private_key(first.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    eku = certs[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku


@pytest.mark.parametrize("damage", ["truncated key", "other key", "garbage chain"])
def test_a_damaged_local_key_is_one_line_before_any_work(tmp_path, damage):
    """It used to surface as a C2PA traceback after the whole generation."""
    config = tmp_path / "config"
    env = {provenance.CONFIG_ENV: str(config)}
    subprocess.run([sys.executable, "-c", "from kinema.runtime.safety import provenance; provenance.local_credentials()"],
                   env=dict(os.environ, **env), check=True)
    key, chain = config / provenance.SIGNER_KEY, config / provenance.SIGNER_CERT
    if damage == "truncated key":
        key.write_bytes(key.read_bytes()[:60])
    elif damage == "other key":
        key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    else:
        chain.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    out = tmp_path / "out"
    out.mkdir()
    # no bundle at that path: the key is checked before the bundle would be read
    r = run_cli("generate", "a red ball", "--bundle", tmp_path / "no-bundle", "-o", out / "x.mp4", cwd=out, env=env)
    one_line_error(r, "kinema generate: error:", f"the local signing key in {config} is unusable")
    assert list(out.iterdir()) == []


def test_failed_signing_leaves_nothing(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous")
    video = Video(np.full((3, 32, 32, 3), 90, np.uint8), 8.0, {"generator": "kinema test"}, marks=MarkRule())

    def broken(src, dst, metadata):
        Path(dst).write_bytes(b"half")
        raise RuntimeError("signer failed")

    with pytest.raises(RuntimeError, match="signer failed"):
        video.save(target, sign=broken)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_video_save_signs_kinema_clips_only(tmp_path):
    made = Video(np.full((3, 32, 32, 3), 90, np.uint8), 8.0, {"generator": "kinema test", "seed": "1"}, marks=MarkRule())
    made.save(tmp_path / "a.mp4")
    assert read_c2pa(tmp_path / "a.mp4")[0] == "Valid"
    Video(made.frames, 8.0, {}, marks=MarkRule()).save(tmp_path / "b.mp4")  # kinema's rule, but not made by kinema: left alone
    with pytest.raises(c2pa.C2paError):
        read_c2pa(tmp_path / "b.mp4")
    with pytest.raises(InputError, match=r"\.mp4 files only"):
        made.save(tmp_path / "c.gif", sign=provenance.signer_for(provenance.local_credentials()))
