"""Secrets out of every file, log line and tracker: the password of a URL (``postgresql://user:pw@host/db``)
and the value of a key named like a secret (``password``, ``token``, ``secret``, ``api_key``), each shown as
``***``. The run itself keeps the real values: only what is written, printed or uploaded is masked.

Keeping a secret off the command line too: ``${oc.env:VAR}`` in the URL, resolved only inside the run.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

MASK = "***"
# The last word of a key (after the last '.', '_' or '-'): MLFLOW_TRACKING_PASSWORD, client_secret, api_key,
# access_token.
_SECRET_WORD = r"(?:password|passwd|token|secret|api[_-]?key|credentials?)"
SECRET_KEY = re.compile(r"(?:^|[._-])" + _SECRET_WORD + r"$", re.IGNORECASE)
# scheme://user:password@host: the password ends at the last '@' before the host (it may hold '@' itself, a quote,
# and a space unless the space starts another override or URL). Also as Hydra's override grammar escapes it
# (http\://user\:password@host), as sweepers write overrides.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-zA-Z][\w+.-]*\\?://[^\s:/@'\"\\]*\\?:)"
    r"(?P<password>(?:[^\s\"]|[ \t](?![\w.+~/@-]*=)(?!\S*://))*)(?P<at>@)"
)
# A secret key followed by its separator: key=value (an override), key: value (YAML), "key": "value" (JSON),
# 'key': 'value' (a Python repr). Where its value ends is decided by _value_span.
_KEY_SEP = re.compile(
    r"(?<![\w./:-])(?P<key>(?:[\w+~-]+\.)*(?:[\w-]*[_-])?" + _SECRET_WORD + r")(?![\w-])"
    r"(?:(?P<quote>['\"])[ \t]*(?P<sep1>[:=])|[ \t]*(?P<sep2>=)|[ \t]*(?P<sep3>:)(?=\s|$))[ \t]*",
    re.IGNORECASE,
)
# Where an unquoted value ends: before the next override (` model=x`, ` key: v`), the next key of a JSON object,
# a call's keywords or an override_dirname (`, "x":`, `, model=`, `,+x=`), a YAML comment, or the line's end (and a
# quote that closes the override, as Hydra quotes it: 'logger.password=pa,ss'). A comma alone does not end it:
# `api_key=ab,cd` is one value (or a sweep over two, both secret), and so is `pa ss`.
_PLAIN_END = (
    r"[ \t]+[\w.+~/@-]+(?:=|:(?:[ \t]|$))|[ \t]*,[ \t]*['\"]?[+~]*[\w.-]+['\"]?[ \t]*[:=]|[ \t]+#|['\"]?[ \t]*$"
)
_PLAIN = re.compile(_PLAIN_END, re.MULTILINE)
# In a YAML flow mapping or list ({password: x}, [token: y]), its closing bracket ends the value too.
_FLOW = re.compile(_PLAIN_END + r"|[}\]][ \t]*(?:[,}\]]|$)", re.MULTILINE)
# In a call's parentheses, a closing one that ends a word (a ')' inside a password runs on into more of it).
_CALL = re.compile(_PLAIN_END + r"|\)(?=[\s,;:.)\]}]|$)", re.MULTILINE)
_BLOCK_SCALAR = re.compile(r"[|>][-+]?[0-9]?[ \t]*$")
# Nothing to hide, masked already (a value that begins with the mask: masking twice changes nothing), or an
# interpolation that names where the secret is.
_NOT_SECRET = re.compile(r"(?:null|None|~)$|'?\*\*\*|\$\{")


def _line_end(text: str, at: int) -> int:
    end = text.find("\n", at)
    end = len(text) if end < 0 else end
    return end - 1 if end > at and text[end - 1] == "\r" else end


_SPACES = re.compile(r" *")


def _indent(text: str, line_start: int) -> int:
    return _SPACES.match(text, line_start).end() - line_start  # type: ignore[union-attr]  # " *" always matches


def _more_indented(text: str, end: int, indent: int) -> int:
    """``end`` moved over the lines after it that are indented deeper than ``indent`` (blank ones between them
    too): a YAML value folded onto more lines, a block scalar's body."""
    while end < len(text) and text[end] in "\r\n":
        following = text.find("\n", end) + 1
        if not following:
            break
        following_end = _line_end(text, following)
        blank = not text[following:following_end].strip()
        if not blank and _indent(text, following) <= indent:
            break
        if blank and not text.startswith(" " * (indent + 1), following_end + 1):
            break
        end = following_end
    return end


def _escaped(text: str, i: int, quote: str) -> bool:
    """A backslash at ``i`` escapes the next character: always in double quotes; in single quotes a ``\\'`` only
    inside a Python repr's string, not as the last character of a YAML one (where a backslash is a backslash)."""
    if text[i] != "\\":
        return False
    return quote == '"' or text[i + 1 : i + 2] != "'" or text[i + 2 : i + 3] not in ("", "\n", "\r", ",", "}", "]", " ")


