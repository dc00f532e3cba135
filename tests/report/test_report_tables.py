import re

import pytest
import yaml

from alphaadam.report.build import collect_index, write_tables
from alphaadam.report.collect import collect
from alphaadam.report.errors import ReportError
from alphaadam.report.spec import load_spec, parse_spec
from alphaadam.report.tables import build_table, to_latex, to_markdown
from tests.report.report_fixtures import GLUE_SPEC, glue_runs, write_run

ABLATION_MD = """\
**Fixture: validation loss**

| Method | 20% | 100% | Avg |
|:--|--:|--:|--:|
| AdamW | **3.610 ± 0.014** (n=2) | **3.210 ± 0.014** (n=2) | **3.410** |
| *paper (Δ)* | 3.800 (-0.190) | 3.200 (+0.010) | 3.500 (-0.090) |
| AdamW + SM | div | div | — |
| *paper (Δ)* | 3.850 | 3.227 | 3.539 |
| AdamW + AM | oom | oom | — |
| *paper (Δ)* | — | — | — |
| AdamW + AM + Dynamic | **3.610 ± 0.014** (n=2, 1 div) | **3.210 ± 0.014** (n=2, 1 div) | **3.410** |
| *paper (Δ)* | 3.658 (-0.048) | 3.203 (+0.007) | 3.431 (-0.021) |
| CAdamW | — | — | — |
"""

ABLATION_CAPTION = (
    "Cells: mean ± sample std over seeds (n = number of seeds) of the validation loss at a fraction f of "
    "training (metrics.at_fraction.{f}.val_loss, f = 0.2, 1.0). Selection: per row, the configuration (lr) "
    "with the best mean validation loss (metrics.final.val_loss, lower is better) over its completed seeds; "
    "ties go to more seeds, then the smaller lr. Best of ours per column in bold (lower is better). "
    "Avg = mean of 20%, 100% (mean of the cell means, no std). Rows 'paper (Δ)': the published value "
    "(fixture paper, Table 3; REFERENCE: fixture.table3) and Δ = ours − paper. div / oom: every run "
    "diverged / ran out of memory; —: no result; 'k div' or 'k oom' in a cell: seeds of the selected "
    "configuration that did not finish."
)


def check_latex(text: str, columns: int) -> None:
    """Structural checks in place of a LaTeX compiler (none on CI)."""
    body = [line for line in text.splitlines() if not line.startswith("%")]
    stack = []
    for env, name in re.findall(r"\\(begin|end)\{(\w+)\}", "\n".join(body)):
        if env == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    unescaped = "\n".join(body).replace(r"\{", "").replace(r"\}", "")
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    rows = [line for line in body if line.endswith(r"\\")]
    assert rows, "no table rows"
    for line in rows:
        assert len(re.findall(r"(?<!\\)&", line)) == columns - 1, line
    for line in body:
        if not line.startswith(r"\label"):  # labels may hold underscores
            assert not re.search(r"(?<!\\)[_%#]", line), line
        assert (line.count("$") - line.count(r"\$")) % 2 == 0, line
        assert "±" not in line and "Δ" not in line and "—" not in line, line


def test_ablation_table_in_markdown(ablation):
    spec_path, runs = ablation
    table = build_table(collect([runs], log=None), load_spec(spec_path))
    text = to_markdown(table)
    reference = str(spec_path.parent / "reference.yaml")
    assert text == ABLATION_MD + "\n" + ABLATION_CAPTION.replace("REFERENCE", reference) + "\n"


def test_ablation_cells_keep_the_selection(ablation):
    spec_path, runs = ablation
    table = build_table(collect([runs], log=None), load_spec(spec_path))
    adamw = table.cells[("AdamW", "100%")]
    assert adamw.over == 3e-3 and adamw.n == 2 and adamw.lost == {}
    dynamic = table.cells[("AdamW + AM + Dynamic", "20%")]
    assert dynamic.over == 1e-3 and dynamic.n == 2 and dynamic.lost == {"div": 1}  # beats lr 2e-3 (1 seed)
    assert table.cells[("AdamW + SM", "20%")].status == "div"
    assert table.cells[("AdamW + AM", "20%")].status == "oom"
    assert table.cells[("CAdamW", "20%")].status == "none"  # failed runs are not results


def test_ablation_table_in_latex(ablation):
    spec_path, runs = ablation
    text = to_latex(build_table(collect([runs], log=None), load_spec(spec_path)))
    check_latex(text, columns=4)
    assert r"\begin{tabular}{lrrr}" in text
    assert (
        r"AdamW & \textbf{3.610 $\pm$ 0.014} (n=2) & \textbf{3.210 $\pm$ 0.014} (n=2) & \textbf{3.410} \\"
        in text
    )
    assert r"\quad\textit{paper ($\Delta$)} & 3.800 ($-$0.190) & 3.200 (+0.010) & 3.500 ($-$0.090) \\" in text
    assert r"AdamW + SM & div & div & -- \\" in text
    assert r"metrics.at\_fraction.\{f\}.val\_loss" in text
    assert r"\label{tab:fixture_ablation}" in text


