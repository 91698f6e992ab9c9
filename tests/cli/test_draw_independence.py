"""The examples a case draws do not depend on the cases judged before it in the same process.

Hypothesis mixes into its draws the number literals of the modules loaded from outside
``site-packages`` (transpec itself in an editable install), read again whenever more modules are
loaded; a case that imported a module late changed what every case after it drew
(``transpec.jobs.preload`` loads them all first). Here ``decoder_layer``, judged last in a run
of every component, is judged alone too, through the command and through the pytest plugin:
every verdict of it must be the same, ratio and example count included. (Before the preload,
one of its ratios differed.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

COMMON = ["--isolation", "none", "--max-examples", "4", "--quiet"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["CI"] = "true"
    return env


def _check(folder: Path, *selection: str) -> dict[str, tuple[object, ...]]:
    folder.mkdir()
    argv = [sys.executable, "-m", "transpec.cli", "check", "numpy", *COMMON, *selection]
    proc = subprocess.run(
        [*argv, "--json", "r.json"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=folder,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    verdicts = json.loads((folder / "r.json").read_text())["verdicts"]
    return {
        v["name"]: (v["status"], v["ratio"], v["examples"], v["counterexample"])
        for v in verdicts
        if v["component"] == "decoder_layer"
    }


def test_a_component_judged_alone_draws_what_it_draws_after_every_other(tmp_path: Path) -> None:
    after_all = _check(tmp_path / "all")
    alone = _check(tmp_path / "alone", "--component", "decoder_layer")
    assert alone and any(v[0] != "skipped" for v in alone.values())
    assert alone == after_all


def _plugin(folder: Path, *selection: str) -> dict[str, tuple[str | None, ...]]:
    folder.mkdir()
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    argv += ["--transpec", "numpy", "--transpec-isolation", "none"]
    argv += ["--transpec-max-examples", "4", "--junitxml=j.xml", "-m", "transpec", *selection]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=folder, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    out: dict[str, tuple[str | None, ...]] = {}
    for case in ET.parse(folder / "j.xml").getroot().iter("testcase"):
        name = case.get("name") or ""
        if name.startswith("decoder_layer."):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            out[name] = (props.get("ratio"), props.get("examples"))
    return out


def test_a_plugin_item_run_alone_draws_what_it_draws_after_every_other(tmp_path: Path) -> None:
    after_all = _plugin(tmp_path / "all")
    alone = _plugin(tmp_path / "alone", "-k", "decoder_layer")
    assert alone and any(v[0] is not None for v in alone.values())
    assert alone == after_all
