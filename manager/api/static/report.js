// The study report: draws the plots from /api/v1/studies/{name}/plots and redraws them
// (and the trials table) on every `progress` event of the study's event stream.
"use strict";

(function () {
  const section = document.getElementById("study");
  if (!section) return;
  const config = { responsive: true, displaylogo: false, displayModeBar: "hover" };
  const margin = { l: 60, r: 20, t: 40, b: 50 };

  function layout(title, xaxis, yaxis, extra) {
    // Title on the left, so the mode bar (top right) never covers it.
    return Object.assign({ title: { text: title, font: { size: 14 }, x: 0.01, xanchor: "left" },
      margin: margin, xaxis: { title: { text: xaxis }, automargin: true },
      yaxis: { title: { text: yaxis }, automargin: true },
      legend: { orientation: "h", y: -0.2 } }, extra || {});
  }

  function drawScores(data) {
    const metric = data.objective ? data.objective.metric : "objective";
    const ok = data.scores.filter((p) => p.status === "succeeded");
    const failed = data.scores.filter((p) => p.status === "failed");
    const traces = [
      { name: "trial", mode: "markers", type: "scatter", x: ok.map((p) => p.number),
        y: ok.map((p) => p.objective_value), marker: { color: "#2563eb", size: 8 } },
      { name: "best so far", mode: "lines", type: "scatter", line: { shape: "hv", color: "#059669" },
        x: data.scores.map((p) => p.number), y: data.scores.map((p) => p.best_so_far) },
    ];
    if (failed.length) {
      const low = Math.min(0, ...ok.map((p) => p.objective_value || 0));
      traces.push({ name: "failed", mode: "markers", type: "scatter", x: failed.map((p) => p.number),
        y: failed.map(() => low), text: failed.map((p) => p.reason || "failed"),
        marker: { color: "#dc2626", symbol: "x", size: 9 } });
    }
    Plotly.react("plot-scores", traces, layout("Objective by trial", "trial number", metric), config);
  }

  function drawPareto(data) {
    const div = document.getElementById("plot-pareto");
    if (!data.pareto_front) { div.hidden = true; return; }
    div.hidden = false;
    const front = new Set(data.pareto_front);
    const pts = data.scores.filter((p) => p.objective_values && p.objective_values.length >= 2);
    const on = pts.filter((p) => front.has(p.number)).sort((a, b) => a.objective_values[0] - b.objective_values[0]);
    const traces = [
      { name: "trials", mode: "markers", type: "scatter", x: pts.map((p) => p.objective_values[0]),
        y: pts.map((p) => p.objective_values[1]), text: pts.map((p) => "#" + p.number),
        marker: { color: "#9ca3af", size: 7 } },
      { name: "Pareto front", mode: "lines+markers", type: "scatter", x: on.map((p) => p.objective_values[0]),
        y: on.map((p) => p.objective_values[1]), text: on.map((p) => "#" + p.number),
        marker: { color: "#d97706", size: 9 } },
    ];
    const labels = (data.objective && data.objective.labels) || [];
    Plotly.react(div, traces, layout("Pareto front", labels[0] || "objective 1",
      labels[1] || "objective 2"), config);
  }

  function drawLevels(data) {
    const traces = data.top_trials.map((t) => {
      const levels = t.levels.slice().sort((a, b) => a.concurrency - b.concurrency);
      return { name: "#" + t.number, mode: "lines+markers+text", type: "scatter",
        x: levels.map((l) => l.e2e_latency_ms_p95), y: levels.map((l) => l.output_tokens_per_s),
        text: levels.map((l) => "c=" + l.concurrency), textposition: "top center" };
    });
    Plotly.react("plot-levels", traces, layout("Top trials: throughput vs latency per concurrency",
      "e2e latency p95 (ms)", "output tokens/s"), config);
  }

  function drawEffects(data) {
    const effects = data.param_effects;
    const ranked = data.importance_method !== "none";
    const traces = ranked
      ? [{ type: "bar", orientation: "h", y: effects.map((e) => e.param).reverse(),
           x: effects.map((e) => e.importance || 0).reverse(), marker: { color: "#7c3aed" } }]
      : effects.map((e) => ({ type: "bar", name: e.param, x: e.values.map((v) => e.param + "=" + v),
           y: e.mean_scores }));
    const title = ranked ? "Parameter importance (Optuna PED-ANOVA)" : "Mean objective per param value";
    Plotly.react("plot-effects", traces,
      layout(title, ranked ? "importance" : "", ranked ? "" : "mean objective", { showlegend: !ranked }),
      config);
  }

  async function refresh() {
    const response = await fetch(section.dataset.plotsUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("plots: HTTP " + response.status);
    const data = await response.json();
    drawScores(data); drawPareto(data); drawLevels(data); drawEffects(data);
    document.body.dataset.plotsReady = String(data.scores.length);
  }

  async function refreshTable() {
    const response = await fetch(section.dataset.tableUrl);
    if (response.ok) document.getElementById("trials").innerHTML = await response.text();
  }

  function showProgress(p) {
    const c = p.trial_counts;
    let text = c.total + " trials" + (p.planned_trials ? " (up to " + p.planned_trials + ")" : "") + ": " +
      c.succeeded + " succeeded, " + c.failed + " failed, " + c.running + " running";
    if (p.best_score !== null) text += " · best score " + p.best_score.toPrecision(4) + " (trial #" + p.best_trial_number + ")";
    document.getElementById("progress").textContent = text;
    const status = document.getElementById("study-status");
    status.textContent = p.status; status.className = "status " + p.status;
  }

  refresh().then(() => {
    if (section.dataset.status !== "running" || !window.EventSource) return;
    const events = new EventSource(section.dataset.eventsUrl);
    events.addEventListener("progress", (event) => {
      const progress = JSON.parse(event.data);
      showProgress(progress);
      refresh(); refreshTable();
      if (progress.status !== "running") events.close();
    });
  }).catch((error) => console.error(error));
})();
