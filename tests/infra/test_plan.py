"""bench/plan.py (the YT-Temporal-180M calculator) runs, every input names its source, and infra/README.md shows
exactly the table it prints (so the README's numbers are reproducible)."""
from __future__ import annotations

import subprocess
import sys

from tests.infra.launch import INFRA, ROOT


def test_readme_shows_the_table_plan_py_prints():
    table = subprocess.run([sys.executable, str(ROOT / "bench" / "plan.py"), "--markdown"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert table.count("\n") == 6 and "| pipeline" in table and "| pretraining" in table
    assert table in (INFRA / "README.md").read_text(), f"infra/README.md's plan table is stale; run bench/plan.py:\n{table}"


def test_every_input_has_a_source_and_the_table_follows_its_inputs():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import plan
    finally:
        sys.path.pop(0)
    assert all(item.source and item.value > 0 for item in plan.INPUTS.values())
    rows, _ = plan.plan(100, 32)
    more, _ = plan.plan(400, 32)
    assert float(more[0]["hours"]) < float(rows[0]["hours"]) / 3.9     # 4x the nodes: the CPU stages 4x faster
    assert rows[2]["hours"] == more[2]["hours"]                       # training does not use the CPU nodes
