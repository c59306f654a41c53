"""The self-contained HTML dashboard.

One file, readable offline: CSS inline, every image a ``data:image/png;base64`` URI, no
scripts at all, and a Content-Security-Policy that forbids any network fetch or script even
if something slipped through. Rendered by Jinja2 with autoescaping on, so prompts, model
outputs, interpretations and descriptions always show as text.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from md_framework.types import AnalysisReport, FeatureInterpretation, Hypothesis, ValidationResult

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

#: Titles of the plot names :func:`builtin_plugins.report.render.render_report` produces.
PLOT_TITLES = {
    "circuit_heatmap": ("Circuit difference heatmap",
                        "Mean activation change of each systematically changed feature, by layer. Red: stronger in the intervention model; blue: weaker."),
    "circuit_network": ("Changed circuit", "Changed feature nodes (colour = activation change) and the edges that appeared, vanished or were reweighted, pooled over prompts."),
    "validation": ("Hypothesis validation", "Effect sizes with confidence intervals, and the evidence of each test against the level the online FDR procedure granted it."),
    "fdr_trace": ("Online FDR over time", "Test level per decision, observed p-values (or 1/e), and cumulative discoveries."),
    "bandit_pulls": ("Exploration (bandit)", "Which hypothesis received the next batch of prompts in each round, and cumulative pulls."),
    "sample_efficiency": ("Sample efficiency", "Recall of planted changes against behaviour queries, per method (from md bench)."),
}

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>What changed: {{ base_name }} → {{ intervention_name }}</title>
<style>
:root { --fg:#1d232b; --muted:#5c6670; --line:#dfe3e8; --bg:#f6f7f9; --card:#fff;
        --ok:#1e8449; --no:#7f8c8d; --up:#c0392b; --down:#2e6fb5; --accent:#34495e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:var(--accent); color:#fff; padding:18px 32px; }
header h1 { margin:0; font-size:22px; font-weight:600; }
header .models { margin-top:4px; font-size:15px; opacity:.9; }
header .ids { margin-top:2px; font-size:11.5px; opacity:.7; font-family:ui-monospace,"DejaVu Sans Mono",monospace; }
section.card.finding { border-left:6px solid var(--ok); padding:14px 18px; }
.finding h3.claim { margin:0 0 4px; font-size:17px; color:var(--fg); }
.finding .nums { display:flex; flex-wrap:wrap; gap:8px 22px; margin:6px 0 10px; font-size:14px; }
.finding .nums b { font-size:17px; }
.pair { display:grid; grid-template-columns:minmax(0,1.1fr) minmax(0,1fr) minmax(0,1fr); gap:0; border:1px solid var(--line); border-radius:6px; overflow:hidden; margin:6px 0; }
.pair > div { padding:6px 9px; border-right:1px solid var(--line); min-width:0; }
.pair > div:last-child { border-right:0; }
.pair .lab { font-size:11px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin-bottom:2px; }
.pair .ans { white-space:pre-wrap; word-break:break-word; font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace; max-height:8.5em; overflow:hidden; }
.pair .q { background:#f7f8fa; }
.pair .b { background:#fbfcfd; } .pair .i { background:#fdf6f5; }
ul.reasons { margin:4px 0; padding-left:20px; } ul.reasons li { margin-bottom:4px; }
.lead { font-size:15px; margin:0 0 8px; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 32px; font-size:14px; }
nav a { margin-right:16px; color:var(--accent); text-decoration:none; }
nav a:hover { text-decoration:underline; }
main { max-width:1180px; margin:0 auto; padding:20px 32px 60px; }
section.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
               padding:18px 22px; margin:18px 0; }
h2 { margin:0 0 12px; font-size:19px; }
h3 { margin:16px 0 6px; font-size:15px; color:var(--accent); }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; margin-bottom:14px; }
.tile { border:1px solid var(--line); border-radius:6px; padding:10px 12px; background:#fbfcfd; }
.tile .v { font-size:22px; font-weight:600; }
.tile .k { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.03em; }
table { border-collapse:collapse; width:100%; font-size:13.5px; margin:6px 0 10px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f0f2f5; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.two { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width:900px) { .two { grid-template-columns:1fr; } }
figure { margin:0 0 18px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; background:#fff; }
figcaption { font-size:13px; color:var(--muted); margin-top:4px; }
.badge { display:inline-block; padding:1px 9px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; vertical-align:middle; }
.badge.ok { background:var(--ok); } .badge.no { background:var(--no); } .badge.untested { background:#b7950b; }
.hyp { border-left:5px solid var(--no); }
.hyp.validated { border-left-color:var(--ok); }
.hyp.untested { border-left-color:#b7950b; }
.meta { color:var(--muted); font-size:13px; }
ol.prov { margin:6px 0 0; padding-left:22px; }
ol.prov > li { margin-bottom:8px; }
ol.prov > li > b { color:var(--accent); }
.up { color:var(--up); font-weight:600; } .down { color:var(--down); font-weight:600; }
pre.text { white-space:pre-wrap; word-break:break-word; margin:0; font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;
           background:#f7f8fa; border:1px solid var(--line); border-radius:4px; padding:4px 6px; max-height:14em; overflow:auto; }
.ex td { width:30%; } .ex td.num { width:auto; }
td.nowrap { white-space:nowrap; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); font-weight:600; }
code { font:12.5px ui-monospace,"DejaVu Sans Mono",monospace; background:#f0f2f5; padding:0 3px; border-radius:3px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:30px; }
</style>
</head>
<body>
<header>
  <h1>What changed: {{ base_name }} → {{ intervention_name }}</h1>
  <div class="models">{{ n_validated }} of {{ r.validation_results|length }} tested hypotheses validated{% if fdr_text %} · {{ fdr_text }}{% endif %} · {{ r.costs.behaviour_queries }} behaviour queries</div>
  <div class="ids">base {{ r.base_model_id or '?' }} · intervention {{ r.intervention_model_id or '?' }}</div>
</header>
<nav>
  <a href="#findings">What changed</a>
  <a href="#not-validated">Not validated</a>
  {% if plots %}<a href="#plots">Plots</a>{% endif %}
  <a href="#overview">Overview</a>
  <a href="#hypotheses">Hypotheses</a>
  <a href="#fdr">Online FDR</a>
  <a href="#bandit">Exploration</a>
  {% if changes %}<a href="#changes">Circuit changes</a>{% endif %}
  {% if exports %}<a href="#exports">Graph exports</a>{% endif %}
  <a href="#config">Configuration</a>
</nav>
<main>
<section class="card" id="findings">
  <h2>What changed</h2>
  {% if universe_note %}<p class="meta">Prompt universe: none was given, so the default was used: {{ universe_note }}.</p>{% endif %}
  {% if findings %}
  <p class="lead">{{ findings|length }} validated change{{ '' if findings|length == 1 else 's' }}, each with its effect (intervention − base) and {{ confidence }} interval, and example prompts with both models' answers.</p>
  {% else %}
  <p class="lead">No change was validated: no hypothesis passed its online FDR test{% if r.validation_results %} ({{ r.validation_results|length }} tested; reasons below){% endif %}.</p>
  {% endif %}
</section>
{% for f in findings %}
<section class="card finding" id="finding-{{ loop.index }}">
  <h3 class="claim">{{ f.claim }}</h3>
  <div class="meta">{{ f.kind }}{% if f.families %} · families {{ f.families }}{% endif %} · metric <code>{{ f.metric }}</code> · <a href="#hyp-{{ f.anchor }}">provenance</a></div>
  <div class="nums"><span>effect <b>{{ f.effect }}</b></span><span>{{ f.stat }}</span><span>n = {{ f.n }} prompt pairs</span><span>{{ f.test }}</span>{% if f.causal %}<span>causal share {{ f.causal }}</span>{% endif %}</div>
  {% for o in f.examples %}
  <div class="pair">
    <div class="q"><div class="lab">prompt</div><div class="ans">{{ o.prompt }}</div></div>
    <div class="b"><div class="lab">base answer{% if o.base_value is not none %} ({{ '%.3g'|format(o.base_value) }}){% endif %}</div><div class="ans">{{ o.base_output if o.base_output is not none else '(no text recorded)' }}</div></div>
    <div class="i"><div class="lab">intervention answer{% if o.intervention_value is not none %} ({{ '%.3g'|format(o.intervention_value) }}){% endif %}</div><div class="ans">{{ o.intervention_output if o.intervention_output is not none else '(no text recorded)' }}</div></div>
  </div>
  {% endfor %}
</section>
{% endfor %}
<section class="card" id="not-validated">
  <h2>Not validated</h2>
  {% if rejected %}
  <ul class="reasons">
  {% for h in rejected %}
    <li><b>{{ h.claim }}</b> <span class="meta">({{ h.kind }}{% if h.families %}, {{ h.families }}{% endif %}; {{ h.stat }}; effect {{ h.effect }}; n = {{ h.n }}; <a href="#hyp-{{ h.anchor }}">details</a>)</span><br>{{ h.reason }}</li>
  {% endfor %}
  </ul>
  {% else %}<p class="meta">Every tested hypothesis was validated.</p>{% endif %}
  {% if untested %}<p class="meta">Proposed but not tested (query budget or cap): {{ untested|join('; ') }}</p>{% endif %}
</section>
{% if plots %}
<section class="card" id="plots">
  <h2>Plots</h2>
  {% for p in plots %}
  <figure id="plot-{{ p.name }}">
    <h3>{{ p.title }}</h3>
    <img src="{{ p.uri }}" alt="{{ p.title }}">
    <figcaption>{{ p.caption }}{% if p.file %} PNG: <a href="{{ p.file }}">{{ p.file }}</a>{% endif %}</figcaption>
  </figure>
  {% endfor %}
</section>
{% endif %}

<section class="card" id="overview">
  <h2>Overview</h2>
  <div class="tiles">
    <div class="tile"><div class="v">{{ r.hypotheses|length }}</div><div class="k">hypotheses proposed</div></div>
    <div class="tile"><div class="v">{{ r.validation_results|length }}</div><div class="k">tested</div></div>
    <div class="tile"><div class="v" style="color:var(--ok)">{{ n_validated }}</div><div class="k">validated</div></div>
    <div class="tile"><div class="v">{{ r.costs.behaviour_queries }}</div><div class="k">behaviour queries</div></div>
    <div class="tile"><div class="v">{{ r.costs.traced_prompts }}</div><div class="k">traced prompts</div></div>
    <div class="tile"><div class="v">{{ '%.1f'|format(r.costs.wall_time_s) }} s</div><div class="k">wall time</div></div>
  </div>
  <div class="two">
    <div>
      <h3>Models</h3>
      <table>
        <tr><th>base</th><td>{{ base_name }} <span class="meta">{{ r.base_model_id or '' }}</span></td></tr>
        <tr><th>intervention</th><td>{{ intervention_name }} <span class="meta">{{ r.intervention_model_id or '' }}</span></td></tr>
        {% if r.circuit_diff and r.circuit_diff.dictionary_id %}<tr><th>dictionary</th><td>{{ r.circuit_diff.dictionary_id }}</td></tr>{% endif %}
      </table>
      {% if stats %}
      <h3>Circuit statistics</h3>
      <table>{% for k, v in stats %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}</table>
      {% endif %}
    </div>
  </div>
  <h3>Decisions</h3>
  <table>
    <tr><th>id</th><th>hypothesis</th><th>decision</th><th class="num">p / e</th><th class="num">level</th><th class="num">effect [CI]</th><th class="num">n</th></tr>
    {% for h in hyps %}
    <tr><td><a href="#hyp-{{ loop.index }}">{{ h.hypothesis.id }}</a></td><td>{{ h.hypothesis.description }}</td>
        <td><span class="badge {{ h.badge_class }}">{{ h.badge }}</span></td>
        <td class="num">{{ h.stat }}</td><td class="num">{{ h.level }}</td><td class="num">{{ h.effect }}</td><td class="num">{{ h.n }}</td></tr>
    {% endfor %}
  </table>
</section>


<section class="card" id="hypotheses">
  <h2>Hypotheses</h2>
  <p class="meta">Each hypothesis with its provenance: pattern → features (with interpretations) → tests → evidence → decision.</p>
</section>
{% for h in hyps %}
<section class="card hyp {{ h.css }}" id="hyp-{{ loop.index }}">
  <h2>{{ h.hypothesis.id }}: {{ h.hypothesis.description }} <span class="badge {{ h.badge_class }}">{{ h.badge }}</span></h2>
  <div class="meta">type <code>{{ h.hypothesis.hypothesis_type }}</code> · metric <code>{{ h.hypothesis.metric }}</code>
    · expected direction <b>{{ h.hypothesis.direction }}</b>
    {% if h.hypothesis.families %}· families {{ h.hypothesis.families|join(', ') }}{% endif %}
    {% if h.hypothesis.provenance %}· proposed by {{ h.hypothesis.provenance|join(', ') }}{% endif %}</div>
  <ol class="prov">
    <li><b>Pattern</b>:
      {% if h.patterns %}{% for p in h.patterns %}<div>{{ p.id }} <code>{{ p.pattern_type }}</code> — {{ p.description }}
        <span class="meta">(detector {{ p.detector or '?' }}, strength {{ '%.2f'|format(p.strength) }})</span></div>{% endfor %}
      {% else %}<span class="meta">none recorded</span>{% endif %}</li>
    <li><b>Features</b>:
      {% if h.features %}
      <table><tr><th>feature</th><th class="num">mean Δ</th><th>interpretation</th><th>top context</th></tr>
      {% for f in h.features %}
        <tr><td class="nowrap">L{{ f.ref.layer }} #{{ f.ref.feature }}</td>
            <td class="num {{ f.css }}">{{ f.delta }}</td>
            <td>{% for i in f.interps %}<div>{{ i.description or '—' }} <span class="meta">({{ i.source or '?' }}{% if i.promoted_tokens %}; promotes {{ i.promoted_tokens|join(' ') }}{% endif %})</span></div>{% else %}<span class="meta">no interpretation</span>{% endfor %}</td>
            <td>{% if f.context %}<pre class="text">{{ f.context }}</pre>{% endif %}</td></tr>
      {% endfor %}</table>
      {% else %}<span class="meta">none recorded</span>{% endif %}</li>
    <li><b>Tests</b>:
      {% if h.result %}{{ h.result.test_name }} on {{ h.result.n }} paired prompts{% if h.result.stopped_early %} (stopped early){% endif %},
        metric <code>{{ h.hypothesis.metric }}</code>{% else %}<span class="meta">not tested (query budget or cap reached)</span>{% endif %}</li>
    <li><b>Evidence</b>:
      {% if h.result %}{{ h.stat }}; effect {{ h.effect_name }} {{ h.effect }}{% if h.causal %}; causal share {{ h.causal }}{% endif %}
      {% else %}<span class="meta">—</span>{% endif %}</li>
    <li><b>Decision</b>:
      {% if h.result %}<span class="badge {{ h.badge_class }}">{{ h.badge }}</span>
        {% if h.result.fdr_procedure %}by {{ h.result.fdr_procedure }}{% endif %}{% if h.result.fdr_index %} (decision #{{ h.result.fdr_index }}){% endif %}
        at level {{ h.level }}{% if h.result.reason %} &mdash; reason: {{ h.result.reason }}{% endif %}{% else %}<span class="meta">no decision</span>{% endif %}</li>
  </ol>
  {% if h.examples %}
  <h3>Example prompts and outputs</h3>
  <table class="ex">
    <tr><th>prompt</th><th>base output</th><th>intervention output</th><th class="num">base</th><th class="num">interv.</th></tr>
    {% for o in h.examples %}
    <tr><td><pre class="text">{{ o.prompt }}</pre></td>
        <td><pre class="text">{{ o.base_output if o.base_output is not none else '—' }}</pre></td>
        <td><pre class="text">{{ o.intervention_output if o.intervention_output is not none else '—' }}</pre></td>
        <td class="num">{{ '%.3g'|format(o.base_value) }}</td><td class="num">{{ '%.3g'|format(o.intervention_value) }}</td></tr>
    {% endfor %}
  </table>
  {% endif %}
</section>
{% endfor %}

{% if r.dropped_hypotheses or r.unregistered_pattern_types %}
<section class="card" id="dropped">
  <h2>Hypotheses not tested</h2>
  <p class="meta">Formed from the patterns but left out before validation: under the priority floor or over the cap
    (max_hypotheses_to_test). None of them spent any α.</p>
  <table><tr><th>hypothesis</th><th>reason</th><th class="num">priority</th><th>proposed by</th></tr>
  {% for d in r.dropped_hypotheses %}
    <tr><td><code>{{ d.hypothesis.id }}</code><div class="meta">{{ d.hypothesis.description }}</div></td>
        <td>{{ 'below floor' if d.reason == 'below_floor' else 'over cap' }} {{ '%g'|format(d.limit) }}<div class="meta">{{ d.detail }}</div></td>
        <td class="num">{{ '%.3f'|format(d.hypothesis.priority) }}</td><td>{{ d.hypothesis.provenance|join(', ') }}</td></tr>
  {% endfor %}</table>
  {% if r.unregistered_pattern_types %}<p class="meta">Pattern types no plugin declares (md_pattern_types; generic,
    down-weighted reading only): {{ r.unregistered_pattern_types|join(', ') }}</p>{% endif %}
</section>
{% endif %}

<section class="card" id="fdr">
  <h2>Online FDR decisions</h2>
  {% if r.fdr_trace %}
  <table>
    <tr><th class="num">#</th><th>hypothesis</th><th class="num">value</th><th class="num">test level</th><th>decision</th></tr>
    {% for d in r.fdr_trace %}
    <tr><td class="num">{{ d.index }}</td><td>{{ d.hypothesis_id }}</td><td class="num">{{ d.value_kind }}={{ '%.3g'|format(d.value) }}</td>
        <td class="num">{{ '%.3g'|format(d.level) }}</td>
        <td>{% if d.rejected %}<span class="badge ok">discovery</span>{% else %}<span class="badge no">not rejected</span>{% endif %}</td></tr>
    {% endfor %}
  </table>
  {% else %}<p class="meta">No online FDR decisions recorded.</p>{% endif %}
</section>

<section class="card" id="bandit">
  <h2>Exploration rounds</h2>
  {% if r.bandit_rounds %}
  <details><summary>{{ r.bandit_rounds|length }} rounds, {{ bandit_queries }} queries</summary>
  <table>
    <tr><th class="num">round</th><th>pulled</th><th>rewards</th><th class="num">queries</th></tr>
    {% for b in r.bandit_rounds %}
    <tr><td class="num">{{ b.round }}</td><td>{{ b.pulled|join(', ') }}</td>
        <td>{% for k, v in b.rewards.items() %}{{ k }}: {{ '%.3g'|format(v) }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
        <td class="num">{{ b.queries }}</td></tr>
    {% endfor %}
  </table></details>
  {% else %}<p class="meta">No exploration rounds recorded.</p>{% endif %}
</section>

{% if changes %}
<section class="card" id="changes">
  <h2>Systematic circuit changes</h2>
  <table>
    <tr><th>feature</th><th class="num">mean Δ</th><th class="num">prompts</th><th class="num">p (exploratory)</th><th>interpretation</th></tr>
    {% for c in changes %}
    <tr><td class="nowrap">L{{ c.layer }} #{{ c.feature }}</td><td class="num {{ c.css }}">{{ c.delta }}</td><td class="num">{{ c.n }}</td>
        <td class="num">{{ c.p }}</td><td>{{ c.label }}</td></tr>
    {% endfor %}
  </table>
</section>
{% endif %}

{% if exports %}
<section class="card" id="exports">
  <h2>Attribution graph exports (circuit-tracer viewer)</h2>
  <p class="meta">Serve the folder with circuit-tracer's local viewer:
    <code>python -c "from circuit_tracer.frontend.local_server import serve; serve(data_dir='{{ export_dir }}'); input()"</code>
    and open <code>http://localhost:8032/index.html</code>.</p>
  <ul>{% for e in exports %}<li><a href="{{ e }}">{{ e }}</a></li>{% endfor %}</ul>
</section>
{% endif %}
<section class="card" id="config">
  <h2>Configuration</h2>
  <details><summary>{{ config_rows|length }} settings{% if r.base_model_id %} and model identities{% endif %}</summary>
  <table>
    <tr><th>base model</th><td>{{ base_name }} <code>{{ r.base_model_id or '?' }}</code></td></tr>
    <tr><th>intervention model</th><td>{{ intervention_name }} <code>{{ r.intervention_model_id or '?' }}</code></td></tr>
  </table>
  {% if config_rows %}
  <table>{% for k, v in config_rows %}<tr><th>{{ k }}</th><td><code>{{ v }}</code></td></tr>{% endfor %}</table>
  {% else %}<p class="meta">No configuration recorded.</p>{% endif %}
  </details>
</section>
<footer>md-framework report · schema version {{ r.schema_version }} · rendered {{ now }} · self-contained: no scripts, no network</footer>
</main>
</body>
</html>
"""


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            rows.append((name, text if len(text) <= 120 else text[:117] + "..."))
    return rows


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _hyp_view(report: AnalysisReport, h: Hypothesis, result: ValidationResult | None,
              deltas: Mapping[str, float]) -> dict[str, Any]:
    patterns = {p.id: p for p in report.patterns}
    view: dict[str, Any] = {"hypothesis": h, "result": result,
                            "patterns": [patterns[p] for p in h.source_patterns if p in patterns]}
    features = []
    for ref in h.source_features:
        interps: list[FeatureInterpretation] = report.interpretations.get(ref.key, [])
        delta = deltas.get(ref.key)
        context = next((c.text for i in interps for c in i.top_contexts), "")
        features.append({"ref": ref, "interps": interps, "context": context,
                         "delta": "—" if delta is None else f"{delta:+.2f}",
                         "css": "" if delta is None else "up" if delta > 0 else "down"})
    view["features"] = features
    if result is None:
        view.update(badge="not tested", badge_class="untested", css="untested", stat="—", level="—",
                    effect="—", effect_name="", n="—", examples=[], causal=None)
        return view
    es = result.effect_size
    effect = "—"
    if es is not None:
        effect = f"{es.estimate:+.3g}"
        if es.ci_low is not None and es.ci_high is not None:
            effect += f" [{es.ci_low:.3g}, {es.ci_high:.3g}]"
    causal = None
    if result.causal_share is not None:
        cs = result.causal_share
        causal = f"{cs.estimate:.2f}" + (f" [{cs.ci_low:.2f}, {cs.ci_high:.2f}]"
                                         if cs.ci_low is not None and cs.ci_high is not None else "")
        ctrl = result.causal_control_share
        if ctrl is not None:
            causal += f" (random features of the same layers: {ctrl.estimate:.2f})"
    view.update(
        badge="validated" if result.decision else "not validated",
        badge_class="ok" if result.decision else "no",
        css="validated" if result.decision else "",
        stat=(f"p = {result.p_value:.3g}" if result.p_value is not None else
              f"e = {result.e_value:.3g}" if result.e_value is not None else "—"),
        level="—" if result.test_level is None else f"{result.test_level:.3g}",
        effect=effect, effect_name=es.name if es else "", n=result.n,
        examples=result.examples[:8], causal=causal,
    )
    return view


