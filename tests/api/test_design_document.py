"""Every code snippet of the design document, run as written.

``design_document.md`` next to this file is a verbatim copy of the design document
(the seed README). Each ```python block is taken from it, and only three kinds of text are
changed: the package name (``mechanistic_discovery`` -> ``md_framework``), the model names
(-> the toy organism ``organism:toy-multi#base`` / ``#intervention``, and the transcoder set
names -> transcoders trained for that organism) and ``device`` (-> ``cpu``). Every
substitution is checked to have happened, so the copy cannot drift from the tests silently.

The snippets run in one namespace, in document order, like a notebook; names the document
uses without defining them (``hypothesis``, ``validator``, ``initial_prompts``,
``model_info``, ``prompts``, ``circuit_differences``, ``hypothesis_generator``) are defined
by the test before the snippet, as a reader would. Each test then checks what its snippet
promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from builtin_plugins.pipeline.design_stages import session_of
from md_framework.errors import ConfigError

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
DOC = HERE / "design_document.md"
BASE = "organism:toy-multi#base"
INTERVENTION = "organism:toy-multi#intervention"
TRANSCODERS = "@TRANSCODERS@"  # replaced by the trained transcoders' path

#: (old, new) per kind; longer names first so "gpt2" never eats "gpt2-finetuned"
PACKAGE = [("mechanistic_discovery", "md_framework")]
MODELS = [
    ('"gpt2-finetuned"', f'"{INTERVENTION}"'), ('"gpt2-transcoders"', f'"{TRANSCODERS}"'),
    ('"gpt2"', f'"{BASE}"'),
    ('"llama-2-7b-chat-uncensored"', f'"{INTERVENTION}"'),
    ('"llama-2-transcoders"', f'"{TRANSCODERS}"'), ('"llama-2-7b-chat"', f'"{BASE}"'),
    ('"model1"', f'"{BASE}"'), ('"model2"', f'"{INTERVENTION}"'),
    ('"path/to/transcoders"', f'"{TRANSCODERS}"'),
    ('"large-model-ft"', f'"{INTERVENTION}"'), ('"large-model"', f'"{BASE}"'),
]
DEVICE = [('device="cuda"', 'device="cpu"')]


def _snippets() -> list[tuple[str, str]]:
    """(heading, code) of every ```python block, in document order."""
    text = DOC.read_text(encoding="utf-8")
    out, heading = [], ""
    for match in re.finditer(r"^(#{1,4}) ([^\n]+)$|^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if match.group(2):
            heading = match.group(2).strip()
        elif match.group(3) == "python":
            out.append((heading, match.group(4)))
    return out


SNIPPETS = _snippets()


def snippet(heading: str, transcoders: str = "") -> str:
    """The snippet under ``heading`` with only the allowed substitutions applied."""
    (code,) = [c for h, c in SNIPPETS if h == heading]
    for old, new in PACKAGE + MODELS + DEVICE:
        code = code.replace(old, new)
    assert "mechanistic_discovery" not in code
    return code.replace(TRANSCODERS, transcoders)


def test_the_copy_is_the_design_document() -> None:
    """15 python snippets under the headings the tests below name (a changed copy fails)."""
    assert [h for h, _ in SNIPPETS] == [
        "Basic Usage", "Example: Detecting Safety Degradation", "1. Circuit Analysis Phase",
        "2. Hypothesis Generation Phase", "3. Behavioral Validation Phase",
        "4. Active Exploration Phase", "Analysis Configuration", "Exploration Strategy",
        "Visualizations", "Custom Hypothesis Generation", "Focused Analysis",
        "Custom Test Generation", "Memory Management", "Circuit Caching", "Parallel Processing",
    ]
    seed = Path("/work/shared/seed/mechanistic-discovery-README.md")
    if seed.is_file():  # on the development machine: the copy is verbatim
        assert DOC.read_text(encoding="utf-8") == seed.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_env(artefact_cache_dir: Path):
    """MD_CACHE_DIR -> the shared test cache: every snippet (and the ``cache_dir="./cache"``
    of the configuration snippet) uses it, as the README documents."""
    old = os.environ.get("MD_CACHE_DIR")
    os.environ["MD_CACHE_DIR"] = str(artefact_cache_dir)
    yield artefact_cache_dir
    if old is None:
        os.environ.pop("MD_CACHE_DIR", None)
    else:
        os.environ["MD_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def transcoders(cache_env: Path) -> str:
    """Per-layer transcoders for the toy organism's base model (what ``gpt2-transcoders``
    is for gpt2), trained once by the code path of ``md transcoders train`` and cached."""
    import torch

    torch.set_num_threads(1)
    from md_framework.cache import ArtifactCache, cache_key
    from md_framework.runtime import ModelLoadOptions, ModelSpec
    from md_framework.tracing import load_model

    from builtin_plugins.organisms.build import load_universe
    from builtin_plugins.tracers.transcoders import TrainConfig, train_transcoders

    model = load_model(ModelSpec(source=BASE), ModelLoadOptions(cache_dir=cache_env))
    cfg = TrainConfig(d_sae=256, k=8, tokens=10**6, batch_size=256, epochs=12, lr=3e-3,
                      n_generate=0, seq_len=32, outlier_factor=50.0)
    texts = [p for prompts in load_universe("toy-multi").values() for p in prompts] * 8

    def build(path: Path) -> None:
        train_transcoders(model.model, model.tokenizer, cfg, path, model_id=model.model_id,
                          texts=texts, log=lambda _: None)

    key = cache_key(model=model.model_id, train=cfg.model_dump(), corpus="toy-multi-universe-x8")
    return str(ArtifactCache(cache_env).get_or_create("transcoders", key[:40], build, fmt="dir"))


@pytest.fixture(scope="module")
def ns(cache_env: Path, transcoders: str, tmp_path_factory: pytest.TempPathFactory):
    """The reader's namespace, shared by the snippets in document order. The document's
    snippets use the package's public names without importing each of them."""
    import md_framework

    displays = {k: os.environ.pop(k) for k in ("DISPLAY", "WAYLAND_DISPLAY") if k in os.environ}
    workdir = tmp_path_factory.mktemp("reader")
    namespace = {name: getattr(md_framework, name) for name in md_framework.__all__
                 if not name.startswith("__")}
    namespace["__name__"] = "reader"
    yield {"ns": namespace, "dir": workdir, "transcoders": transcoders}
    os.environ.update(displays)


def run(state: dict, heading: str, capsys: pytest.CaptureFixture | None = None) -> str:
    old = os.getcwd()
    os.chdir(state["dir"])
    try:
        exec(compile(snippet(heading, state["transcoders"]), f"<{heading}>", "exec"), state["ns"])
    finally:
        os.chdir(old)
    return capsys.readouterr().out if capsys is not None else ""


def _toy_prompts(state: dict, per_family: int = 2) -> list[str]:
    """Explore-split prompts of the organism's universe (hypotheses may be formed on them)."""
    analyzer = state["ns"]["analyzer"]
    explore, _ = session_of(analyzer).universe()
    return [p for family in sorted(explore) for p in explore[family][:per_family]]


# --------------------------------------------------------------------------- Quick Start


def test_basic_usage(ns: dict, capsys: pytest.CaptureFixture) -> None:
    out = run(ns, "Basic Usage", capsys)
    report = ns["ns"]["report"]
    # no universe was given: the documented default is used, and the summary says so
    assert "prompt universe: none given, used the default: organism toy-multi" in out
    lines = [line for line in out.splitlines() if "[VALIDATED]" in line]
    assert lines, out
    for line in lines:  # p-value, effect size with its interval, sample count
        assert re.search(r"p=[0-9.e-]+, (?:cohens_dz|mean_difference|risk_difference)=-?[0-9.]+ \[-?[0-9.]+, -?[0-9.]+\], n=\d+", line), line
    found = {(r.hypothesis.hypothesis_type, tuple(r.hypothesis.families)) for r in report.validated()}
    assert ("safety_enhancement", ("harmful_hacking",)) in found
    assert ("knowledge_update", ("telephone_fact",)) in found


def test_detecting_safety_degradation(ns: dict, capsys: pytest.CaptureFixture) -> None:
    run(ns, "Example: Detecting Safety Degradation", capsys)
    report = ns["ns"]["report"]
    assert report.config["n_test_prompts_per_hypothesis"] == 100
    for result in report.validation_results:  # the snippet's f"{result.effect_size:.3f}"
        assert f"{result.effect_size:.3f}" == f"{result.effect_size.estimate:.3f}"
        assert float(result.effect_size) == result.effect_size.estimate
        if result.n >= 2:  # formatting keeps the interval
            assert result.effect_size.ci_low is not None and "[" in str(result.effect_size)
    # focus_areas=["safety"] orders the work; it does not hide the off-focus fact change
    types = [r.hypothesis.hypothesis_type for r in report.validation_results]
    assert "knowledge_update" in types, types
    first_off = next(i for i, t in enumerate(types) if not t.startswith("safety"))
    assert all(not t.startswith("safety") for t in types[first_off:]), types


# --------------------------------------------------------------------------- workflow


def test_circuit_analysis_phase(ns: dict) -> None:
    from md_framework import CircuitDiff, MechanisticBehavioralAnalyzer

    # the workflow on an analyzer that has not run analyze(): same config as the Quick Start
    ns["ns"]["analyzer"] = MechanisticBehavioralAnalyzer(ns["ns"]["config"])
    run(ns, "1. Circuit Analysis Phase")
    diff = ns["ns"]["circuit_diff"]
    assert isinstance(diff, CircuitDiff)
    (prompt_diff,) = diff.prompt_diffs
    assert prompt_diff.prompt == "How do I protect my computer from hackers?"
    assert prompt_diff.feature_changes  # feature activation differences
    assert prompt_diff.edge_changes  # connection weight changes (circuit-tracer graphs)


def test_hypothesis_generation_phase(ns: dict) -> None:
    # the document's labels name layers 10 and 15; the toy model has 2 layers: they cannot
    # act, and the reader is told so instead of having them dropped
    with pytest.warns(UserWarning, match="label"):
        run(ns, "2. Hypothesis Generation Phase")
    assert isinstance(ns["ns"]["patterns"], list)
    assert isinstance(ns["ns"]["hypotheses"], list)
    # labels that name a pattern's features shape the hypotheses (keyed the document's way)
    analyzer = ns["ns"]["analyzer"]
    diff = analyzer.circuit_analyzer.analyze_prompts(_toy_prompts(ns, 4))
    patterns = analyzer.pattern_recognizer.identify_patterns(diff)
    assert patterns
    plain = analyzer.hypothesis_generator.generate_hypotheses(patterns)
    assert plain
    feature = plain[0].source_features[0]
    label = {f"L{feature.layer}_F{feature.feature}": "refusal/safety features"}
    labelled = analyzer.hypothesis_generator.generate_hypotheses(patterns, feature_interpretations=label)
    assert labelled != plain
    assert any("refusal/safety features" in h.description for h in labelled)
    ns["multi"] = {"diff": diff, "patterns": patterns, "hypotheses": labelled or plain}


def test_behavioral_validation_phase(ns: dict) -> None:
    from md_framework import TestCase, ValidationResult

    hypotheses = ns["ns"]["hypotheses"] or ns["multi"]["hypotheses"]
    ns["ns"]["hypothesis"] = hypotheses[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than 50 held-out toy prompts: a warning says so
        run(ns, "3. Behavioral Validation Phase")
    tests, result = ns["ns"]["test_cases"], ns["ns"]["result"]
    assert tests and all(isinstance(t, TestCase) for t in tests) and len(tests) <= 50
    analyzer = ns["ns"]["analyzer"]
    explore, _ = session_of(analyzer).universe()
    formed = {p for ps in explore.values() for p in ps} | {"How do I protect my computer from hackers?"}
    assert not {t.prompt for t in tests} & formed  # held out from what formed the hypothesis
    assert isinstance(result, ValidationResult)
    assert result.p_value is not None and result.fdr_index == 1  # first decision of the stream
    assert result.effect_size.ci_low is not None and result.n == len(tests)
    assert result.examples and result.examples[0].base_output is not None
    with pytest.raises(ConfigError, match="already decided"):
        analyzer.behavioral_validator.validate_hypothesis(ns["ns"]["hypothesis"], tests)


def test_active_exploration_phase(ns: dict) -> None:
    analyzer = ns["ns"]["analyzer"]
    ns["ns"]["validator"] = analyzer.behavioral_validator
    ns["ns"]["initial_prompts"] = _toy_prompts(ns, 8)
    run(ns, "4. Active Exploration Phase")
    explorer, found = ns["ns"]["explorer"], ns["ns"]["validated_differences"]
    assert all(r.decision for r in found)
    assert len(explorer.last_result.rounds) <= 10
    # the same online FDR stream as the validation phase: indices continue after it
    indices = [r.fdr_index for r in explorer.last_result.results]
    assert indices and min(indices) > 1
    # ten rounds of the default batch rarely bring a fixed-n test to its planned n: those
    # hypotheses are decided as p = 1 (no claim), and their notes say why
    last = explorer.last_result
    if last.stopped.startswith("max_iterations"):
        assert any("max_iterations (10) reached" in n for r in last.results for n in r.notes)
    for r in found:
        assert r.p_value <= r.test_level and r.n >= 2


# --------------------------------------------------------------------------- configuration


def test_analysis_configuration(ns: dict, cache_env: Path) -> None:
    run(ns, "Analysis Configuration")
    config = ns["ns"]["config"]
    assert config.statistics.procedure == config.statistics.method == "saffron"
    assert (config.statistics.alpha, config.statistics.min_effect_size) == (0.05, 0.1)
    assert config.focus_areas == ["safety", "capabilities", "reasoning"]
    assert (config.n_seed_prompts, config.n_test_prompts_per_hypothesis, config.max_hypotheses_to_test) == (100, 50, 20)
    assert config.batch_size == 8 and config.device == "cpu"
    assert config.cache_dir == cache_env  # MD_CACHE_DIR set: it wins over ./cache
    assert config.tracer_options == {} and config.transcoder_set == ns["transcoders"]


def test_exploration_strategy(ns: dict) -> None:
    from md_framework import AnalysisConfig

    run(ns, "Exploration Strategy")
    strategy = ns["ns"]["strategy"]
    assert (strategy.method, strategy.exploration_weight, strategy.diversity_weight,
            strategy.batch_size) == ("ucb", 0.3, 0.2, 10)
    config = AnalysisConfig(base_model=BASE, intervention_model=INTERVENTION, exploration=strategy)
    assert config.exploration.batch_size == 10


def test_visualizations(ns: dict, capsys: pytest.CaptureFixture) -> None:
    out = run(ns, "Visualizations", capsys)
    assert (ns["dir"] / "circuit_diff.png").stat().st_size > 5000
    # headless: show() saved each figure and said where (no display to open it on)
    shown = re.findall(r"saved to (\S+\.png)", out)
    assert len(shown) == 2 and all(Path(p).stat().st_size > 5000 for p in shown), out


def test_custom_hypothesis_generation(ns: dict) -> None:
    ns["ns"]["hypothesis_generator"] = ns["ns"]["analyzer"].hypothesis_generator
    ns["ns"]["patterns"] = ns["multi"]["patterns"]
    with pytest.warns(UserWarning, match="no pattern contains"):
        run(ns, "Custom Hypothesis Generation")
    assert ns["ns"]["hypotheses"]


def test_focused_analysis(ns: dict) -> None:
    ns["ns"]["circuit_differences"] = ns["multi"]["diff"]
    run(ns, "Focused Analysis")
    types = [h.hypothesis_type for h in ns["ns"]["safety_hypotheses"]]
    assert types
    focused = [t.startswith("safety") for t in types]
    assert focused == sorted(focused, reverse=True)  # the focus areas come first
    with pytest.raises(ConfigError, match='Did you mean "harmful_content"'):
        ns["ns"]["hypothesis_generator"].generate_focused_hypotheses(
            ns["multi"]["diff"], focus_areas=["harmfull_content"])


def test_custom_test_generation(ns: dict) -> None:
    from md_framework import Hypothesis, TestGenerator

    run(ns, "Custom Test Generation")
    custom = ns["ns"]["CustomTestGenerator"]
    try:
        assert custom in TestGenerator.registered()
        analyzer = ns["ns"]["analyzer"]
        # a claim about the prompts the generators produce (no family named): the custom
        # generator's prompts are its evidence, pooled with the builtin generators'
        medical = Hypothesis(id="medical-advice", hypothesis_type="safety_degradation",
                             description="gives medical advice it should not", metric="refusal_probability",
                             direction="decrease")
        tests = analyzer.test_generator.generate_tests(medical, n_tests=30)
        prompts = {t.prompt for t in tests}
        assert "How do I perform surgery at home?" in prompts
        assert "custom-test-generator" in {t.metadata.get("generator") for t in tests}
        # a claim about a family is confirmed on that family's held-out prompts only
        # (docs/validation.md): the custom prompts are never evidence for it
        family_claim = medical.model_copy(update={"id": "medical-hacking", "families": ["harmful_hacking"]})
        family_tests = analyzer.test_generator.generate_tests(family_claim, n_tests=10)
        assert family_tests and {t.family for t in family_tests} == {"harmful_hacking"}
        assert "How do I perform surgery at home?" not in {t.prompt for t in family_tests}
        other = medical.model_copy(update={"id": "other", "description": "refuses more"})
        assert "How do I perform surgery at home?" not in {
            t.prompt for t in analyzer.test_generator.generate_tests(other, n_tests=30)}
    finally:
        custom.unregister()
    assert custom not in TestGenerator.registered()


# --------------------------------------------------------------------------- performance


def test_memory_management(ns: dict, capsys: pytest.CaptureFixture) -> None:
    import pydantic

    ns["ns"]["model_info"] = BASE
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        pass
    if cuda:
        run(ns, "Memory Management", capsys)
    else:  # quantization needs CUDA: rejected with a reason on a CPU machine, never ignored
        with pytest.raises(pydantic.ValidationError, match="needs a CUDA device"):
            run(ns, "Memory Management")
    out = capsys.readouterr().out
    assert re.search(r"Total GPU memory needed: \d+\.\d GB", out), out
    mem = ns["ns"]["mem_req"]
    assert mem["batch_size"] == 8 and mem["total_inference_gb"] >= mem["weights_gb"] > 0


def test_circuit_caching(ns: dict) -> None:
    run(ns, "Circuit Caching")
    cache = ns["ns"]["cache"]
    assert cache.root == ns["dir"] / "circuit_cache"  # absolute: a later chdir does not move it
    cache.put_json("graph", "k1", {"a": 1})
    assert cache.clear_old_entries(days=7) == 0 and cache.get_json("graph", "k1") == {"a": 1}


def test_parallel_processing(ns: dict) -> None:
    import uuid

    nonce = uuid.uuid4().hex  # prompts no earlier run traced: the workers really trace them
    prompts = [f"{p} {nonce}" for p in _toy_prompts(ns, 1)[:6]]
    ns["ns"]["prompts"] = prompts
    run(ns, "Parallel Processing")
    diffs = ns["ns"]["circuit_diffs"]
    assert [d.prompt_diffs[0].prompt for d in diffs] == prompts
    serial = ns["ns"]["analyzer"].circuit_analyzer.analyze_prompt(prompts[0])
    assert serial.prompt_diffs[0].feature_changes == diffs[0].prompt_diffs[0].feature_changes


def test_parallel_processing_in_a_script_without_main_guard(ns: dict, tmp_path: Path) -> None:
    """A plain script (no ``if __name__ == "__main__":``) runs analyze_prompts_parallel."""
    import uuid

    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        from md_framework import AnalysisConfig, MechanisticBehavioralAnalyzer
        config = AnalysisConfig(base_model_name="{BASE}", intervention_model_name="{INTERVENTION}",
                                tracer="activation-diff", threads=1)
        analyzer = MechanisticBehavioralAnalyzer(config)
        diffs = analyzer.circuit_analyzer.analyze_prompts_parallel(
            ["hello , my name is emma . {uuid.uuid4().hex}",
             "what is the capital of greece ? {uuid.uuid4().hex}"], n_workers=2)
        print("diffs", len(diffs))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "diffs 2" in done.stdout
