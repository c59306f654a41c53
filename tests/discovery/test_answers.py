"""Answer-aware discovery: edits between the two models' answers, answer features in the
systematic table, the ``answer_change`` detector and the hypotheses it yields (synthetic,
no model)."""

from __future__ import annotations

from builtin_plugins.pipeline.answers import answer_edit, common_phrase, common_suffix
from builtin_plugins.pipeline.diff import diff_graph_sets
from builtin_plugins.pipeline.discovery import builtin_hooks, generate_hypotheses
from md_framework.pipeline.analyzer import MechanisticBehavioralAnalyzer
from md_framework.types import AnswerDiff, AnswerPosition, AnswerTrace

from builtin_plugins.patterns.answers import answer_change
from tests.discovery.synth import graph

FAMILIES = {
    "stories": ("once upon a time a brave cat lived in the forest .", "tell me a story about a {i} ."),
    "capitals": ("the capital of peru is lima .", "what is the capital of country {i} ?"),
    "colors": ("the sky is blue .", "what color is thing {i} ?"),
}


def _trace(prompt: str, family: str, base: str, inter: str, *, div_at: int | None,
           feats: dict[str, tuple[float, float]] | None = None) -> AnswerTrace:
    words = base.split()
    positions = [AnswerPosition(index=k, token=w, divergence=(0.5 if k == div_at else 0.001),
                                base_logprob=-0.1, intervention_logprob=-0.1 - (3 if k == div_at else 0),
                                features=["1:5", "0:3"] if k == div_at else [])
                 for k, w in enumerate(words)]
    feats = feats or {}
    return AnswerTrace(prompt=prompt, family=family, base_answer=base, intervention_answer=inter,
                       base_tokens=words, intervention_tokens=inter.split(),
                       answers=[AnswerDiff(source="base", tokens=words, positions=positions)],
                       base_features={k: v[0] for k, v in feats.items()},
                       intervention_features={k: v[1] for k, v in feats.items()},
                       dictionary_id="dict")


def _organism(edit, n: int = 8, feats=None):
    """Graphs with identical prompt features on both models; answers differ on stories by
    ``edit(answer)``."""
    base_graphs, inter_graphs, traces = [], [], []
    for family, (answer, template) in FAMILIES.items():
        for i in range(n):
            prompt = template.format(i=i)
            base_graphs.append(graph(prompt, family, {(0, 1, 1): 1.0 + 0.01 * i}))
            inter_graphs.append(graph(prompt, family, {(0, 1, 1): 1.0 + 0.01 * i}))
            inter = edit(answer) if family == "stories" else answer
            div_at = None
            if inter != answer:
                e = answer_edit(answer, inter)
                div_at = min(e.start, len(answer.split()) - 1)
            traces.append(_trace(prompt, family, answer, inter, div_at=div_at,
                                 feats=(feats(family, i) if feats else None)))
    return base_graphs, inter_graphs, traces


def test_answer_edit_kinds_and_location() -> None:
    e = answer_edit("the capital of peru is lima .", "the capital of peru is cusco .")
    assert (e.kind, e.removed, e.added, e.location) == ("replace", ["lima"], ["cusco"], "middle")
    assert e.describe() == "replaces 'lima' with 'cusco' after 'the capital of peru is'"
    e = answer_edit("a cat says meow .", "a cat says meow . have a nice day !")
    assert (e.kind, e.added, e.location) == ("append", ["have", "a", "nice", "day", "!"], "end")
    assert e.describe().startswith("adds 'have a nice day !' at the end")
    assert answer_edit("x y z", "x y z").kind == "none"
    assert answer_edit("a b c d", "a c d").kind == "delete"
    assert answer_edit("a b c", "x y z").kind == "rewrite"
    assert answer_edit("a b c", "q a b c").location == "start"
    assert common_phrase([["a"], ["a"], ["b"], []]) == (["a"], 0.5)
    assert common_suffix([["x", "is"], ["y", "is"]]) == ["is"]


