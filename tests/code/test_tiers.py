"""tests/code is the fast tier's core (issue 19): none of its tests starts a server or other heavy part.
A test that needs one belongs in tests/pipeline (or tests/data, tests/model) with its marker."""

from __future__ import annotations

import ast

from tests.conftest import FIXTURE_MARKERS, REPO_ROOT

HEAVY_MARKERS = {"slow", "server", "postgres", "keras", "dvc", "image", "node", "browser"}


def heavy_uses(source: str) -> list[str]:
    """``test_x: fixture`` and ``test_x: @pytest.mark.m`` for every heavy fixture or marker a test function of ``source`` uses."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            found += [f"{node.name}: {arg.arg}" for arg in node.args.args if arg.arg in FIXTURE_MARKERS]
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr in HEAVY_MARKERS:
                    found.append(f"{node.name}: @pytest.mark.{target.attr}")
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            found += [f"pytestmark: {n.attr}" for n in ast.walk(node.value) if isinstance(n, ast.Attribute) and n.attr in HEAVY_MARKERS]
    return found


def test_no_test_in_tests_code_starts_a_server():
    found = {path.name: uses for path in sorted((REPO_ROOT / "tests" / "code").glob("test_*.py"))
             if (uses := heavy_uses(path.read_text(encoding="utf-8")))}
    assert not found, f"heavy tests in tests/code (move them to tests/pipeline): {found}"


def test_the_scan_sees_fixtures_and_markers():
    source = ("import pytest\npytestmark = [pytest.mark.slow]\n"
              "def test_a(prefect_api): pass\n@pytest.mark.keras\ndef test_b(tmp_path): pass\ndef test_c(tmp_path): pass\n")
    assert heavy_uses(source) == ["pytestmark: slow", "test_a: prefect_api", "test_b: @pytest.mark.keras"]
