"""The import graph: no cycles, and the runtime never imports the eval harness.

Every `import` counts, at module level or inside a function (a deferred import is still a
dependency). Modules are named as installed: drafters/ is lookahead.drafters, kernels/ is
lookahead.kernels, eval/ is lookahead.eval.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"lookahead": ROOT / "lookahead", "lookahead.drafters": ROOT / "drafters",
            "lookahead.kernels": ROOT / "kernels", "lookahead.eval": ROOT / "eval"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a package's __init__ when a name is not a module)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_the_runtime_never_imports_the_eval_harness():
    bad = sorted(f"{m} imports {t}" for m, ts in graph().items() if not m.startswith("lookahead.eval")
                 for t in ts if t.startswith("lookahead.eval"))
    assert not bad, bad


def test_no_import_cycles():
    g = graph()
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    edges = {m: {t for t in ts if not (m.startswith(t + ".") and t in g)} for m, ts in g.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, cycles


def test_the_graph_sees_real_edges():
    g = graph()
    assert "lookahead.engine" in g["lookahead.api"] and "lookahead.kernels.dispatch" in g["lookahead.engine.attention"]
    assert "lookahead.drafters.tree" in g["lookahead.drafters.peers"]  # relative imports resolved
