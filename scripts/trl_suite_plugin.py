"""pytest plugin that runs TRL's own GRPO tests against OARGRPOTrainer, offline.

Loaded by scripts/trl_suite.py with `-p trl_suite_plugin` (scripts/ on PYTHONPATH); TRL's test
files are not edited. Environment:

    OAR_TRL_SUITE_MODE      "on": GRPOTrainer -> OARGRPOTrainer, GRPOConfig -> OARConfig (OAR-G,
                            the defaults, plus an answer extractor that finds an answer in any
                            text of 8+ characters, so that OAR scores random models' completions);
                            "off": the same classes with oar_tau = oar_beta = 0 (every weight 1:
                            the subclass, scoring included, computing plain GRPO); "baseline":
                            TRL's own classes (only the offline stand-ins).
    OAR_TRL_SUITE_FIXTURES  folder written by trl_suite_fixtures.build (models in the hub cache
                            layout, which HF_HUB_CACHE points at; data sets saved to disk).
    OAR_TRL_SUITE_RESULTS   file that gets one JSON line per test (outcome, reason, duration,
                            completions OAR scored).

What it changes, and nothing more:
* `trl.GRPOTrainer` / `trl.GRPOConfig` are replaced before the test modules import them
  (`from trl import GRPOConfig, GRPOTrainer` then binds the OAR classes); after collection
  every test module that bound GRPOTrainer is checked to hold the mode's class.
* the test modules' `load_dataset` name resolves "trl-internal-testing/zen" to the local
  copy (streaming=True gives an IterableDataset, as the hub would); any other hub data set
  skips the test as hub-only.
* a test that fails because a hub model is not built locally is reported as skipped
  ("hub-only: <id>"), not failed.
* without CUDA, a config with use_liger_kernel=True skips its test ("GPU-only").
* `trl.import_utils.is_*_available` names the installed TRL lacks (tests taken from another
  revision import them) are answered from importlib's find_spec, and listed in the summary.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re

import pytest

MODE = os.environ.get("OAR_TRL_SUITE_MODE", "on")
FIXTURES = os.environ.get("OAR_TRL_SUITE_FIXTURES", "")
if MODE not in ("on", "off", "baseline"):
    raise pytest.UsageError(f"OAR_TRL_SUITE_MODE: expected on, off or baseline, got {MODE!r}")

import trl  # noqa: E402

_import_utils = importlib.import_module("trl.import_utils")

_SHIMMED = []


def _import_utils_getattr(name):
    """Tests from a TRL revision other than the installed one may import availability checks the
    installed trl.import_utils lacks (e.g. is_joblib_available): answer them from find_spec."""
    m = re.fullmatch(r"is_(\w+)_available", name)
    if m is None:
        raise AttributeError(f"module 'trl.import_utils' has no attribute {name!r}")
    import importlib.util

    _SHIMMED.append(name)
    return lambda *a, **k: importlib.util.find_spec(m.group(1)) is not None


if "__getattr__" not in vars(_import_utils):
    _import_utils.__getattr__ = _import_utils_getattr
if MODE == "baseline":
    TRAINER, CONFIG = trl.GRPOTrainer, trl.GRPOConfig
else:
    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer

    TRAINER = OARGRPOTrainer
    if MODE == "on":
        @dataclasses.dataclass
        class OARConfigOn(OARConfig):
            """OARConfig (OAR-G, default reshaping) whose extractor finds an answer in most texts.

            TRL's tests train randomly initialised models, which never write "The answer is";
            with the default extractor almost no completion would be scored and "on" would
            train like "off". suite_answer makes OAR score nearly every completion."""

            oar_answer_extractor: str = "trl_suite_plugin:suite_answer"

        CONFIG = OARConfigOn
    else:
        @dataclasses.dataclass
        class OARConfigOff(OARConfig):
            """OARConfig whose Bi-Level reshaping gives weight 1 everywhere (OAR off)."""

            oar_tau: float = 0.0
            oar_beta: float = 0.0

        CONFIG = OARConfigOff
    trl.GRPOTrainer, trl.GRPOConfig = TRAINER, CONFIG

def _skip_liger_without_gpu():
    """use_liger_kernel=True runs Liger's Triton kernels, which need a GPU: on a machine without
    one the test is skipped when its config is built (Liger also patches the model classes
    process-wide, so a failed Liger test would break the tests run after it)."""
    import torch
    from trl.trainer.base_config import _BaseConfig

    if torch.cuda.is_available():
        return
    original = _BaseConfig.__post_init__

    def __post_init__(self):
        if getattr(self, "use_liger_kernel", False):
            pytest.skip("GPU-only: use_liger_kernel=True runs Liger's Triton kernels, which need a GPU")
        original(self)

    _BaseConfig.__post_init__ = __post_init__


_skip_liger_without_gpu()

def suite_answer(text):
    """Answer extractor of mode "on": the last 4 characters of any text of 8 or more (a test
    stand-in for a real extractor, so that random completions have answers to score)."""
    from oar_kernels.answers import AnswerSpan

    if len(text) < 8:
        return None
    start = len(text) - 4
    return AnswerSpan(text[start:], start, start, len(text))


_SCORED = {"rows": 0.0, "batches": 0}


def _count_scored_rows():
    """Counts the completions OAR scored in the current test (mode on/off), from the trainer's
    own oar/scored_frac bookkeeping: OARGRPOTrainer._log_oar_metrics is wrapped, not changed."""
    if MODE == "baseline":
        return
    original = OARGRPOTrainer._log_oar_metrics

    def _log_oar_metrics(self, stats, mode):
        _SCORED["rows"] += stats[6]
        _SCORED["batches"] += 1
        return original(self, stats, mode)

    OARGRPOTrainer._log_oar_metrics = _log_oar_metrics


_count_scored_rows()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _SCORED.update(rows=0.0, batches=0)


_HUB_ID = re.compile(r"\b((?:trl-internal-testing|trl-lib|HuggingFaceTB|HuggingFaceM4|Qwen|meta-llama|google)/[\w.\-]*\w)")


def _local_load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
    """datasets.load_dataset for the hub data sets the tests use, served from the local copies."""
    import datasets

    if not isinstance(path, str) or "/" not in path or os.path.exists(path) or path in ("json", "csv", "parquet"):
        return datasets.load_dataset(path, name, *args, split=split, streaming=streaming, **kwargs)
    folder = os.path.join(FIXTURES, "datasets", path.replace("/", "--"), str(name))
    if not os.path.isdir(folder):
        pytest.skip(f"hub-only: data set {path} ({name}) is not built locally")
    ds = datasets.load_from_disk(folder)
    if split is not None:
        ds = ds[split]
    if streaming:
        ds = ds.to_iterable_dataset() if split is not None else datasets.IterableDatasetDict(
            {k: v.to_iterable_dataset() for k, v in ds.items()})
    return ds


def pytest_collection_modifyitems(session, config, items):
    checked = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module in checked:
            continue
        checked.add(module)
        if "load_dataset" in vars(module):
            module.load_dataset = _local_load_dataset
        bound = vars(module).get("GRPOTrainer")
        if bound is not None and bound is not TRAINER:
            raise pytest.UsageError(
                f"{module.__name__}.GRPOTrainer is {bound!r}, not {TRAINER!r}: the replacement did not take")


def pytest_report_header(config):
    return f"trl_suite: mode={MODE}, GRPOTrainer -> {TRAINER.__module__}.{TRAINER.__name__}, fixtures={FIXTURES}"


def pytest_terminal_summary(terminalreporter):
    if _SHIMMED:
        terminalreporter.write_line(f"trl_suite: availability checks missing from the installed trl.import_utils, "
                                    f"answered from find_spec: {sorted(set(_SHIMMED))}")


RESULTS = os.environ.get("OAR_TRL_SUITE_RESULTS", "")


def pytest_runtest_logreport(report):
    """One JSON line per test (its final outcome and the reason) for trl_suite.py's table."""
    if not RESULTS:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed") or (
            report.when == "teardown" and report.outcome == "failed"):
        reason = ""
        if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.outcome == "failed":
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(report.longrepr)[-500:]
            reason = reason.strip().splitlines()[0][:300] if reason.strip() else ""
        outcome = report.outcome
        if hasattr(report, "wasxfail"):  # TRL's own expected failures
            outcome, reason = ("xfailed" if report.skipped else "xpassed"), str(report.wasxfail)
        import json

        with open(RESULTS, "a") as f:
            f.write(json.dumps({"nodeid": report.nodeid, "outcome": outcome, "when": report.when,
                                "reason": reason, "duration": round(report.duration, 2),
                                "oar_batches": _SCORED["batches"], "oar_scored_rows": int(_SCORED["rows"])}) + "\n")


def _missing_hub_id(item, excinfo, longrepr):
    """The hub id of a model that could not be loaded offline, or None.

    The failure must be transformers' / huggingface_hub's "not in the cache and cannot connect"
    error; the id is taken from the error messages, else the test id, else the traceback text
    (the first hub id there that is not built locally)."""
    exc, seen, texts, offline = excinfo.value, set(), [], False
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        texts.append(text)
        name = type(exc).__name__
        low = text.lower()
        if isinstance(exc, OSError) and ("couldn't connect" in low or "offline" in low or "cached files" in low
                                         or name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled")):
            offline = True
        exc = exc.__cause__ or exc.__context__
    if not offline:
        return None
    from trl_suite_fixtures import MODELS, ZEN

    try:
        import inspect

        source = inspect.getsource(item.function)
    except (TypeError, OSError, AttributeError):
        source = ""
    for text in texts + [item.nodeid, str(longrepr), source]:
        for hub_id in _HUB_ID.findall(text):
            if hub_id not in MODELS and hub_id != ZEN:
                return hub_id
    return "a model"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and report.failed and call.when in ("setup", "call"):
        hub_id = _missing_hub_id(item, call.excinfo, report.longrepr)
        if hub_id is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"hub-only: {hub_id} is not built locally")
