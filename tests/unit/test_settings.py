"""Settings: the state directory, the API address and the Kafka cluster, from env and file."""

from __future__ import annotations

import pytest

from sluice.settings import Settings


def test_home_and_port_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("SLUICE_API_PORT", "9123")
    settings = Settings.from_env()
    assert settings.home == (tmp_path / "h").resolve() and settings.api_port == 9123
    assert settings.api_url() == "http://127.0.0.1:9123"


def test_bad_port_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SLUICE_API_PORT", "eighty")
    with pytest.raises(ValueError, match="SLUICE_API_PORT must be a port number, got 'eighty'"):
        Settings.from_env()


def test_token_is_created_once_and_private(tmp_path):
    settings = Settings(home=tmp_path)
    token = settings.token(create=True)
    assert token and settings.token() == token
    assert (settings.token_path.stat().st_mode & 0o777) == 0o600


def test_kafka_cluster_from_config_file_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SLUICE_KAFKA_BOOTSTRAP", raising=False)
    settings = Settings(home=tmp_path)
    assert settings.kafka_cluster().bootstrap is None  # no file: the embedded broker
    settings.config_path.write_text(
        "kafka:\n  bootstrap_servers: [b1:9092, b2:9092]\n"
        "  security: {security_protocol: SASL_SSL, sasl_plain_username: me}\n")
    cluster = settings.kafka_cluster()
    assert cluster.bootstrap == "b1:9092,b2:9092"
    assert cluster.security == {"security_protocol": "SASL_SSL", "sasl_plain_username": "me"}
    monkeypatch.setenv("SLUICE_KAFKA_BOOTSTRAP", "other:9092")
    assert settings.kafka_cluster().bootstrap == "other:9092"


@pytest.mark.parametrize(("text", "message"), [
    ("kafka:\n  brokers: x\n", "kafka.brokers: unknown field"),
    ("kafka:\n  security: {sasl_pass: x}\n", "kafka.security.sasl_pass: unknown setting"),
    ("kafka: [1]\n", "'kafka' must be a mapping"),
    ("kafka: {a: [\n", "not valid YAML"),
])
def test_bad_config_files_name_the_setting(tmp_path, text, message):
    settings = Settings(home=tmp_path)
    settings.config_path.write_text(text)
    with pytest.raises(ValueError, match=message):
        settings.kafka_cluster()


def test_api_host_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.delenv("SLUICE_API_URL", raising=False)
    local = Settings.from_env()
    assert local.api_host == "127.0.0.1" and local.loopback_only
    monkeypatch.setenv("SLUICE_API_HOST", "0.0.0.0")
    monkeypatch.setenv("SLUICE_API_PORT", "8123")
    everywhere = Settings.from_env()
    assert everywhere.api_host == "0.0.0.0" and not everywhere.loopback_only
    assert everywhere.api_url() == "http://127.0.0.1:8123"  # what a local client connects to
