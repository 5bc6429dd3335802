"""``locker-controller --show-code-key``: what the technician reads on the cabinet and
gives dispatch to pin; it creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.daemon.main import main
from controller.lab.rig import LaneRig
from controller.security.codes import CodeKey


def test_show_code_key_prints_the_key_id_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    rig = LaneRig(tmp_path)  # writes the cabinet config only; nothing is started
    key_file = rig.code_key_file
    assert key_file == tmp_path / "code.key"

    assert main(["--config", str(rig.config_path), "--show-code-key"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not key_file.exists()

    key = CodeKey.generate()
    key_file.write_text(key.to_json())
    key_file.chmod(0o600)
    assert main(["--config", str(rig.config_path), "--show-code-key"]) == 0
    out = capsys.readouterr().out
    assert f"key_id:        {key.key_id}" in out
    assert key.published()["public_key"] in out
    assert rig.pinned_code_key().key_id == key.key_id
