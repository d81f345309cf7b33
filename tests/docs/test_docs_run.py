"""The documentation runs as written: a stale page fails here, not in a new user's hands.

``docs/datasets.md``'s walkthrough ("Walkthrough: NW-UCLA as your own data") is executed block by
block, in order, in a scratch project laid out as the page assumes: the project root (the
``examples/`` folder and every ``params*.yaml`` copied from the checkout) with the real recordings
at ``../shared/data`` beside it, and ``skelctl`` the one of this interpreter's environment. A
``python`` block runs with this interpreter; a ``bash`` (or ``console``) block command by command,
each of which must succeed, except one followed by a ``# Error: ...`` comment, which must fail
with that message (``...`` stands for any text); an unlabelled block right after a ``bash`` block
is the output of its last command, line for line (``...`` again for any text). The figures the
walkthrough quotes are the recipe's measured ones (docs/small-data.md); its commands train 3
epochs, so that it runs in about two minutes on a 2-core CPU: hence ``slow``.

The README's quick starts (install and ``skelctl demo``, the test command, the documentation
build) are not executed here: a fresh virtual environment and install cost a minute and a half
and the demo four more, and CI already runs each of them, ``.ci/run`` the install, the tests and
the documentation build, and ``tests/e2e/test_end_to_end.py`` the demo. So the test checks that
every command of those blocks is one of the commands CI or the end-to-end test runs (the same
program and, word for word, the same arguments or a subset of them; pip's extras a subset of
CI's): a README command that changes without CI following fails it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NW_UCLA, PROJECT, SHARED_DATA, need

WALKTHROUGH = "Walkthrough: NW-UCLA as your own data"
SHELL = ("bash", "console", "sh", "shell")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of a Markdown text, in order: ``(language, body)``."""
    return [(m.group(1).strip(), m.group(2))
            for m in re.finditer(r"^```([^\n]*)\n(.*?)^```[ \t]*$", text, re.S | re.M)]


def section(text: str, title: str) -> str:
    """The part of a Markdown text under the heading ``title``, to the next heading of its level
    or above."""
    lines, level, kept, fenced = text.splitlines(keepends=True), None, [], False
    for line in lines:
        heading = None if fenced else re.match(r"(#+) (.*?)\s*$", line)
        fenced ^= line.startswith("```")  # a '# comment' in a block is no heading
        if heading and level is not None and len(heading.group(1)) <= level:
            break
        if level is not None:
            kept.append(line)
        elif heading and heading.group(2) == title:
            level = len(heading.group(1))
    assert level is not None, f"no heading {title!r}"
    return "".join(kept)


def complete(command: str) -> bool:
    """Whether ``command`` is whole shell syntax (a loop's lines are gathered until it is)."""
    return subprocess.run(["bash", "-n", "-c", command], capture_output=True).returncode == 0


def shell_commands(body: str) -> list[tuple[str, str | None]]:
    """The commands of a shell block, each with the error the page says it ends in (or None):
    continuation lines joined, a multi-line loop kept whole, a leading ``$ `` dropped, comments
    other than ``# Error: ...`` skipped."""
    commands: list[tuple[str, str | None]] = []
    pending = ""
    for line in body.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if not pending and stripped.startswith("# Error:"):
            assert commands, f"an error line with no command before it: {line}"
            commands[-1] = (commands[-1][0], stripped[2:])
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        stripped = stripped[2:] if not pending and stripped.startswith("$ ") else stripped
        pending = f"{pending}\n{stripped}" if pending else stripped
        if complete(pending):
            commands.append((pending, None))
            pending = ""
    assert not pending, f"unfinished shell command in the docs: {pending}"
    return commands


def matches(expected: str, text: str) -> bool:
    """Whether ``text`` holds ``expected``, each ``...`` in it standing for any text."""
    parts = [re.escape(part.strip()) for part in expected.split("...")]
    return re.search(".*?".join(parts), text, re.S) is not None


def check_output(expected: str, output: str) -> None:
    for line in expected.splitlines():
        if line.strip():
            assert matches(line, output), f"the docs show {line.strip()!r}; the output:\n{output}"