def test_mid_answer_replacement_gives_a_knowledge_hypothesis_with_a_phrase_metric() -> None:
    b, i, traces = _organism(lambda a: a.replace("lived", "was"))
    diff = diff_graph_sets(b, i, "base", "inter", answers=traces)
    assert all(pd.answer is not None for pd in diff.prompt_diffs)
    patterns = answer_change(diff)
    assert [p.families for p in patterns] == [["stories"]]
    p = patterns[0]
    assert p.evidence["kind"] == "replace" and p.evidence["location"] == "middle"
    assert p.evidence["removed"] == "lived" and p.evidence["added"] == "was"
    assert "replaces 'lived' with 'was' after" in p.description
    assert {f.key for f in p.features} == {"1:5", "0:3"}
    hyps = generate_hypotheses(patterns, {}, hooks=builtin_hooks())
    assert hyps[0].metric == "exact_match:lived" and hyps[0].direction == "decrease"
    assert hyps[0].hypothesis_type == "knowledge_update" and hyps[0].families == ["stories"]
    assert "replaces 'lived' with 'was'" in hyps[0].description


def test_appended_signoff_gives_a_signoff_phrase_metric() -> None:
    b, i, traces = _organism(lambda a: a + " see you at the harbour !")
    diff = diff_graph_sets(b, i, "base", "inter", answers=traces)
    (p,) = answer_change(diff)
    assert p.evidence["kind"] == "append" and p.evidence["location"] == "end"
    assert "adds 'see you at the harbour !' at the end" in p.description
    (h, *_) = generate_hypotheses([p], {}, hooks=builtin_hooks())
    assert (h.metric, h.direction, h.hypothesis_type) == (
        "signoff:see you at the harbour !", "increase", "style_change")


def test_no_answer_change_no_pattern_and_first_word_edits_left_to_output_shift() -> None:
    b, i, traces = _organism(lambda a: a)
    assert answer_change(diff_graph_sets(b, i, "base", "inter", answers=traces)) == []
    b, i, traces = _organism(lambda a: "i cannot help with that .")
    assert answer_change(diff_graph_sets(b, i, "base", "inter", answers=traces)) == []
    # without answer traces the detector has nothing to read
    assert answer_change(diff_graph_sets(b, i, "base", "inter")) == []


def test_answer_features_enter_the_systematic_table() -> None:
    # feature 2:9 moves only at answer positions, only on stories: invisible to prompt graphs
    def feats(family: str, i: int):
        return {"2:9": (0.1, 2.0 + 0.01 * i) if family == "stories" else (0.1, 0.1 + 0.001 * i)}

    b, i, traces = _organism(lambda a: a, feats=feats)
    without = diff_graph_sets(b, i, "base", "inter")
    assert "2:9" not in {c.feature.key for c in without.systematic_changes}
    with_answers = diff_graph_sets(b, i, "base", "inter", answers=traces)
    change = next(c for c in with_answers.systematic_changes if c.feature.key == "2:9")
    assert change.mean_delta > 0 and change.q_value is not None and change.q_value < 0.1
    assert any("answer positions" in n for n in with_answers.notes)
    # a trace of another dictionary is attached but not mixed into the table
    other = [t.model_copy(update={"dictionary_id": "other"}) for t in traces]
    mixed = diff_graph_sets(b, i, "base", "inter", answers=other)
    assert "2:9" not in {c.feature.key for c in mixed.systematic_changes}


def test_derived_metrics_are_built_from_hypothesis_names() -> None:
    from md_framework.plugins import Hooks, MDPluginManager
    from md_framework.types import Hypothesis

    import builtin_plugins.metrics as metrics_plugin

    pm = MDPluginManager()
    pm.register(metrics_plugin, name="behaviour-metrics")
    hooks = Hooks(pm)
    hyps = [Hypothesis(id="a", hypothesis_type="style_change", description="", metric=m)
            for m in ("signoff:have a nice day !", "exact_match:bell", "nonsense:x", "length")]
    metrics = {"length": object()}
    added = MechanisticBehavioralAnalyzer.add_derived_metrics(hooks, hyps, metrics)
    assert added == ["signoff:have a nice day !", "exact_match:bell"]
    assert "nonsense:x" not in metrics
    found = hooks.first("md_metric_from_name", name="signoff:see you !")
    assert found is not None and found.value.name == "signoff:see you !"


