"""Secrets masked in what the project writes and prints (config/masking.py), on real files and real loggers.

The end-to-end checks: tests/test_trackers.py (a sweep with ${oc.env:...} and a real mlflow server) and
tests/test_study_hosts.py (a PostgreSQL role with a password and a tracking URL with another, grepped for)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import cli_overrides, run_cli
from fmnist_lightning.config.files import write_json
from fmnist_lightning.config.masking import MaskSecretsFilter, holds_masked_secret, mask_file, mask_text, mask_values
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.training.resume import resume_overrides


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "hydra.sweeper.storage=postgresql+psycopg://fm:s3cr%40t@10.0.0.2:5432/db",
            "hydra.sweeper.storage=postgresql+psycopg://fm:***@10.0.0.2:5432/db",
        ),
        ("tracking_uri: http://u:p@ss@127.0.0.1:5000", "tracking_uri: http://u:***@127.0.0.1:5000"),
        # As sweepers write overrides, in Hydra's escaped grammar.
        (
            r"logger.mlflow.tracking_uri=http\://fmnist\:pw@h\:5000",
            r"logger.mlflow.tracking_uri=http\://fmnist\:***@h\:5000",
        ),
        ("wandb.api_key=abc123 password: hunter2", "wandb.api_key=*** password: '***'"),
        ('{"MLFLOW_TRACKING_PASSWORD": "zz"}', '{"MLFLOW_TRACKING_PASSWORD": "***"}'),
        # A value runs to where the next override, key or line begins: commas, spaces and quotes inside it stay hidden.
        (
            "#0 : logger.api_key=ab,cd model=x\n#1 : logger.api_key=ef",
            "#0 : logger.api_key=*** model=x\n#1 : logger.api_key=***",
        ),
        ("password: pa ss  # set by ops", "password: '***'  # set by ops"),
        ("http://u:pa ss@h/db", "http://u:***@h/db"),
        ("{'api_key': 'ab,c\\'d}', 'x': 1}", "{'api_key': '***', 'x': 1}"),
        ('{"token": "a\\"b, c", "y": 2}', '{"token": "***", "y": 2}'),
        ("{password: ab, user: x}", "{password: '***', user: x}"),
        ("password: 'it''s me'", "password: '***'"),
        ("Trainer(api_key=abc, model=x)", "Trainer(api_key=***, model=x)"),
        ("token=choice(a, b) seed=1", "token=*** seed=1"),
        # Inside a call, its closing parenthesis ends the value and stays; one inside the value does not.
        ("connect(user=x, password=abc) failed", "connect(user=x, password=***) failed"),
        ("f(password=ab)cd).", "f(password=***)."),
        ("http://token:abc@host/x", "http://token:***@host/x"),
        # A sweep's values, all of them; brackets inside an override's value; a quote in a URL's password.
        ("- logger.password='a b',c", "- logger.password=***"),
        ("password=[a,b],[c,d] x=1", "password=*** x=1"),
        ("password: XQZ],XQZ", "password: '***'"),
        ("{a: {password: x}, b: 1}", "{a: {password: '***'}, b: 1}"),
        ("url: postgresql://u:pa'ss@h/db", "url: postgresql://u:***@h/db"),
        ("override_dirname: +x.password=1,+x.token=2,seed=3", "override_dirname: +x.password=***,+x.token=***,seed=3"),
        ('{"token": 123, "x": 1}', '{"token": "***", "x": 1}'),
        ("password: abc\r\nx: 1\r\n", "password: '***'\r\nx: 1\r\n"),
        # Left alone: no password, an interpolation that names where it is, a null, a key that only looks alike.
        ("http://host:5000/path sqlite:///a/b.db", "http://host:5000/path sqlite:///a/b.db"),
        ("storage: ${oc.env:DB_URL}", "storage: ${oc.env:DB_URL}"),
        ("password: null", "password: null"),
        ("tokenizer_lr=0.1", "tokenizer_lr=0.1"),
        ("password: ''", "password: ''"),
        ("an invalid token:abc", "an invalid token:abc"),  # prose, not YAML: no blank after the colon
    ],
)
def test_mask_text(text: str, shown: str) -> None:
    assert mask_text(text) == shown
    assert mask_text(shown) == shown  # masking twice changes nothing


@pytest.mark.parametrize(
    "value",
    [
        "!pa\\",  # a backslash last: YAML's single quotes do not escape
        "x" * 30 + " " + "y" * 80 + " zz",  # folded onto a second line
        "-----BEGIN KEY-----\nAAAA\nBBBB\n-----END KEY-----\n",  # a quoted scalar over several lines
        "line1\nline2",
        "*star",
    ],
    ids=["backslash-last", "folded", "pem", "two-lines", "star"],
)
def test_a_masked_yaml_file_is_still_yaml_and_shows_no_part_of_the_secret(value: str, tmp_path: Path) -> None:
    # As the .hydra/ files are written (OmegaConf.save) and then rewritten masked; resume and summaries read them.
    config = {"a": 1, "credentials": value, "logger": {"password": value}, "list": [f"logger.token={value}"], "z": 2}
    OmegaConf.save(OmegaConf.create(config), tmp_path / "config.yaml")
    assert mask_file(tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert not any(len(part) > 2 and part in text for part in value.split())
    assert OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml")) == {
        "a": 1,
        "credentials": "***",
        "logger": {"password": "***"},
        "list": ["logger.token=***"],
        "z": 2,
    }


def test_masking_a_long_line_takes_linear_time() -> None:
    line = "http://h:5000/x " * 4000  # 64 KB of URLs without a password: each is looked at once
    started = time.process_time()  # this process's CPU time: another process on the 2 cores does not count
    assert mask_text(line) == line
    assert time.process_time() - started < 1


def test_mask_values_walks_a_config() -> None:
    record = {
        "logger": {"url": "redis://:pw@h:1", "client_secret": "s", "tokenizer": "bpe"},
        "list": ["mysql://u:p@h/d"],
    }
    assert mask_values(record) == {
        "logger": {"url": "redis://:***@h:1", "client_secret": "***", "tokenizer": "bpe"},
        "list": ["mysql://u:***@h/d"],
    }


def test_the_logging_filter_masks_messages_arguments_and_tracebacks(tmp_path: Path) -> None:
    logger = logging.getLogger("test_masking")
    handler = logging.FileHandler(tmp_path / "train.log")
    handler.addFilter(MaskSecretsFilter())
    logger.addHandler(handler)
    try:
        logger.warning("#0 : %s", "storage=postgresql://u:pw-1@db/x")
        try:
            raise RuntimeError("cannot connect to http://u:pw-2@host")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "train.log").read_text()
    assert "pw-1" not in text and "pw-2" not in text and text.count("***") == 3  # the traceback shows the message twice


def test_files_the_project_writes_are_masked_and_hydras_are_rewritten(tmp_path: Path) -> None:
    write_json(tmp_path / "run.json", {"storage": "postgresql://u:pw-3@db/x"})
    assert "pw-3" not in (tmp_path / "run.json").read_text()
    hydra_file = tmp_path / "overrides.yaml"
    hydra_file.write_text("- optim.lr=0.1\n- logger.mlflow.tracking_uri=http://u:pw-4@h:5000\n")
    assert mask_file(hydra_file) and not mask_file(hydra_file)
    assert OmegaConf.load(hydra_file) == ["optim.lr=0.1", "logger.mlflow.tracking_uri=http://u:***@h:5000"]


def test_resume_asks_for_a_masked_secret_again(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(
        OmegaConf.create(["optim.lr=0.1", "logger.mlflow.tracking_uri=http://u:***@h:5000"]),
        tmp_path / ".hydra" / "overrides.yaml",
    )
    assert holds_masked_secret("logger.mlflow.tracking_uri=http://u:***@h:5000") and not holds_masked_secret("x=***")
    with pytest.raises(
        ConfigError,
        match=r"logger.mlflow.tracking_uri held a secret, which the run's files keep as \*\*\*; "
        r"pass it again: resume=.* logger.mlflow.tracking_uri=<value>, or write it as "
        r"\$\{oc.env:VARIABLE\}",
    ):
        resume_overrides(tmp_path)


def test_warnings_printed_outside_logging_are_masked(tmp_path: Path) -> None:
    # The entry points' warning display (cli.hydra_entry.mask_warnings), in a process of its own.
    code = (
        "import warnings; from fmnist_lightning.cli.hydra_entry import mask_warnings; mask_warnings(); "
        "warnings.warn('retrying http://u:pw-warn-9@host:5000/api')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "http://u:***@host:5000/api" in result.stderr and "pw-warn-9" not in result.stderr


def test_a_refused_override_is_quoted_masked(data_root: Path, tmp_path: Path) -> None:
    # Hydra's own message quotes the override it could not apply (the key is logger.mlflow.tracking_uri).
    result = run_cli(
        *cli_overrides(data_root, tmp_path), "logger=mlflow", "logger.tracking_uri=postgresql://u:pw-5@db/x"
    )
    assert result.returncode == 2, result.stderr
    assert "logger.tracking_uri=postgresql://u:***@db/x" in result.stderr and "pw-5" not in result.stderr


def test_a_sweep_that_fails_before_its_first_job_leaves_its_file_masked(data_root: Path, tmp_path: Path) -> None:
    # The basic sweeper writes multirun.yaml, then finds that one swept option does not compose: no job starts.
    sweep = tmp_path / "sweep"
    result = run_cli(
        "--multirun",
        *cli_overrides(data_root, tmp_path),
        "logger=mlflow",
        "logger.mlflow.tracking_uri=postgresql://u:pw-6@db/x",
        "model=tinyvgg,tinyvg",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 2 and "tinyvg" in result.stderr, result.stderr
    text = (sweep / "multirun.yaml").read_text()
    assert "postgresql://u:***@db/x" in text and "pw-6" not in text
    assert "pw-6" not in result.stderr + result.stdout