class Reader:
    """Runs the docs' blocks as a reader would, in ``root``, with this environment's skelctl."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # one thread unless told otherwise: two, beside other work on a 2-core CPU, make the
        # GRU's steps ten times slower (0.3 s a step at one thread, 3-4 s at two, measured)
        self.env = {"OMP_NUM_THREADS": "1", **os.environ,
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.times: list[tuple[str, float]] = []
        self.last_output = ""

    def run(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        began = time.monotonic()
        result = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True,
                                text=True, timeout=900)
        self.times.append((what, time.monotonic() - began))
        self.last_output = result.stdout + result.stderr
        return result

    def python(self, body: str) -> None:
        result = self.run([sys.executable, "-c", body], "python block")
        assert result.returncode == 0, f"the docs' python block failed:\n{self.last_output}"

    def shell(self, command: str, error: str | None) -> None:
        result = self.run(["bash", "-euo", "pipefail", "-c", command], command.splitlines()[0])
        if error is None:
            assert result.returncode == 0, f"`{command}` failed:\n{self.last_output[-4000:]}"
        else:
            assert result.returncode != 0, f"`{command}` should fail with {error!r}"
            assert matches(error, result.stderr), \
                f"`{command}`: the docs show {error!r}; it said:\n{result.stderr}"


def scratch_project(tmp_path: Path) -> Path:
    """A project root as the walkthrough assumes one, with ``../shared/data`` beside it."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(PROJECT / "examples", root / "examples")
    for params in PROJECT.glob("params*.yaml"):
        shutil.copy(params, root / params.name)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED_DATA.resolve(), target_is_directory=True)
    return root


@pytest.mark.slow
def test_the_datasets_walkthrough_runs_as_written(tmp_path, monkeypatch):
    need(NW_UCLA)
    page = (PROJECT / "docs" / "datasets.md").read_text()
    blocks = fenced_blocks(section(page, WALKTHROUGH))
    assert [language for language, _ in blocks][:2] == ["python", "bash"]
    reader = Reader(scratch_project(tmp_path))
    previous = None
    for language, body in blocks:
        if language == "python":
            reader.python(body)
        elif language in SHELL:
            for command, error in shell_commands(body):
                reader.shell(command, error)
        elif language == "" and previous in SHELL:
            check_output(body, reader.last_output)
        else:
            raise AssertionError(f"a {language or 'plain'} block the test cannot run:\n{body}")
        previous = language
    root = reader.root
    for run in ("untrained", "ser-joint"):
        for protocol in ("linear", "knn"):
            assert (root / "results" / "ucla-xview" / protocol / f"{run}.json").is_file()
    assert "epoch: 3 of 3" in reader.last_output  # the checkpoint, read by `skelctl info`

    # the untrained encoder's figures are the table's (seeded; SER's need the recipe's 60 epochs)
    table = re.search(r"^\| `untrained` [^|]*\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
                      section(page, WALKTHROUGH), re.M)
    assert table, "the walkthrough's table lost its untrained row"
    linear = json.loads((root / "results/ucla-xview/linear/untrained.json").read_text())["joint"]
    knn = json.loads((root / "results/ucla-xview/knn/untrained.json").read_text())["joint"]
    measured = (linear["top1_last"], linear["standardised"]["top1_last"], knn["top1"])
    for name, shown, got in zip(("linear", "standardised", "KNN"), table.groups(), measured):
        assert abs(float(shown) - got) <= 1.0, f"untrained {name}: the docs say {shown}, got {got:.1f}"

    # docs/store.md shows `skelctl info` on this store and this checkpoint
    examples = [body for language, body in
                fenced_blocks((PROJECT / "docs" / "store.md").read_text())
                if language == "" and body.startswith("$ skelctl info ")]
    assert len(examples) == 2
    for body in examples:
        command, _, shown = body.partition("\n")
        reader.shell(command[2:], None)
        check_output(shown, reader.last_output)

    # the one error the walkthrough quotes in its prose is the one a stage gives
    quoted = re.search(r"`` (Error: data/processed/ucla/50-shoulder\.h5: .*?) ``",
                       " ".join(section(page, WALKTHROUGH).split()))
    assert quoted, "the walkthrough no longer quotes the missing-store error"
    from skelctl.data.store import StoreError
    from skelctl.stages.common import StageError, store_of

    monkeypatch.chdir(root)  # paths relative to the project root, as the reader's commands give
    with pytest.raises((StageError, StoreError)) as raised:
        store_of(Path("data"), "ucla-xview", "50-shoulder")
    assert f"Error: {raised.value}" == quoted.group(1)
    total = sum(seconds for _, seconds in reader.times)
    print("\n".join(f"{seconds:6.1f} s  {what}" for what, seconds in reader.times),
          f"\n{total:6.1f} s  in all")


