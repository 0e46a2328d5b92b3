"""`payouts enqueue`: every row validated first; one bad row enqueues nothing; re-runs are no-ops."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from worker import keys
from worker.ops.cli import main as cli

HEADER = "payout_cl_id,amount,bank_name,name,number,notify_url"
GOOD_CSV = [
    HEADER,
    "csv-1,5000000,BCA,Dewi Lestari,1234567890,",
    "csv-2,7500000,BNI,Budi Santoso,9876543210,https://shop.example/notify",
    "csv-3,1000000,MANDIRI,Sri Wahyuni,5556667778,",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli(["enqueue", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def stored_ids(r: redis.Redis) -> set[str]:
    return {k.removeprefix("payouts:order:") for k in r.scan_iter("payouts:order:*")}


def queued_messages(r: redis.Redis) -> list[dict[str, Any]]:
    """The Celery messages waiting in the submit queue (a Redis list named like the queue)."""
    return [json.loads(m) for m in r.lrange("payouts", 0, -1)]


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_with_bad_rows_enqueues_nothing(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each bad row is reported with its line number, field and rule; nothing is stored or sent."""
    # given
    use_env()
    path = write(
        tmp_path,
        "bad.csv",
        [
            *GOOD_CSV,
            "csv-4,12.50,BCA,Joko,1234567890,",
            "csv-5,5000000,NOPE,Joko,12-34,",
            "csv-1,5000000,BCA,Dewi Lestari,1234567890,",
        ],
    )
    # when
    code, _out, err = run(capsys, "--file", str(path))
    # then
    assert code == 1
    assert "line 5: amount: must be an integer" in err
    assert "line 6: bank_name: must be one of the configured banks" in err
    assert "line 6: number: must be 1-32 digits" in err
    assert "line 7: payout_cl_id: repeats the id of line 2" in err
    assert "nothing enqueued" in err
    assert stored_ids(redis_client) == set()
    assert queued_messages(redis_client) == []
    assert not redis_client.exists(keys.IMPORTS)


def test_csv_import_then_rerun_enqueues_nothing_twice(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A good file is enqueued once; the same file again is refused without --force, and with
    it adds nothing."""
    # given
    use_env()
    path = write(tmp_path, "payouts.csv", GOOD_CSV)
    # when
    code, out, err = run(capsys, "--file", str(path))
    # then
    assert code == 0, err
    assert "enqueued 3 new, 0 already present, 0 conflict(s)" in out
    assert stored_ids(redis_client) == {"csv-1", "csv-2", "csv-3"}
    messages = queued_messages(redis_client)
    assert len(messages) == 3
    # the broker carries only the order id: (args, kwargs, embed) with args == [id]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    assert sorted(b[0][0] for b in bodies) == ["csv-1", "csv-2", "csv-3"]
    assert all(len(b[0]) == 1 and b[1] == {} for b in bodies)
    assert {m["headers"]["task"] for m in messages} == {"payouts.submit"}
    assert "1234567890" not in json.dumps(messages) and "Dewi" not in json.dumps(messages)
    order = json.loads(json.dumps(redis_client.hgetall(keys.order("csv-2"))))
    assert order["notify_url"] == "https://shop.example/notify" and order["amount"] == "7500000"

    # when: the same file again
    code, out, err = run(capsys, "--file", str(path))
    # then: refused (D1)
    assert code == 1
    assert "already imported at" in err and "nothing enqueued" in err
    # when: again, with --force
    code, out, err = run(capsys, "--file", str(path), "--force")
    # then
    assert code == 0, err
    assert "already imported at" in err  # a detail row; the answer is on stdout
    assert "enqueued 0 new, 3 already present, 0 conflict(s)" in out
    assert stored_ids(redis_client) == {"csv-1", "csv-2", "csv-3"}
    assert redis_client.hlen(keys.IMPORTS) == 1


def test_conflicting_row_enqueues_nothing(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An id already stored with different data is a conflict: the whole file is refused."""
    use_env()
    assert run(capsys, "--file", str(write(tmp_path, "a.csv", GOOD_CSV[:2])))[0] == 0
    changed = [
        HEADER,
        "csv-9,5000000,BCA,Maya Sari,1112223334,",
        "csv-1,6000000,BCA,Dewi Lestari,1234567890,",
    ]
    code, _out, err = run(capsys, "--file", str(write(tmp_path, "b.csv", changed)))
    assert code == 1
    assert "line 3: payout_cl_id: already stored with different data (conflict)" in err
    assert stored_ids(redis_client) == {"csv-1"}


def test_jsonl_bad_line_then_good_file(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """JSON lines: a broken line or a float amount refuses the file; a clean file is enqueued."""
    use_env()
    good = [
        json.dumps(
            {
                "payout_cl_id": f"j-{i}",
                "amount": 2_500_000 + i,
                "bank_name": "BRI",
                "name": "Nur Aini",
                "number": f"77788899{i}",
            }
        )
        for i in range(3)
    ]
    bad = [good[0], "{oops", json.dumps({**json.loads(good[1]), "amount": 2500000.0})]
    code, _, err = run(capsys, "--file", str(write(tmp_path, "bad.jsonl", bad)))
    assert code == 1
    assert "line 2: line: is not valid JSON" in err and "line 3: amount:" in err
    assert stored_ids(redis_client) == set()
    code, out, err = run(capsys, "--file", str(write(tmp_path, "good.ndjson", good)))
    assert code == 0, err
    assert "enqueued 3 new" in out
    assert stored_ids(redis_client) == {"j-0", "j-1", "j-2"}


def test_single_payout_from_flags(
    use_env: Callable[..., Any],
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One payout from flags, its name from standard input and its number from a file (never a
    flag value); a bad value names the field; repeating is a no-op."""
    use_env()
    number = tmp_path / "number"
    flags = ["--id", "one-1", "--amount", "5000000", "--bank", "BCA", "--name-file", "-"]
    flags += ["--number-file", str(number)]

    def enqueue() -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO("Rudi Hartono\n"))
        return run(capsys, *flags)

    number.write_text("12ab\n")
    code, _out, err = enqueue()
    assert code == 1 and "number: must be 1-32 digits" in err
    assert stored_ids(redis_client) == set()
    number.write_text("123123123\n")
    assert enqueue()[1].strip() == "enqueued 1 new, 0 already present, 0 conflict(s)"
    assert "0 new, 1 already present" in enqueue()[1]
    assert stored_ids(redis_client) == {"one-1"}


def test_the_number_is_never_a_flag_value(
    use_env: Callable[..., Any], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """--number / --name are refused (exit 2) without repeating the value; nothing is stored."""
    use_env()
    code, out, err = run(capsys, "--id", "fl-1", "--amount", "500", "--bank", "BCA", "--number", "998877665")
    assert code == 2 and "--number-file" in err and "998877665" not in out + err
    code, out, err = run(capsys, "--id", "fl-1", "--amount", "500", "--bank", "BCA", "--name", "Sulistyowati")
    assert code == 2 and "Sulistyowati" not in out + err
    assert stored_ids(redis_client) == set()
