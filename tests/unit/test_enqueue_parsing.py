"""Pure parts of the operating commands: file parsing, the demo's data and fault rules."""

from __future__ import annotations

from worker.harness.demo import demo_faults, demo_payouts, percentile
from worker.ops.enqueue import Problem, Row, plan_rows, read_csv, read_jsonl
from worker.payout import validate_payout
from worker.sandbox.config import DEFAULT_BANKS
from worker.sandbox.faults import FaultRule
from worker.settings import load_settings

SETTINGS = load_settings({"PAYOUT_BANK_LIST": "BCA,BNI", "PAYOUT_AMOUNT_MIN": "100"})


def test_csv_rows_carry_their_line_numbers() -> None:
    """Blank lines and a quoted multi-line value do not shift the reported line numbers."""
    text = (
        "payout_cl_id,amount,bank_name,name,number\n"
        "a1,5000,BCA,Dewi,123\n"
        "\n"
        'a2,5000,BCA,"Two\nLines",123\n'
        "a3,50.5,XYZ,Budi,12a\n"
    )
    rows = list(read_csv(text))
    assert [r.line for r in rows] == [2, 4, 6]
    assert all(isinstance(r, Row) for r in rows)
    plan = plan_rows(rows, SETTINGS, None)
    assert [line for line, _ in plan.payouts] == [2]
    assert {(p.line, p.field) for p in plan.problems} == {
        (4, "name"),
        (6, "amount"),
        (6, "bank_name"),
        (6, "number"),
    }


def test_csv_header_must_name_payout_fields() -> None:
    """An unknown header is reported on line 1 and no rows are read."""
    items = list(read_csv("id,amount\nx,1\n"))
    assert items == [Problem(1, "id", "is not a payout field (header row)")]


def test_jsonl_rejects_non_json_and_repeated_ids() -> None:
    """A broken JSON line and a second row with the same id are each reported by line."""
    text = (
        '{"payout_cl_id":"j1","amount":500,"bank_name":"BNI","name":"Sri","number":"9"}\n'
        "{not json\n"
        '{"payout_cl_id":"j1","amount":500,"bank_name":"BNI","name":"Sri","number":"9"}\n'
        '{"payout_cl_id":"j2","amount":"500","bank_name":"BNI","name":"Sri","number":"9"}\n'
    )
    plan = plan_rows(list(read_jsonl(text)), SETTINGS, None)
    assert [line for line, _ in plan.payouts] == [1]
    assert [(p.line, p.field) for p in plan.problems] == [(2, "line"), (3, "payout_cl_id"), (4, "amount")]
    assert "line 1" in plan.problems[1].rule


def test_jsonl_lines_end_only_at_newline() -> None:
    """U+2028 and U+0085 inside a JSON string do not split the line (str.splitlines would);
    CRLF line ends are accepted and line numbers stay right (D32)."""
    text = '{"payout_cl_id":"j1","name":"A\u2028B"}\r\n\r\n{"payout_cl_id":"j2","name":"C\x85D"}\n'
    rows = list(read_jsonl(text))
    assert rows == [
        Row(1, {"payout_cl_id": "j1", "name": "A\u2028B"}),
        Row(3, {"payout_cl_id": "j2", "name": "C\x85D"}),
    ]
    # and validation then refuses those names, naming the field
    plan = plan_rows(rows, SETTINGS, None)
    assert {(p.line, p.field) for p in plan.problems if p.field == "name"} == {(1, "name"), (3, "name")}


def test_csv_error_is_a_problem_not_a_traceback() -> None:
    """A field longer than the csv module's limit is reported on its line; reading stops."""
    text = (
        "payout_cl_id,amount,bank_name,name,number\na1,5000,BCA,Dewi,123\na2,5000,BCA,"
        + "x" * 200_000
        + ",1\n"
    )
    items = list(read_csv(text))
    assert isinstance(items[0], Row) and items[0].line == 2
    assert len(items) == 2 and isinstance(items[1], Problem)
    assert (items[1].line, items[1].field) == (3, "file") and "not readable as CSV" in items[1].rule


def test_demo_payouts_are_valid_and_seeded() -> None:
    """The demo's payouts pass validation with the sandbox's banks, and a seed replays them."""
    a = demo_payouts(50, 7, DEFAULT_BANKS, "demo-7-")
    assert a == demo_payouts(50, 7, DEFAULT_BANKS, "demo-7-")
    assert a != demo_payouts(50, 8, DEFAULT_BANKS, "demo-7-")
    for p in a:
        validate_payout(p, banks=DEFAULT_BANKS, amount_min=1_000_000)


def test_demo_fault_rules_are_valid_sandbox_rules() -> None:
    """Every fault rule the demo installs parses under the sandbox's schema."""
    for uid, rule in enumerate(demo_faults(1)):
        FaultRule.parse(rule, uid, 1)


def test_percentile_nearest_rank() -> None:
    """The demo's percentile is the nearest rank, 0 for no values."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([], 50) == 0.0
