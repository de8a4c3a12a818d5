import pytest

from quads.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "synth" in capsys.readouterr().out


def test_unknown_subcommand_exits_with_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("top", ["0", "-2"])
def test_predict_top_below_one_is_a_usage_error(top, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "m.quads"), str(tmp_path / "a.wav"), "--top", top])
    assert exit_info.value.code == 2
    assert f"--top: must be at least 1, got {int(top)}" in capsys.readouterr().err