def _closing_quote(text: str, start: int) -> int:
    """Where the string opened by the quote at ``start`` closes (across lines), or the end of its line if never:
    '' is one quote inside single quotes (YAML), a backslash escapes inside double quotes (JSON, YAML, Python)."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i : i + 2] == quote * 2 == "''" or _escaped(text, i, quote):
            i += 2
        elif text[i] == quote:
            return i
        else:
            i += 1
    return _line_end(text, start)


def _value_span(text: str, key_start: int, start: int, colon: bool) -> tuple[int, int, bool]:
    """The value after a secret key's separator at ``start``, as (start, end, quoted inside).

    Quoted: inside its quotes, or the whole run of a sweep's values when a comma follows (``'a b',c``). A YAML
    block scalar (``|``): its indented body. Unquoted: up to where _PLAIN_END finds (in a flow mapping also its
    closing bracket), and over the more indented lines after it that YAML folds a long value onto."""
    line_start = text.rfind("\n", 0, key_start) + 1
    indent = _indent(text, line_start)
    if not colon and text[key_start - 1 : key_start] in ("'", '"'):
        return start, _closing_quote(text, key_start - 1), True  # a whole override quoted: 'logger.token=...'
    scan = start
    if text[start : start + 1] in ("'", '"'):
        close = _closing_quote(text, start)
        if text[close + 1 : close + 2] != ",":
            return start + 1, close, True
        scan = close + 1  # a sweep: every value after the comma too
    elif colon and _BLOCK_SCALAR.match(text, start, _line_end(text, start)):
        return start, _more_indented(text, _line_end(text, start), indent), False
    line_end = _line_end(text, scan)
    before = text[line_start:key_start]
    flow = colon and before.count("{") + before.count("[") > before.count("}") + before.count("]")
    # Inside a call's parentheses (f(password=abc)), its closing one ends the value and is kept.
    call = before.count("(") > before.count(")")
    found = (_CALL if call else _FLOW if flow else _PLAIN).search(text, scan, line_end)
    if found and found.start() < line_end:
        return start, found.start(), False
    return start, _more_indented(text, line_end, indent), False


def mask_text(text: str) -> str:
    """``text`` with every URL password and every ``<secret key>=<value>`` (or ``: value``) masked."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m["head"] + (m["password"] if m["password"] == MASK else MASK) + m["at"], text)
    pieces, done = [], 0
    for match in _KEY_SEP.finditer(text):
        if match.start() < done:  # inside a value already masked
            continue
        colon = ":" in (match["sep1"] or "") + (match["sep3"] or "")
        start, end, quoted = _value_span(text, match.start(), match.end(), colon)
        value = text[start:end]
        if not value or _NOT_SECRET.match(value):
            continue
        # Unquoted after a colon, the mask is quoted: a YAML scalar may not begin with '*' (an alias), and JSON
        # needs its quotes.
        shown = MASK if quoted or not colon else f"{match['quote'] or chr(39)}{MASK}{match['quote'] or chr(39)}"
        pieces += [text[done:start], shown]
        done = end
    return "".join([*pieces, text[done:]])


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def mask_values(node: Any) -> Any:
    """A copy of a plain container (dicts, lists, strings) with its secrets masked."""
    if isinstance(node, Mapping):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else mask_values(v)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(mask_values(v) for v in node)
    if isinstance(node, str):
        return mask_text(node)
    return node


def holds_secret(text: str) -> bool:
    return mask_text(text) != text


def holds_masked_secret(text: str) -> bool:
    """Whether ``text`` (an override as a run's files keep it) has a secret that was masked there."""
    return MASK in text and mask_text(text.replace(MASK, "x")) != text.replace(MASK, "x")


class MaskSecretsFilter(logging.Filter):
    """A logging filter for every handler (console, ``train.log``): the record's message, arguments and
    traceback with their secrets masked. Hydra's launchers log each job's overrides, URLs included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def mask_file(path: Path) -> bool:
    """Rewrite a text file with its secrets masked (atomically: a reader sees the old file or the new one);
    True if it held any."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    masked = mask_text(text)
    if masked == text:
        return False
    tmp = path.with_name(f".{path.name}.masking")
    tmp.write_text(masked)
    os.replace(tmp, path)
    return True


# Kept from the callback to the entry point's exit: a sweep that fails early gives no later hook to mask its file in.
_SWEEP_FILES: list[Path] = []


def mask_sweep_files() -> None:
    """Mask the ``multirun.yaml`` of every sweep this process started; the entry point calls it on its way out.

    A sweep that fails before its first job (an option that does not compose, a cluster that refuses the
    submission) reaches neither ``on_job_start`` nor ``on_multirun_end``, and the sweeper has written the file by
    then."""
    while _SWEEP_FILES:
        mask_file(_SWEEP_FILES.pop())


def mask_every_handler() -> None:
    """Every handler of the root logger masks secrets, whatever logging option a user picked
    (``hydra/job_logging=stdout`` replaces the project's, whose handlers carry the filter already)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
            handler.addFilter(MaskSecretsFilter())


class MaskSecretFiles(Callback):
    """A Hydra callback: the files Hydra writes with the config (``.hydra/config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``, the sweep's ``multirun.yaml``) rewritten with their secrets masked, as soon as
    Hydra has written them and before the job's code runs. The job itself gets the real values."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        mask_every_handler()  # Hydra's own logging is set up by now

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        mask_every_handler()  # the job's logging is set up by now, before the job's code logs anything
        runtime = config.hydra.runtime
        if config.hydra.output_subdir is not None:
            for path in (Path(runtime.output_dir) / str(config.hydra.output_subdir)).glob("*.yaml"):
                mask_file(path)
        # The sweep's own file, written before its first job (BasicSweeper); every job checks it, which is idempotent.
        if config.hydra.mode == RunMode.MULTIRUN:
            mask_file(Path(config.hydra.sweep.dir) / "multirun.yaml")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mask_every_handler()
        # Before the sweeper writes the file: remembered, so that a sweep that fails first still has it masked.
        _SWEEP_FILES.append(Path(config.hydra.sweep.dir) / "multirun.yaml")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        mask_file(Path(config.hydra.sweep.dir) / "multirun.yaml")
