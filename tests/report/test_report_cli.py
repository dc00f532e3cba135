from alphaadam.cli import build_parser, main


def test_subcommands_are_registered():
    help_text = build_parser().format_help()
    for command in ("collect", "tables", "figures"):
        assert command in help_text


def test_collect_tables_figures(tmp_path, ablation, capsys):
    spec_path, runs = ablation
    out = tmp_path / "out"
    assert main(["collect", "--runs", str(runs), "--out", str(out / "index")]) == 0
    assert (out / "index" / "runs.csv").stat().st_size > 0 and (out / "index" / "runs.parquet").exists()
    assert main(["tables", str(spec_path), "--runs", str(runs), "--out", str(out)]) == 0
    assert (out / "fixture_ablation.md").read_text().startswith("**Fixture: validation loss**")
    assert (out / "fixture_ablation.tex").exists() and (out / "fixture_ablation.cells.csv").exists()
    assert main(["figures", str(spec_path), "--runs", str(runs), "--out", str(out), "--no-bench"]) == 0
    assert (out / "fixture_ablation_loss_val_loss.pdf").exists()
    printed = capsys.readouterr().out
    assert "collect: 20 run(s)" in printed and "4/10 cells with a value" in printed


def test_a_malformed_result_is_reported_with_its_path(tmp_path, ablation, capsys):
    spec_path, runs = ablation
    bad = next(runs.rglob("result.json"))
    bad.write_text("{")
    assert main(["tables", str(spec_path), "--runs", str(runs), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alphaadam tables: error: ") and str(bad) in err