GLUE_MD = """\
**GLUE fixture**

| Optimizer | RTE | MRPC | Avg |
|:--|--:|--:|--:|
| AdamW | **71.00 ± 1.41** (n=2) | 89.00 ± 1.41 (n=2) | 80.00 |
| AlphaAdam | 70.00 (n=1) | **92.00 ± 1.41** (n=2) | **81.00** |
"""


def test_glue_style_table_per_task_selection_scaled(tmp_path):
    spec = parse_spec(yaml.safe_load(GLUE_SPEC), default_name="glue")
    table = build_table(collect([glue_runs(tmp_path)], log=None), spec)
    assert to_markdown(table).startswith(GLUE_MD)
    assert table.cells[("AdamW", "RTE")].over == 1e-5 and table.cells[("AdamW", "MRPC")].over == 2e-5
    assert "×100" in to_markdown(table)
    check_latex(to_latex(table), columns=4)


def test_table2_against_the_published_numbers(tmp_path, in_repo):
    g = {"recipe": "finetune_gsm8k", "experiment": "paper/gsm8k_llama2"}
    for optimizer, lr, seed, acc, loss in (
        ("adamw", 1e-5, 0, 0.345, 0.07),
        ("adamw", 1e-5, 1, 0.347, 0.06),
        ("adamw", 2e-5, 0, 0.30, 0.01),  # lowest loss, but not the best accuracy
        ("alphaadam", 1e-5, 0, 0.352, 0.05),
    ):
        final = {"accuracy": acc, "train_loss": loss}
        write_run(tmp_path, optimizer=optimizer, lr=lr, seed=seed, final_metrics=final, **g)
    write_run(tmp_path, optimizer="microadam", lr=1e-5, seed=0, status="oom", **g)
    table = build_table(collect([tmp_path], log=None), load_spec("table2_gsm8k"))
    lines = to_markdown(table).splitlines()
    start = lines.index("| Method | Accuracy | Train loss |")
    assert lines[start + 2 : start + 4] == [
        "| Adam | 34.60 ± 0.14 (n=2) | 0.065 ± 0.007 (n=2) |",  # train loss from the LR best on accuracy
        "| *paper (Δ)* | 34.53 (+0.07) | 0.064 (+0.001) |",
    ]
    assert "| MicroAdam (m=10) | oom | oom |" in lines
    assert "| AlphaAdam | **35.20** (n=1) | **0.050** (n=1) |" in lines
    assert "| *paper (Δ)* | 34.94 (+0.26) | 0.048 (+0.002) |" in lines
    check_latex(to_latex(table), columns=3)


def test_paper_tables_build_without_any_run(tmp_path, in_repo):
    (tmp_path / "none").mkdir()  # a study root with no run yet: the published numbers and "—"
    paths = write_tables(roots=[tmp_path / "none"], out_dir=tmp_path / "paper", log=lambda _: None)
    names = sorted(p.name for p in paths)
    assert "table1_glue.md" in names and "table3_ablation.tex" in names and "demo.md" not in names
    text = (tmp_path / "paper" / "table1_glue.md").read_text()
    assert "| AlphaAdam | — | — | — | — | — | — | — | — |" in text
    assert "| *paper (Δ)* | 88.97 | 90.42 | 57.25 | 71.49 | 93.35 | 92.18 | 91.76 | 83.63 |" in text
    check_latex((tmp_path / "paper" / "table1_glue.tex").read_text(), columns=9)
    check_latex((tmp_path / "paper" / "table2_gsm8k.tex").read_text(), columns=3)


def test_a_missing_run_root_or_an_unknown_metric_is_an_error(tmp_path, in_repo):
    with pytest.raises(ReportError, match=r"run root .*typo does not exist: run the study first"):
        write_tables(["table3_ablation"], roots=[tmp_path / "typo"], out_dir=tmp_path / "out")
    with pytest.raises(ReportError, match=r"run root .*typo does not exist"):
        collect_index([tmp_path / "typo"], tmp_path / "index", log=lambda _: None)
    runs = tmp_path / "runs"
    write_run(runs / "a", optimizer="adamw", lr=1e-3, seed=0, final=3.0)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: typo\ntitle: t\nrows: {key: optimizer, header: Method}\n"
        "columns: [{label: Final, metric: metrics.final.val_los}]\n"
        "values: {higher_is_better: false}\nselection: {metric: metrics.final.val_loss}\n"
    )
    with pytest.raises(ReportError, match=r"column 'Final' reads 'metrics.final.val_los', which no run"):
        write_tables([spec], roots=[runs], out_dir=tmp_path / "out", log=lambda _: None)
