"""The project speaks of itself alone: no tracked file refers to how its work was organised (numbered sessions or
issues), and the sections of BENCHMARKS.md that code and docs point to exist (a heading, or a paragraph's
bold lead)."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO_ROOT

# Built from parts, so that this file does not match itself.
WORK_NUMBERING = re.compile(r"\b(" + "sess" + "ion|iss" + "ue" + r")\s+#?\d", re.IGNORECASE)


def tracked_text_files() -> list:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    files = []
    for name in names.decode().split("\0"):
        path = REPO_ROOT / name
        if name and path.is_file():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:  # text, not an image, recording or checkpoint
                files.append((name, data.decode("utf-8", errors="replace")))
    return files


def test_no_tracked_file_speaks_of_numbered_sessions_or_issues():
    files = tracked_text_files()
    assert any(name == "BENCHMARKS.md" for name, _ in files)  # the walk sees the docs
    hits = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
            for name, text in files for m in WORK_NUMBERING.finditer(text)]
    assert not hits


def test_the_pattern_finds_what_it_is_for():
    assert WORK_NUMBERING.search("measured in " + "Sess" + "ion 8") and WORK_NUMBERING.search("see iss" + "ue #" + "12")
    assert not WORK_NUMBERING.search("a client's session, the issue at hand, graphical-session.target")


def test_every_benchmarks_section_the_project_points_to_exists():
    text = (REPO_ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ (.+)$", text, re.M)) | set(re.findall(r"^\*\*([^*]+)\*\*", text, re.M))
    cited = {(name, section) for name, text in tracked_text_files() if name != "BENCHMARKS.md"
             for section in re.findall(r'BENCHMARKS\.md,\s+"([^"]+)"', text)}
    assert cited  # code and docs do point into it
    missing = {(name, " ".join(section.split())) for name, section in cited
               if not any(" ".join(section.split()) in h for h in headings)}
    assert not missing