def _source(report: AnalysisReport, role: str) -> str:
    """A model named by its configured source (what a reader recognises); the hash is
    shown beside it, smaller."""
    value = (report.config or {}).get(f"{role}_model")
    if isinstance(value, Mapping):
        value = value.get("source")
    model_id = report.base_model_id if role == "base" else report.intervention_model_id
    return str(value) if value else (model_id or "?")


def _effect_text(result: ValidationResult) -> str:
    es = result.effect_size
    if es is None:
        return "—"
    text = f"{es.name} {es.estimate:+.2f}"
    if es.ci_low is not None and es.ci_high is not None:
        text += f" [{es.ci_low:+.2f}, {es.ci_high:+.2f}]"
    return text


def _stat_text(result: ValidationResult) -> str:
    level = f" (level {result.test_level:.2g})" if result.test_level is not None else ""
    if result.p_value is not None:
        return f"p = {result.p_value:.2g}{level}"
    if result.e_value is not None:
        return f"e = {result.e_value:.3g}{level}"
    return "no test"


def _reason(result: ValidationResult, min_effect: Any) -> str:
    """Why a hypothesis was not validated: the result's own ``reason`` when it has one,
    else what its numbers and notes say."""
    given = getattr(result, "reason", None)
    parts = [str(given)] if given else []
    if not given:
        level, p = result.test_level, result.p_value
        es = result.effect_size
        direction = result.hypothesis.direction
        wrong_way = es is not None and ((direction == "increase" and es.estimate <= 0)
                                        or (direction == "decrease" and es.estimate >= 0))
        if wrong_way:
            parts.append(f"the effect went the other way ({es.estimate:+.2f}; predicted {direction})")
        elif p is not None and level is not None and p <= level:
            parts.append(f"p = {p:.2g} is under its level {level:.2g}, but the effect is below the"
                         f" smallest effect worth claiming ({min_effect}), so it was tested as p = 1")
        elif p is not None and level is not None:
            parts.append(f"the evidence was too weak: p = {p:.2g} above its level {level:.2g}")
        elif result.n == 0:
            parts.append("no test prompts could be measured")
    parts += [n for n in result.notes if n]
    return "; ".join(parts) or "not rejected by the online FDR procedure"