def test_the_small_data_pages_agree_on_the_training_set_sizes():
    """docs/small-data.md and params.small-data.yaml give NW-UCLA's cross-subject training set
    (odd subjects, the bench's protocol) as the real recordings make it: 724 samples."""
    raw = need(NW_UCLA)
    subjects = [int(path.stem.split("_")[1][1:]) for path in raw.glob("*.json")]
    train = sum(subject % 2 == 1 for subject in subjects)
    assert (len(subjects), train) == (1484, 724)
    page = (PROJECT / "docs" / "small-data.md").read_text()
    params = (PROJECT / "params.small-data.yaml").read_text()
    assert f"NW-UCLA ({train})" in page and f"(1,020 / {train} training samples)" in params
    assert not re.search(r"NW-UCLA \((?!1,020|724)[\d,]+\) \| cross-subject", page)


# --- the README's quick starts ------------------------------------------------------------

def words(command: str) -> list[str]:
    return shlex.split(command)


def covers(ours: list[str], theirs: list[str]) -> bool:
    """Whether CI's command ``theirs`` runs the README's ``ours``: the same program, and each of
    our words among theirs (an editable install's extras a subset of theirs)."""
    def extras(word: str) -> set[str] | None:
        match = re.fullmatch(r"\.\[([\w,-]+)\]", word)
        return set(match.group(1).split(",")) if match else None

    def among(word: str) -> bool:
        return word in theirs or (extras(word) is not None and any(
            extras(t) is not None and extras(word) <= extras(t) for t in theirs))

    return bool(ours) and bool(theirs) and ours[0] == theirs[0] and all(map(among, ours[1:]))


def ci_commands() -> list[list[str]]:
    """The commands ``.ci/run`` runs, one per line (comments and shell settings left out)."""
    lines = (PROJECT / ".ci" / "run").read_text().splitlines()
    return [words(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_quick_starts_are_what_ci_runs():
    readme = (PROJECT / "README.md").read_text()
    blocks = [body for language, body in fenced_blocks(readme) if language in SHELL]
    assert len(blocks) >= 2, "the README's quick start blocks are gone"
    ci = ci_commands()
    e2e = (PROJECT / "tests" / "e2e" / "test_end_to_end.py").read_text()
    # the own-data quick start is the walkthrough's commands, which the slow test runs
    walkthrough = [words(command) for language, body in fenced_blocks(section(
        (PROJECT / "docs" / "datasets.md").read_text(), WALKTHROUGH)) if language in SHELL
        for command, _ in shell_commands(body)]
    seen = set()
    for body in blocks:
        for command, _ in shell_commands(body):
            for part in command.split("&&"):
                ours = words(part)
                if Path(ours[0]).name == "skelctl" and ours[1:] == ["demo"]:
                    # the end-to-end test runs exactly this: `python -m skelctl demo`
                    assert '"-m", "skelctl", "demo"' in e2e
                    seen.add("demo")
                    continue
                assert ours in walkthrough or any(covers(ours, theirs) for theirs in ci), \
                    (f"README command `{part.strip()}` is run neither by .ci/run, nor by the e2e "
                     f"test, nor by the walkthrough of docs/datasets.md")
                seen.add(" ".join(ours[:3]))
    assert "demo" in seen and any("pytest" in s for s in seen) and any("pip" in s for s in seen)
