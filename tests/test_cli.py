import importlib

from spoils_tf import cli


def test_every_command_resolves_to_a_callable():
    for name, (target, _help) in cli.COMMANDS.items():
        module_name, func_name = target.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        assert callable(func), name


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 0
    assert "convert-spider" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_decide_runs_through_the_dispatcher(capsys):
    assert cli.main(["decide", "--class", "L4-L5=4H", "--odi", "70", "--nrs", "8"]) == 0
    assert "surgical" in capsys.readouterr().out.lower()
