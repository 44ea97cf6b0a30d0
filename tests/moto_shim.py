"""moto's AWS emulator, with what Halyard's AWS Private CA tests need and moto lacks.

    halyard-moto-server PORT     # moto's server on 127.0.0.1:PORT (0: any free port)
    halyard-moto-server --check  # only check that this moto can be patched, then exit

Run with the Python of the virtualenv that tests/moto.sh makes (its `halyard-moto-server`
launcher does that). Once listening, it prints `listening on 127.0.0.1:<port>` on stdout.

WHAT THIS CHANGES IN THE EMULATOR, AND WHY (test-side only; Halyard itself has no shim):

1. The SubordinateCACertificate_PathLen<N>/V1 templates. moto (5.2) puts no extension on a
   certificate issued with them (only the CSR's subjectAltName), so the "intermediate" it
   returns is no CA and nothing can chain through it. Real AWS Private CA applies the template:
   basicConstraints CA:true pathlen N (critical), keyUsage keyCertSign, cRLSign and
   digitalSignature (critical), subject and authority key identifiers. This shim adds exactly
   those (patching `CertificateAuthority._x509_extensions`); the subjectAltName still passes
   through from the CSR, as moto and AWS both do.
2. Validity. moto ignores IssueCertificate's `Validity` and makes every certificate valid for
   365 days from now, which would let an intermediate outlive the root moto issued a moment
   earlier. The shim honours `Validity` (ABSOLUTE, END_DATE, DAYS, MONTHS, YEARS) as AWS does
   (patching `ACMPCAResponse.issue_certificate` and `CertificateAuthority.generate_cert`).
3. IdempotencyToken. moto ignores it; AWS returns the first certificate's ARN, issuing nothing
   new, when the same token comes back within five minutes. The shim does the same, so a retry
   of a request that did reach the emulator issues no second certificate.
4. The chain GetCertificate returns. moto returns only the issuing CA's own certificate; AWS
   returns that certificate followed by the chain it was imported with, up to the root, so the
   last certificate is always the root. The shim appends the issuing CA's imported chain
   (patching `CertificateAuthority.get_certificate`; moto keeps that chain base64-encoded as it
   came on the wire, so the shim decodes it), which matters under a subordinate PCA CA.
5. Counting and throttling, for the tests' own assertions (a WSGI wrapper around moto's app;
   moto itself is not changed by it):
     GET  /_halyard/state             -> {"issue_certificate_calls": n, "throttled": n,
                                          "certificates_issued": n, "throttle_remaining": n}
     POST /_halyard/throttle?count=N  -> the next N IssueCertificate calls get HTTP 400
                                          ThrottlingException ("Rate exceeded"), as AWS
                                          answers above the quota
   `issue_certificate_calls` counts every IssueCertificate request that reached the emulator
   (throttled ones too); `certificates_issued` counts certificates actually made (not
   throttled, not answered from an idempotency token). HALYARD_MOTO_THROTTLE=N in the
   environment sets the initial throttle count.

Everything else is moto as released.
"""

import base64
import datetime
import json
import os
import re
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import moto.acmpca.models as pca_models
import moto.acmpca.responses as pca_responses
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

SUBORDINATE_TEMPLATE = re.compile(
    r"^arn:aws[a-z-]*:acm-pca:::template/SubordinateCACertificate_PathLen(\d+)(?:_[A-Za-z]+)*/V\d+$"
)
IDEMPOTENCY_WINDOW_SECS = 300

_lock = threading.Lock()
_state = {
    "issue_certificate_calls": 0,
    "throttled": 0,
    "certificates_issued": 0,
    "throttle_remaining": int(os.environ.get("HALYARD_MOTO_THROTTLE", "0")),
}
# (CA ARN, idempotency token) -> (certificate ARN, when issued)
_tokens = {}
# The validity of the certificate being issued, set by the response handler for the backend
# (moto's backend API has no parameter for it). Issuing happens under _issue_lock.
_issue_lock = threading.Lock()
_pending_validity = threading.local()


# 1. The subordinate CA templates.
_original_extensions = pca_models.CertificateAuthority._x509_extensions


def _x509_extensions(self, csr, template_arn):
    extensions = _original_extensions(self, csr, template_arn)
    match = SUBORDINATE_TEMPLATE.match(template_arn or "")
    if not match:
        return extensions
    path_len = int(match.group(1))
    template = [
        (x509.BasicConstraints(ca=True, path_length=path_len), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False),
        (
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
            False,
        ),
    ]
    # moto adds nothing but the passed-through subjectAltName for this template; keep that.
    return template + [
        (ext, critical)
        for ext, critical in extensions
        if not isinstance(
            ext,
            (
                x509.BasicConstraints,
                x509.KeyUsage,
                x509.SubjectKeyIdentifier,
                x509.AuthorityKeyIdentifier,
            ),
        )
    ]


# 2. Validity.
_original_generate_cert = pca_models.CertificateAuthority.generate_cert


