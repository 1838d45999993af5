"""The README's two set-up commands, and .ci/run running exactly the second one."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def setup_block(readme: str) -> list[str]:
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


def test_the_readme_opens_with_exactly_two_commands_the_second_installing_the_browser():
    first, second = setup_block((REPO_ROOT / "README.md").read_text())
    assert first == "pip install -e . && python run_pipeline.py demo"
    assert second == 'sh .ci/install-browser.sh && pip install -e ".[test]" && python -m pytest -n 2'


@pytest.mark.parametrize("second, status, message", [
    ("exit 5", 1, "CI: no test ran"),
    ("exit 3", 3, "CI: exit 3"),
    ("echo ran-the-readme-command", 0, "CI: echo ran-the-readme-command"),
])
def test_ci_runs_the_readmes_second_command(tmp_path, second, status, message):
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO_ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text(f"# x\n\n```bash\nfalse first\n{second}\n```\n\n```bash\nnot this\n```\n")
    run = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert run.returncode == status and message in run.stderr
    assert ("ran-the-readme-command" in run.stdout) == (status == 0)


def test_install_browser_is_a_no_op_when_both_are_there_and_clear_when_it_cannot_install(tmp_path):
    script = str(REPO_ROOT / ".ci" / "install-browser.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("chromium", "chromedriver"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    present = subprocess.run(["/bin/sh", script], env={"PATH": str(bin_dir)}, capture_output=True, text=True)
    assert present.returncode == 0 and present.stderr == ""
    (bin_dir / "chromedriver").unlink()
    missing = subprocess.run(["/bin/sh", script], env={"PATH": str(bin_dir)}, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "no apt-get here; install chromium and chromedriver" in missing.stderr