def _examples(result: ValidationResult, k: int = 3) -> list[Any]:
    """Up to ``k`` examples, the largest differences first, preferring ones with answers."""
    with_text = [o for o in result.examples if o.base_output is not None or o.intervention_output is not None]
    rest = [o for o in result.examples if o not in with_text]
    return (with_text + rest)[:k]


def _summaries(report: AnalysisReport) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stats = (report.config or {}).get("statistics") or {}
    min_effect = stats.get("min_effect_size", "the configured minimum") if isinstance(stats, Mapping) else "?"
    found, rejected = [], []
    for index, r in enumerate(report.validation_results, start=1):
        h = r.hypothesis
        causal = None
        if r.causal_share is not None:
            causal = f"{r.causal_share.estimate:.2f}"
        view = {"claim": h.description or h.id, "kind": str(h.hypothesis_type).replace("_", " "),
                "families": ", ".join(h.families), "metric": h.metric, "anchor": index,
                "effect": _effect_text(r), "stat": _stat_text(r), "n": r.n,
                "test": r.test_name + (" (stopped early)" if r.stopped_early else ""),
                "causal": causal}
        if r.decision:
            view["examples"] = _examples(r)
            found.append(view)
        else:
            view["reason"] = _reason(r, min_effect)
            rejected.append(view)
    return found, rejected