def _generate_cert(self, subject, public_key, extensions):
    not_after = getattr(_pending_validity, "not_after", None)
    if not_after is None:
        return _original_generate_cert(self, subject, public_key, extensions)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(self.issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    # moto signs everything with SHA-512; so does this.
    cert = builder.sign(self.key, hashes.SHA512())
    return cert.public_bytes(serialization.Encoding.PEM)


def _not_after(validity):
    """The notAfter an IssueCertificate `Validity` asks for (AWS's semantics), or None."""
    if not validity:
        return None
    kind, value = validity.get("Type"), int(validity.get("Value"))
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    if kind == "ABSOLUTE":
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if kind == "END_DATE":
        return datetime.datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(
            tzinfo=datetime.timezone.utc
        )
    if kind == "DAYS":
        return now + datetime.timedelta(days=value)
    if kind == "MONTHS":
        return now + datetime.timedelta(days=30 * value)
    if kind == "YEARS":
        return now + datetime.timedelta(days=365 * value)
    raise ValueError(f"unknown Validity Type {kind!r}")


# 3. IdempotencyToken (and the call to 2's validity), in the response handler.
def _issue_certificate(self):
    params = json.loads(self.body)
    ca_arn = params.get("CertificateAuthorityArn")
    token = params.get("IdempotencyToken")
    with _issue_lock:
        if token:
            known = _tokens.get((ca_arn, token))
            if known and time.time() - known[1] < IDEMPOTENCY_WINDOW_SECS:
                return json.dumps({"CertificateArn": known[0]})
        _pending_validity.not_after = _not_after(params.get("Validity"))
        try:
            certificate_arn = self.acmpca_backend.issue_certificate(
                certificate_authority_arn=ca_arn,
                csr=params.get("Csr").encode("utf-8"),
                template_arn=params.get("TemplateArn"),
            )
        finally:
            _pending_validity.not_after = None
        if token:
            _tokens[(ca_arn, token)] = (certificate_arn, time.time())
        with _lock:
            _state["certificates_issued"] += 1
    return json.dumps({"CertificateArn": certificate_arn})


# 4. The whole chain up to the root.
_original_get_certificate = pca_models.CertificateAuthority.get_certificate


def _get_certificate(self, certificate_arn):
    certificate, chain = _original_get_certificate(self, certificate_arn)
    imported = self.certificate_chain
    if isinstance(imported, str):
        # moto keeps ImportCertificateAuthorityCertificate's CertificateChain as it came on the
        # wire, still base64-encoded.
        imported = base64.b64decode(imported)
    if chain and imported:
        chain = chain.strip() + b"\n" + imported.strip()
    return certificate, chain


def patch():
    """Applies changes 1 to 4; fails loudly if moto no longer has what they replace."""
    for owner, name in [
        (pca_models.CertificateAuthority, "_x509_extensions"),
        (pca_models.CertificateAuthority, "generate_cert"),
        (pca_models.CertificateAuthority, "get_certificate"),
        (pca_responses.ACMPCAResponse, "issue_certificate"),
    ]:
        if not callable(getattr(owner, name, None)):
            raise SystemExit(f"moto_shim: moto has no {owner.__name__}.{name} to patch")
    pca_models.CertificateAuthority._x509_extensions = _x509_extensions
    pca_models.CertificateAuthority.generate_cert = _generate_cert
    pca_models.CertificateAuthority.get_certificate = _get_certificate
    pca_responses.ACMPCAResponse.issue_certificate = _issue_certificate


# 5. Counting and throttling.
def _json(start_response, status, body, headers=()):
    data = json.dumps(body).encode("utf-8")
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        + list(headers),
    )
    return [data]


def wrap(app):
    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/_halyard/state" and method == "GET":
            with _lock:
                return _json(start_response, "200 OK", dict(_state))
        if path == "/_halyard/throttle" and method == "POST":
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            with _lock:
                _state["throttle_remaining"] = int(query.get("count", ["1"])[0])
                return _json(start_response, "200 OK", dict(_state))
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if method == "POST" and target.endswith(".IssueCertificate"):
            with _lock:
                _state["issue_certificate_calls"] += 1
                throttle = _state["throttle_remaining"] > 0
                if throttle:
                    _state["throttle_remaining"] -= 1
                    _state["throttled"] += 1
            if throttle:
                # Drain the body: the client may wait for it to be read.
                length = int(environ.get("CONTENT_LENGTH") or 0)
                environ["wsgi.input"].read(length)
                return _json(
                    start_response,
                    "400 Bad Request",
                    {"__type": "ThrottlingException", "message": "Rate exceeded"},
                    [
                        ("x-amzn-ErrorType", "ThrottlingException"),
                        ("x-amzn-RequestId", "halyard-moto-shim-throttled"),
                    ],
                )
        return app(environ, start_response)

    return wrapped


def main(argv):
    if argv == ["--check"]:
        patch()
        return 0
    if len(argv) != 1 or not argv[0].isdigit():
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    patch()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1",
        int(argv[0]),
        wrap(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
