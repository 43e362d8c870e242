"""onnx-am: activation maximization for any ONNX model, with decoupled rectifier gradients."""

# ruff: noqa: E402
from __future__ import annotations

import os

#: Same seed, device and thread count, same numbers in every process: without Conditional
#: Numerical Reproducibility, MKL (torch's BLAS on x86 CPUs) picks code paths by memory
#: alignment and splits sums across threads differently from run to run; measured here on
#: silero-vad (2 threads), one run in three ended at another maximum. It is read when MKL
#: starts, so it holds when onnx_am (or onnx-am's command line) is imported before torch
#: computes anything; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO")

#: torch's CPU ops run on OpenMP threads, whose idle threads by default spin for 300,000
#: rounds before they sleep. On a machine whose cores other processes want too (CI runners,
#: shared servers, Ray workers beside each other), the spinning threads take the cores from
#: the ones with work, and every parallel region waits for its slowest thread: a digits CNN's
#: step took 0.7 to 3.3 s instead of 0.1 to 0.2 s with 10,000 rounds (on a loaded 2-core
#: machine). Not spinning at all (OMP_WAIT_POLICY=PASSIVE) was faster still there but 2.4x
#: slower on an idle machine, where 10,000 rounds cost about as much as the default
#: (benchmarks/results/wait_policy_loaded.md, wait_policy.md). Read when torch loads, like
#: MKL_CBWR above; a wait policy or spin count the user set is kept.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from onnx_am.domain import InputDomain, parse_domain
from onnx_am.engine.maximizer import AMConfig, maximize, maximize_plan
from onnx_am.engine.plan import RunPlan, parse_run_plan
from onnx_am.engine.results import MaximizeReport, TargetBaseline, UnitResult
from onnx_am.errors import (
    ExternalDataError,
    ImportFailedError,
    InputSpecError,
    MethodError,
    ModelLoadError,
    OnnxAmError,
    ParityError,
    PassError,
    ReportError,
    ResourceLimitError,
    SettingsError,
    TargetError,
    UnsupportedOpError,
)
from onnx_am.importer.limits import ProbeLimit
from onnx_am.importer.model import ImportedModel, import_onnx
from onnx_am.methods import GradientMethod, ReportedMethod, expand_methods, parse_method
from onnx_am.objectives import Target, channel, default_targets, neuron, parse_targets, unit
from onnx_am.passes import RewriteResult, decouple_rectifiers, plan_rewrites
from onnx_am.reference.parity import ParityResult, check_parity

__version__ = "0.1.0"

__all__ = [
    "AMConfig",
    "GradientMethod",
    "MaximizeReport",
    "MethodError",
    "ReportedMethod",
    "RunPlan",
    "SettingsError",
    "expand_methods",
    "parse_run_plan",
    "maximize_plan",
    "RewriteResult",
    "TargetBaseline",
    "UnitResult",
    "decouple_rectifiers",
    "parse_method",
    "plan_rewrites",
    "InputDomain",
    "Target",
    "channel",
    "default_targets",
    "maximize",
    "neuron",
    "parse_domain",
    "parse_targets",
    "unit",
    "ExternalDataError",
    "ImportFailedError",
    "ImportedModel",
    "InputSpecError",
    "ModelLoadError",
    "OnnxAmError",
    "ParityError",
    "ParityResult",
    "ProbeLimit",
    "PassError",
    "ReportError",
    "ResourceLimitError",
    "TargetError",
    "UnsupportedOpError",
    "check_parity",
    "import_onnx",
]
