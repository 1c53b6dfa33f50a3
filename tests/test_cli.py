import subprocess
import sys

COMMANDS = ("synth", "train", "meta-train", "eval", "export", "lm", "bench", "recipe", "demo")


def test_trainer_cli_lists_every_command_and_each_help_has_an_example():
    top = subprocess.run([sys.executable, "-m", "edgemeta", "--help"], capture_output=True, text=True, timeout=120)
    assert top.returncode == 0, top.stderr
    for command in COMMANDS:
        assert f"    {command}" in top.stdout
        sub = subprocess.run([sys.executable, "-m", "edgemeta", command, "--help"], capture_output=True, text=True, timeout=120)
        assert sub.returncode == 0 and "edgemeta" in sub.stdout and "example" in sub.stdout.lower(), (command, sub.stderr)


def test_runtime_cli_help():
    result = subprocess.run([sys.executable, "-m", "edgemeta.runtime", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "enroll" in result.stdout and "EDGEMETA_HOME" in result.stdout