def render_html(
    report: AnalysisReport,
    plots: Mapping[str, bytes] | None = None,
    plot_files: Mapping[str, str] | None = None,
    exports: list[str] | None = None,
    export_dir: str = "circuit-tracer",
) -> str:
    """The dashboard as one HTML string. ``plots`` maps plot names to PNG bytes (embedded),
    ``plot_files`` to their relative PNG paths (linked), ``exports`` lists relative paths of
    circuit-tracer graph files."""
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(_TEMPLATE)
    plots = plots or {}
    plot_files = plot_files or {}
    order = list(PLOT_TITLES) + [n for n in plots if n not in PLOT_TITLES]
    plot_views = []
    for name in order:
        if name in plots:
            if name.startswith("graph_"):
                title, caption = (f"Prompt graph: {name[len('graph_'):]}",
                                  "One prompt's base and intervention attribution graphs overlaid: node colour = "
                                  "activation change, edges new / removed / reweighted. Open both graphs in "
                                  "circuit-tracer's viewer from the exports below.")
            else:
                title, caption = PLOT_TITLES.get(name, (name.replace("_", " ").capitalize(), ""))
            plot_views.append({"name": name, "title": title, "caption": caption,
                               "uri": png_data_uri(plots[name]), "file": plot_files.get(name)})
    deltas: dict[str, float] = {}
    changes = []
    if report.circuit_diff is not None:
        for c in sorted(report.circuit_diff.systematic_changes, key=lambda c: -abs(c.mean_delta)):
            deltas[c.feature.key] = c.mean_delta
            interps = report.interpretations.get(c.feature.key, [])
            changes.append({"layer": c.feature.layer, "feature": c.feature.feature,
                            "delta": f"{c.mean_delta:+.3g}", "css": "up" if c.mean_delta > 0 else "down",
                            "n": c.n_prompts, "p": "—" if c.p_value is None else f"{c.p_value:.2g}",
                            "label": next((i.description for i in interps if i.description), "")})
    results = {r.hypothesis.id: r for r in report.validation_results}
    hyps = [_hyp_view(report, r.hypothesis, r, deltas) for r in report.validation_results]
    hyps += [_hyp_view(report, h, None, deltas) for h in report.hypotheses if h.id not in results]
    findings, rejected = _summaries(report)
    tested = {r.hypothesis.id for r in report.validation_results}
    stats_cfg = (report.config or {}).get("statistics") or {}
    fdr_text = ""
    if isinstance(stats_cfg, Mapping) and stats_cfg.get("procedure"):
        fdr_text = f"online FDR: {stats_cfg['procedure']} at α = {stats_cfg.get('alpha', '?')}"
    universe = (report.config or {}).get("universe") or {}
    confidence = next((f"{r.effect_size.confidence:.0%}" for r in report.validation_results
                       if r.effect_size is not None), "95%")
    return template.render(
        base_name=_source(report, "base"), intervention_name=_source(report, "intervention"),
        findings=findings, rejected=rejected, fdr_text=fdr_text, confidence=confidence,
        universe_note=universe.get("default_used") if isinstance(universe, Mapping) else None,
        untested=[h.description or h.id for h in report.hypotheses if h.id not in tested],
        r=report, csp=CSP, n_validated=len(report.validated()), plots=plot_views, hyps=hyps,
        stats=[(k, _fmt(v)) for k, v in report.circuit_statistics.items()],
        config_rows=_flatten(report.config), changes=changes[:60], exports=exports or [],
        export_dir=export_dir, bandit_queries=sum(b.queries for b in report.bandit_rounds),
        now=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_html(path: str | os.PathLike[str], html_text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_text, encoding="utf-8")
    return path
