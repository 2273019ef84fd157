"""TLS, mutual TLS, bearer tokens, health List, reflection switched off, and JSON access logs."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from enrich_client import EnrichClient, EnrichError

from .conftest import LoopbackServer, png_bytes


def write_pki(folder: Path, name: str) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, sans=None):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = certificate(f"{name} test CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = certificate("localhost", ca_key, ca_name, server_key,
                         sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = certificate(f"{name} client", ca_key, ca_name, client_key)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "ca": write(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        "server_cert": write(folder / "server.pem", server.public_bytes(serialization.Encoding.PEM)),
        "server_key": write(folder / "server.key", pem_key(server_key)),
        "client_cert": write(folder / "client.pem", client.public_bytes(serialization.Encoding.PEM)),
        "client_key": write(folder / "client.key", pem_key(client_key)),
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    root = tmp_path_factory.mktemp("pki")
    return write_pki(root / "trusted", "trusted"), write_pki(root / "stranger", "stranger")


def test_tls_serves_and_mutual_tls_refuses_a_stranger(bundle_dir: Path, pki):
    trusted, stranger = pki
    server = LoopbackServer(bundle_dir, tls_cert=trusted["server_cert"], tls_key=trusted["server_key"],
                            tls_client_ca=trusted["ca"])
    try:
        server.load()
        target = f"localhost:{server.port}"
        with EnrichClient(target, ca=trusted["ca"], cert=trusted["client_cert"], key=trusted["client_key"],
                          timeout=30) as client:
            assert client.enrich(png_bytes(), caption_mode="skip").status.code == 0
        for cert, key in ((stranger["client_cert"], stranger["client_key"]), (None, None)):
            with EnrichClient(target, ca=trusted["ca"], cert=cert, key=key, timeout=10) as refused:
                with pytest.raises(EnrichError) as raised:
                    refused.enrich(png_bytes(), caption_mode="skip")
                assert raised.value.code == grpc.StatusCode.UNAVAILABLE  # the handshake fails
        with EnrichClient(target, timeout=10) as plaintext, pytest.raises(EnrichError):
            plaintext.enrich(png_bytes(), caption_mode="skip")
    finally:
        server.close()


def test_tls_without_client_certificates(bundle_dir: Path, pki):
    trusted, _ = pki
    server = LoopbackServer(bundle_dir, tls_cert=trusted["server_cert"], tls_key=trusted["server_key"])
    try:
        server.load()
        with EnrichClient(f"127.0.0.1:{server.port}", ca=trusted["ca"], timeout=30) as client:
            assert client.enrich(png_bytes(), caption_mode="skip").status.code == 0
    finally:
        server.close()


def test_health_port_answers_probes_in_plain_text_beside_mutual_tls(bundle_dir: Path, pki, monkeypatch):
    """Kubelet's gRPC probe and docker's HEALTHCHECK (`enrich health`) speak no TLS."""
    from enrich_cli.main import main as enrich

    trusted, _ = pki
    server = LoopbackServer(bundle_dir, tls_cert=trusted["server_cert"], tls_key=trusted["server_key"],
                            tls_client_ca=trusted["ca"], health_port=0)
    health_address = f"127.0.0.1:{server.server.ports['health_port']}"
    try:
        assert enrich(["health", "--address", health_address]) == 1  # NOT_SERVING while loading
        server.load()
        monkeypatch.setenv("ENRICH_HEALTH_PORT", str(server.server.ports['health_port']))
        assert enrich(["health"]) == 0
        assert enrich(["health", "--service", "enrich.v1.Enrich"]) == 0
        monkeypatch.delenv("ENRICH_HEALTH_PORT")
        monkeypatch.setenv("ENRICH_TLS_CERT", str(trusted["server_cert"]))
        assert enrich(["health"]) == 2  # TLS without a health port: says what to set
        with grpc.insecure_channel(health_address) as channel:  # health only: the Enrich API stays behind mTLS
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary("/enrich.v1.Enrich/GetModelInfo")(b"", timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.close()
    with grpc.insecure_channel(health_address) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_bearer_tokens_guard_enrich_but_not_health(bundle_dir: Path, tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# one token per line\ns3cret-one\n\ns3cret-two\n")
    server = LoopbackServer(bundle_dir, auth_tokens_file=tokens, reflection=False)
    try:
        server.load()
        for token in ("s3cret-one", "s3cret-two"):
            with EnrichClient(server.target, token=token, timeout=30) as client:
                assert client.enrich(png_bytes(), caption_mode="skip").status.code == 0
                [answer] = client.enrich_stream([("a", png_bytes())], caption_mode="skip")
                assert answer.status.code == 0
        for token in (None, "wrong", "s3cret-one "[:-2]):
            with EnrichClient(server.target, token=token, timeout=30) as client:
                for call in (lambda c=client: c.enrich(png_bytes()), lambda c=client: c.model_info(),
                             lambda c=client: list(c.enrich_stream([("a", png_bytes())]))):
                    with pytest.raises(EnrichError) as raised:
                        call()
                    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
                assert client.health() == "SERVING"
                if token is None:
                    assert raised.value.reason == "TOKEN_INVALID"
        with grpc.insecure_channel(server.target) as channel:  # reflection switched off
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.close()


def test_health_list_reports_every_service(server: LoopbackServer):
    with grpc.insecure_channel(server.target) as channel:
        statuses = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10).statuses
    assert {name: status.status for name, status in statuses.items()} == {
        "": health_pb2.HealthCheckResponse.SERVING, "enrich.v1.Enrich": health_pb2.HealthCheckResponse.SERVING}


def test_json_access_log_has_one_line_per_call_and_no_secrets(bundle_dir: Path, tmp_path: Path):
    from enrich_cli.server_process import start_server

    log_path = tmp_path / "server.log"
    secret = "tok-that-must-not-be-logged"
    os.environ["ENRICH_AUTH_TOKENS"] = secret
    try:
        served = start_server(bundle_dir, log_path, "--log-format", "json")
        process, port = served.process, served.port
    finally:
        del os.environ["ENRICH_AUTH_TOKENS"]
    try:
        with EnrichClient(f"127.0.0.1:{port}", token=secret, timeout=30) as client:
            client.enrich(png_bytes(), "good-one", caption_mode="skip")
            with pytest.raises(EnrichError):
                client.enrich(b"not an image", "bad-one")
            list(client.enrich_stream([("s1", png_bytes()), ("s2", b"junk")], caption_mode="skip"))
        with EnrichClient(f"127.0.0.1:{port}", token="wrong", timeout=30) as stranger, pytest.raises(EnrichError):
            stranger.model_info()
    finally:
        process.terminate()
        assert process.wait(30) == 0
    text = log_path.read_text()
    assert secret not in text and "Traceback" not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    access = [line for line in lines if line["logger"] == "enrich.access"]
    # One line per call, whatever its outcome: two unary calls, one stream (of two items), one refused token.
    assert sorted((line["method"], line["request_id"]) for line in access) == [
        ("Enrich", "bad-one"), ("Enrich", "good-one"), ("EnrichStream", ""), ("GetModelInfo", "")], access
    calls = {line["request_id"] or line["method"]: line for line in access}
    assert calls["good-one"]["code"] == "OK" and calls["good-one"]["bytes"] == len(png_bytes())
    assert calls["good-one"]["items"] == 1
    assert (calls["bad-one"]["code"], calls["bad-one"]["reason"]) == ("INVALID_ARGUMENT", "IMAGE_UNDECODABLE")
    stream = calls["EnrichStream"]
    assert stream["items"] == 2 and stream["failed_items"] == {"IMAGE_UNDECODABLE": 1} and stream["code"] == "OK"
    assert (calls["GetModelInfo"]["code"], calls["GetModelInfo"]["reason"]) == ("UNAUTHENTICATED", "TOKEN_INVALID")
    assert all({"time", "level", "message"} <= set(line) for line in lines)


def test_server_refuses_bad_tls_settings_in_one_line(bundle_dir: Path, tmp_path: Path):
    missing = tmp_path / "nope.pem"
    result = subprocess.run([sys.executable, "-m", "enrich_cli.main", "serve", "--model", str(bundle_dir), "--port",
                             "0", "--tls-cert", str(missing), "--tls-key", str(missing)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--tls-key" in result.stderr and "Traceback" not in result.stderr
