"""Logs under journald: each line carries its priority, context reaches text lines too."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.logs import journal_priority, setup_logging, stderr_is_journal


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_priorities_follow_syslog() -> None:
    assert [journal_priority(level) for level in (logging.CRITICAL, logging.ERROR,
            logging.WARNING, logging.INFO, logging.DEBUG, 25)] == [2, 3, 4, 6, 7, 6]


@pytest.mark.usefixtures("restore_logging")
def test_journal_lines_start_with_their_priority() -> None:
    out = io.StringIO()
    setup_logging("debug", "json", journal=True, stream=out)
    log = logging.getLogger("controller.test")
    log.warning("alarm raised: door_ajar A03", extra={"ctx": {"compartment": "A03"}})
    log.error("bus error", extra={"ctx": {"bus": "rs485-0", "board": "locks-a"}})
    log.info("started")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("command handling failed")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("<4>{")
    assert json.loads(lines[0][3:])["compartment"] == "A03"
    assert lines[1].startswith("<3>{")
    assert json.loads(lines[1][3:])["board"] == "locks-a"
    assert lines[2].startswith("<6>{")
    # JSON keeps a traceback inside the one line; every line has a prefix anyway.
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_carry_their_context_and_every_line_its_priority() -> None:
    out = io.StringIO()
    setup_logging("info", "text", journal=True, stream=out)
    log = logging.getLogger("controller.test")
    log.warning("bus errors", extra={"ctx": {"bus": "rs485-0", "board": "locks-b"}})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", extra={"ctx": {"board": "probes"}})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("<4>")
    assert lines[0].endswith("WARNING controller.test: bus errors bus=rs485-0 board=locks-b")
    assert "ERROR controller.test: failed board=probes" in lines[1]
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines[1:])  # the traceback too


@pytest.mark.usefixtures("restore_logging")
def test_no_prefix_outside_the_journal() -> None:
    out = io.StringIO()
    setup_logging("info", "json", journal=False, stream=out)
    logging.getLogger("controller.test").warning("x")
    assert out.getvalue().startswith("{")


def test_journal_is_detected_from_the_stream_systemd_names(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        assert stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal(stream, {})
        assert not stderr_is_journal(stream, {"JOURNAL_STREAM": "garbage"})


@pytest.mark.integration  # runs a Python process of its own
def test_a_configuration_error_reaches_the_journal_at_error_priority(tmp_path: Path) -> None:
    """The daemon exits on a bad config before logging is set up: its message is still
    filed as an error (``journalctl -p err``), every line of it."""
    import subprocess
    import sys

    bad = tmp_path / "cabinet.toml"
    bad.write_text("[cabinet]\nsite = 'Not Valid'\n")
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.run([sys.executable, "-m", "controller.daemon", "--config", str(bad)],
                              stderr=err, stdout=subprocess.DEVNULL, env=env, timeout=60,
                              check=False)
    assert proc.returncode == 2
    lines = err_path.read_text().splitlines()
    assert lines[0] == "<3>configuration error:"
    assert len(lines) > 1
    assert all(line.startswith("<3>") for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_text_logs_show_the_sites_local_time_and_json_logs_utc() -> None:
    # 2026-07-01 10:00:00 UTC is noon in Paris (summer time) and 06:00 in New York.
    record = logging.LogRecord("controller.test", logging.INFO, __file__, 1, "hello", None,
                               None)
    record.created, record.msecs = 1782900000.0, 0.0
    for zone, expected in (("Europe/Paris", "2026-07-01 12:00:00,000+0200"),
                           ("America/New_York", "2026-07-01 06:00:00,000-0400"),
                           ("UTC", "2026-07-01 10:00:00,000+0000")):
        out = io.StringIO()
        setup_logging("info", "text", timezone=zone, journal=False, stream=out)
        logging.getLogger().handlers[0].handle(record)
        assert out.getvalue().startswith(f"{expected} INFO controller.test: hello"), zone
    out = io.StringIO()
    setup_logging("info", "json", timezone="Europe/Paris", journal=False, stream=out)
    logging.getLogger().handlers[0].handle(record)
    assert json.loads(out.getvalue())["ts"] == "2026-07-01T10:00:00.000Z"