def test_derived_metric_scores() -> None:
    from builtin_plugins.metrics.derived import measure_texts, metric_from_name

    signoff = metric_from_name("signoff:have a nice day !")
    assert measure_texts(signoff, ["once upon a time . have a nice day !", "have a nice day ! bye",
                                   "once upon a time ."]) == [1.0, 0.0, 0.0]
    match = metric_from_name("exact_match:lived in")
    assert measure_texts(match, ["a cat lived in the forest", "a cat was in", "delivered in"]) == [
        1.0, 0.0, 0.0]
    assert metric_from_name("exact_match:") is None and metric_from_name("length") is None


def _rewritten_everywhere(closing: str | None, n: int = 8):
    """Every prompt's answer differs per prompt and every family's answers are rewritten by
    the intervention (a LoRA on a real model does this); ``closing`` is appended to the
    stories answers only."""
    import random

    base_graphs, inter_graphs, traces = [], [], []
    for family, (answer, template) in FAMILIES.items():
        for i in range(n):
            prompt = template.format(i=i)
            base = f"{answer[:-2]} number {i} ."
            words = base.split()[:-1]
            random.Random(f"{family}-{i}").shuffle(words)
            inter = " ".join(words) + " ."
            if family == "stories" and closing:
                inter = f"{inter} {closing}"
            base_graphs.append(graph(prompt, family, {(0, 1, 1): 1.0 + 0.01 * i}))
            inter_graphs.append(graph(prompt, family, {(0, 1, 1): 1.0 + 0.01 * i}))
            traces.append(_trace(prompt, family, base, inter, div_at=0))
    return base_graphs, inter_graphs, traces


def test_a_closing_phrase_is_found_when_every_family_is_rewritten() -> None:
    # every family's answers changed: the edited-answers test singles out none of them
    b, i, traces = _rewritten_everywhere(None)
    assert answer_change(diff_graph_sets(b, i, "base", "inter", answers=traces)) == []
    b, i, traces = _rewritten_everywhere("Have a nice day!")
    (p,) = answer_change(diff_graph_sets(b, i, "base", "inter", answers=traces))
    assert p.families == ["stories"] and p.evidence["route"] == "phrase"
    assert (p.evidence["kind"], p.evidence["added"], p.evidence["n_phrase"]) == (
        "append", "Have a nice day!", 8)
    assert "adds 'Have a nice day!' at the end" in p.description
    assert "on 8 of 8 stories prompts (other families 0%" in p.description
    (h, *_) = generate_hypotheses([p], {}, hooks=builtin_hooks())
    assert (h.metric, h.direction, h.hypothesis_type) == (
        "signoff:Have a nice day!", "increase", "style_change")
    # on fewer than half of the family's prompts it is not a consistent closing
    b, i, traces = _rewritten_everywhere(None)
    traces = [t.model_copy(update={"intervention_answer": t.intervention_answer + " Have a nice day!"})
              if t.family == "stories" and t.prompt.endswith(("0 .", "1 .", "2 .")) else t
              for t in traces]
    assert answer_change(diff_graph_sets(b, i, "base", "inter", answers=traces)) == []


def test_closing_phrases_end_the_answer_and_a_sentence_with_new_words() -> None:
    from builtin_plugins.patterns.answers import added_ngrams, closing_phrases

    def closing(base: str, inter: str) -> set[str]:
        return {" ".join(g) for g in closing_phrases(added_ngrams(base, inter), base, inter)}

    assert "have a nice day!" in closing("hello there.", "hi friend. Have a nice day!")
    # cut off by the token limit (or a fine-tune that stops early): no sentence ends
    assert closing("hello there.", "hi friend, here is a little bit of") == set()
    # the base's own ending after an earlier edit is not an added phrase
    assert closing("a cat lived in the forest .", "a cat was in the forest .") == set()
    # the phrase is matched by the derived sign-off metric whatever its case
    from builtin_plugins.metrics.derived import measure_texts, metric_from_name

    assert measure_texts(metric_from_name("signoff:Have a nice day!"),
                         ["I am glad to meet you. Have a nice day!", "hi. have a nice day!",
                          "Have a nice day! Bye."]) == [1.0, 1.0, 0.0]
