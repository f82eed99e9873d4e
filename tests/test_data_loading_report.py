"""Data loading tells the truth: skipped rows with line numbers and reasons, the real held-out
count, and no held-out split made of training rows."""
import json

import pytest

from oar_kernels.data import load_task, rows_to_examples
from oar_kernels.data.base import ListTask, SkipLog, describe_task, num_held_out
from oar_kernels.data.loaders import read_jsonl


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_skipped_rows_have_line_numbers_and_reasons(tmp_path):
    path = _write(tmp_path / "data.jsonl", [
        json.dumps({"question": "a", "answer": "1"}),
        json.dumps({"question": "b"}),                     # line 2
        "",                                                 # blank: not a row
        json.dumps({"question": "c", "answer": "#### 2"}),
        "{not json",                                        # line 5
        json.dumps([1, 2]),                                 # line 6
        json.dumps({"answer": "3"}),                        # line 7
        json.dumps({"question": "  ", "answer": "3"}),      # line 8
        json.dumps({"question": "d", "answer": ""}),        # line 9
        json.dumps({"question": "e", "answer": [1]}),       # line 10
    ])
    task = load_task(path, eval_size=500)
    assert task.skipped == 7
    assert task.skipped_examples == [(2, "no answer field"), (5, "not valid JSON"), (6, "not an object"),
                                     (7, "no question field"), (8, "empty question")]
    assert task.num_train == 1 and task.num_eval == 1 and task.has_eval
    assert len(task.eval_examples(500)) == 1  # the real list, not 500
    line = task.describe(500)
    assert line.startswith(f"{path}: 1 training, 1 held-out; skipped 7 of 9 rows of {path} (")
    assert "line 2: no answer field; line 5: not valid JSON; line 6: not an object" in line
    assert line.endswith("line 8: empty question; 2 more)")
    assert describe_task(task, 500) == line and num_held_out(task, 500) == 1
    # the remaining reasons are recorded too (read through the per-file log)
    log = SkipLog(path)
    read_jsonl(path, log=log)
    assert log.skipped == 7 and log.rows == 9 and len(log.examples) == 5
    log.examples.clear()
    log.skip(9, "x")
    assert log.examples == [(9, "x")]


def test_the_issue_example_two_usable_rows_of_five(tmp_path):
    path = _write(tmp_path / "d.jsonl", [
        json.dumps({"question": "a", "answer": "1"}), json.dumps({"question": "b", "answer": None}),
        json.dumps({"question": "c", "answer": "2"}), "nope", json.dumps({"problem": "p"})])
    task = load_task(path, eval_size=500)
    assert (task.num_train, task.num_eval, task.skipped) == (1, 1, 3)
    assert task.describe(500) == (f"{path}: 1 training, 1 held-out; skipped 3 of 5 rows of {path} "
                                  "(line 2: empty answer; line 4: not valid JSON; line 5: no answer field)")
    assert task.describe(0).startswith(f"{path}: 1 training, 0 held-out")


def test_too_few_rows_hold_none_out_and_never_evaluate_training_rows(tmp_path):
    path = _write(tmp_path / "one.jsonl", [json.dumps({"question": "q", "answer": "1"}), "[]"])
    task = load_task(path, eval_size=200)
    assert task.num_eval == 0 and not task.has_eval and task.eval_examples(200) == []
    assert num_held_out(task, 200) == 0
    assert task.describe(200) == (f"{path}: 1 training, 0 held-out (1 usable row: too few to hold one out; "
                                  f"give an eval file (--eval_dataset)); skipped 1 of 2 rows of {path} "
                                  "(line 2: not an object)")
    # eval_size 0: nothing held out whatever the size
    path2 = _write(tmp_path / "ten.jsonl", [json.dumps({"question": f"q{i}", "answer": str(i)}) for i in range(10)])
    task = load_task(path2, eval_size=0)
    assert task.num_train == 10 and task.num_eval == 0 and "0 held-out (eval_size is 0)" in task.describe()
    # a separate eval file: its skipped rows are reported under its own name, its held-out count is real
    evals = _write(tmp_path / "e.jsonl", [json.dumps({"question": "x", "answer": "9"}), "oops"])
    task = load_task(path, eval_dataset=evals, eval_size=200)
    assert task.num_train == 1 and task.num_eval == 1 and task.skipped == 2
    assert task.describe(200).endswith(f"skipped 1 of 2 rows of {path} (line 2: not an object); "
                                       f"skipped 1 of 2 rows of {evals} (line 2: not valid JSON)")


def test_no_usable_row_error_names_the_reasons(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"question": "q"}), "zz"])
    with pytest.raises(ValueError, match=r"no usable row .*line 1: no answer field; line 2: not valid JSON"):
        load_task(path)


def test_rows_to_examples_stays_compatible_and_records_row_indices():
    rows = [{"question": "a", "answer": "1"}, {"question": "b"}, "x", {"prompt": "c", "target": 3}]
    examples, skipped = rows_to_examples(rows)
    assert skipped == 2 and [e.answer for e in examples] == ["1", "3"]
    log = SkipLog("ds split 'train'", unit="row")
    examples, skipped = rows_to_examples(rows, log=log)
    assert skipped == 2 and log.examples == [(1, "no answer field"), (2, "not an object")]
    assert log.describe() == "skipped 2 of 4 rows of ds split 'train' (row 1: no answer field; row 2: not an object)"
    _, skipped = rows_to_examples([{"q": "a", "a": "1"}, {"q": "b"}], "q", "a", log=log)
    assert skipped == 1 and log.skipped == 3 and log.examples[-1] == (1, "no 'a' field")


def test_hf_loader_reports_row_indices(tmp_path):
    pytest.importorskip("datasets")
    from oar_kernels.data import load_hf_task

    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(4)] + [{"question": "z", "answer": ""}]
    (tmp_path / "train.json").write_text("\n".join(json.dumps(r) for r in rows))
    task = load_hf_task(str(tmp_path), split="train", eval_split=None, eval_size=5)
    assert task.num_train == 3 and task.num_eval == 1 and task.skipped == 1
    assert task.skipped_examples == [(4, "empty answer")]
    line = task.describe(5)
    assert "3 training, 1 held-out; skipped 1 of 5 rows of" in line and "(row 4: empty answer)" in line


def test_list_task_and_generated_tasks_report_counts():
    from oar_kernels.data import Example

    task = ListTask([Example("q", "1")], [], name="mine")
    assert task.skipped == 0 and task.skipped_examples == [] and task.describe() == "mine: 1 training, 0 held-out"
    arith = load_task("arithmetic")
    assert num_held_out(arith, 7) == 7
    assert describe_task(arith, 7) == f"{type(arith).__name__}: generated training problems, 7 held-out"
