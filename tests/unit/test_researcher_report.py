from __future__ import annotations

from tollway.researcher import indicators, receipt, report
from tollway.researcher.market import CsvDataSource


def _figures() -> list[indicators.Figures]:
    source = CsvDataSource()
    return [indicators.compute(t, source.bars(t)) for t in ("ACME", "NOVA")]


def test_scrub_keeps_computed_figures_and_masks_invented_ones() -> None:
    figures = _figures()
    allowed = report.allowed_numbers(figures)
    real = dict(figures[0].rows())["Total return"]
    text = f"ACME returned {real}, will triple to 999.99 and beat 42% of peers."
    cleaned = report.scrub(text, allowed)
    assert real in cleaned
    assert "999.99" not in cleaned
    assert "42%" not in cleaned
    assert cleaned.count(report.UNVERIFIED) == 2


def test_markdown_holds_every_figure_and_no_invented_number() -> None:
    figures = _figures()
    sections = [report.Section("overview", "Revenue grew 37.5% last year.")]
    md = report.markdown("Research", figures, sections, ["- credit: 0.001000 credit"], "test data")
    for f in figures:
        for _label, value in f.rows():
            assert value in md
    assert "37.5%" not in md
    assert "## Overview" in md


def _call(idx: int, bucket: str, charged: int, tokens: tuple[int, int]) -> dict:
    return {
        "idx": idx,
        "section": "overview",
        "step": "draft",
        "model": "gpt-4o-mini",
        "request_id": f"req_{idx}",
        "http_status": 200,
        "error": None,
        "receipt": {
            "status": "settled",
            "bucket": bucket,
            "unit": bucket,
            "charged_micro": charged,
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
            "retries": 1,
            "fallback": False,
            "attempts": [
                {"outcome": "error", "channel": "a"},
                {"outcome": "ok", "channel": "b", "route_type": "direct", "upstream_model": "m"},
            ],
        },
    }


def test_receipt_totals_per_bucket_and_compares_with_the_ledger() -> None:
    calls = [_call(0, "credit", 120, (10, 5)), _call(1, "credit", 30, (3, 2))]
    run = {"id": "run_1", "task_id": "task_1", "status": "completed"}
    ledger = {"cost": {"credit": {"charged_micro": 150, "unit": "credit", "calls": 2}}}
    built = receipt.build(run, calls, ledger)
    assert built["totals"]["credit"]["charged_micro"] == 150
    assert built["totals"]["credit"]["tokens"] == 20
    assert built["retries"] == 2
    assert built["calls"][0]["channel"] == "b"
    assert built["matches_ledger"] is True
    ledger["cost"]["credit"]["charged_micro"] = 151
    assert receipt.build(run, calls, ledger)["matches_ledger"] is False
    assert receipt.build(run, calls, None)["matches_ledger"] is False


def test_a_failed_runs_pdf_renders_long_unbreakable_and_non_latin_text() -> None:
    from tollway.researcher import pdf  # noqa: PLC0415 - matplotlib is slow to import

    source = CsvDataSource()
    figures = _figures()
    error = '{"error": {"message": "' + "upstream/" * 300 + '"}}'
    sections = [
        report.Section("overview", f"(not written: {error})"),
        report.Section("risks", "苹果公司的风险 — ответ ☃ " * 40),
    ]
    why = report.outcome("failed", f"The run failed: {error}", ["- credit: 0.000100 credit"])

    document = pdf.render(
        "Research: 苹果 " + "x" * 400,
        figures,
        sections=sections,
        chart=pdf.chart_png({"ACME": source.bars("ACME")}),
        cost_rows=[["Bucket", "Charged"], ["credit" * 80, error]],
        source="test data",
        outcome=why,
    )

    assert document.startswith(b"%PDF")
    assert why is not None
    assert why.startswith("This run failed: The run failed:")
    assert why.endswith("Spent: credit: 0.000100 credit.")


def test_a_report_without_sections_or_charges_still_renders_and_says_nothing_was_charged() -> None:
    from tollway.researcher import pdf  # noqa: PLC0415 - matplotlib is slow to import

    source = CsvDataSource()
    why = report.outcome("stopped", "Task envelope exhausted", [])
    md = report.markdown("Research", _figures(), [], [], "test data", outcome=why)
    document = pdf.render(
        "Research",
        _figures(),
        sections=[],
        chart=pdf.chart_png({"ACME": source.bars("ACME")}),
        cost_rows=[],
        source="test data",
        outcome=why,
    )

    assert document.startswith(b"%PDF")
    assert "## Outcome\n\nThis run stopped: Task envelope exhausted. Spent: nothing." in md
    assert "Nothing was charged." in md
    assert report.outcome("completed", None, []) is None
