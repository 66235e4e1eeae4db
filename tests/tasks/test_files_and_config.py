"""Configuration is read on purpose: the settings from the environment, the file roots
they give sources, and the Celery configuration. (File sources themselves:
tests/fetch/test_files_and_specs.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.httpio import LowSpeed
from ingestq.fetch.specs import source_from_spec, spec_from_text
from ingestq.jobs.config import Settings, hide_password
from ingestq.tasks.app import celery_config, celery_url


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.bin").write_bytes(b"0123456789")
    return allowed, tmp_path


def test_workers_refuse_files_without_roots_but_the_embedded_default_reads_them(
    roots: tuple[Path, Path],
) -> None:
    allowed, _ = roots
    spec = spec_from_text(str(allowed / "ok.bin"))
    worker = Settings.from_env({"INGESTQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(errdefs.PermissionDenied):
        source_from_spec(spec, worker.fetch_options()).open()
    embedded = Settings.from_env({})
    opened = source_from_spec(spec, embedded.fetch_options()).open()
    assert opened.stream.read(3) == b"012"
    opened.stream.close()


def test_settings_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "INGESTQ_REDIS_URL": "rediss://:s3cret@redis.example:6380/2",
            "INGESTQ_LOCK_URL": "redis://locks:6379/0",
            "INGESTQ_VISIBILITY_TIMEOUT": "7200",
            "INGESTQ_FILE_ROOTS": os.pathsep.join(["/a", "/b"]),
        }
    )
    assert s.broker_url == s.result_url == "rediss://:s3cret@redis.example:6380/2"
    assert s.lock_url == "redis://locks:6379/0"
    assert s.file_roots == (Path("/a"), Path("/b"))
    assert s.queued and not Settings.from_env({}).queued
    with pytest.raises(errdefs.InvalidArgument):
        Settings.from_env({"INGESTQ_REDIS_URL": "amqp://x"})
    with pytest.raises(errdefs.InvalidArgument):
        Settings.from_env({"INGESTQ_LEASE_TTL": "soon"})
    with pytest.raises(errdefs.InvalidArgument, match="INGESTQ_GC_QUARANTINE_MAX_AGE"):
        Settings.from_env({"INGESTQ_GC_QUARANTINE_MAX_AGE": "2000000000d"})


def test_a_redis_socket_url_serves_broker_results_and_leases() -> None:
    """redis-py's ``unix://`` everywhere; Celery gets kombu's ``redis+socket://`` (and
    its backend the ``socket://`` it parses), with the db as ``virtual_host``."""
    s = Settings.from_env({"INGESTQ_REDIS_URL": "unix:///run/redis.sock?db=3"})
    assert (s.broker_url, s.result_url, s.lock_url) == ("unix:///run/redis.sock?db=3",) * 3
    conf = celery_config(s)
    assert conf["broker_url"] == "redis+socket:///run/redis.sock?virtual_host=3"
    assert conf["result_backend"] == "socket:///run/redis.sock?virtual_host=3"
    assert celery_url("unix://:pw@/r.sock") == "redis+socket://:pw@/r.sock?virtual_host=0"
    assert celery_url("redis://r:6379/0") == "redis://r:6379/0"
    assert hide_password("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    # Shown (messages, ingestq info) with the password hidden and the db kept.
    assert hide_password(celery_url("unix://:pw@/r.sock?db=2")) == (
        "redis+socket://:***@/r.sock?virtual_host=2"
    )
    for bad in ("unix:///r.sock?db=x", "unix:///r.sock?timeout=3", "unix:///r.sock?db=1&db=2",
                "unix://", "unix:///r.sock?db=\u00b2", "unix://host/r.sock"):  # fmt: skip
        with pytest.raises(errdefs.InvalidArgument):
            celery_url(bad)
        with pytest.raises(errdefs.InvalidArgument, match="a Redis socket URL"):
            Settings.from_env({"INGESTQ_REDIS_URL": bad})  # refused at once, not at import
    with pytest.raises(errdefs.InvalidArgument, match="result URL must be redis://"):
        Settings.from_env(
            {"INGESTQ_BROKER_URL": "redis://r:6379/0", "INGESTQ_RESULT_URL": "http://r"}
        )


def test_the_low_speed_rule_comes_from_the_environment_and_zero_disables_it() -> None:
    assert Settings.from_env({}).fetch_options().low_speed == LowSpeed(1024, 60.0)
    env = {"INGESTQ_LOW_SPEED_LIMIT": "2048", "INGESTQ_LOW_SPEED_TIME": "5"}
    assert Settings.from_env(env).fetch_options().low_speed == LowSpeed(2048, 5.0)
    off = Settings.from_env({"INGESTQ_LOW_SPEED_LIMIT": "0"}).fetch_options().low_speed
    assert not off.enabled
    with pytest.raises(errdefs.InvalidArgument, match="INGESTQ_LOW_SPEED_TIME"):
        Settings.from_env({"INGESTQ_LOW_SPEED_TIME": "-1"})


def test_the_celery_configuration_is_chosen_on_purpose() -> None:
    conf = celery_config(Settings.from_env({"INGESTQ_REDIS_URL": "redis://h:1/0"}))
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 43200
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 43200
    assert conf["broker_transport_options"]["socket_timeout"] == 30
    assert conf["result_extended"] and conf["result_expires"] == 7 * 24 * 3600
    assert "pickle" not in repr(conf)
