// cbench view: renders a run's overview and its pair pages from the data files beside this
// script. No network, no libraries: plots are drawn as inline SVG.
"use strict";

var cbenchView = (function () {
  // Errors are shown on the page (and marked for tests), never swallowed.
  window.addEventListener("error", function (e) {
    document.body.setAttribute("data-error", String(e.message || e));
  });

  function esc(text) {
    return String(text == null ? "" : text)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  function num(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }
  function money(n) { return n == null ? "–" : "$" + Number(n).toFixed(n < 1 ? 4 : 2); }
  function secs(s) {
    if (s == null) return "–";
    s = Number(s);
    if (s >= 3600) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    if (s >= 60) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
    return s.toFixed(s < 10 ? 2 : 1) + "s";
  }
  function pct(r) { return r == null ? "–" : (r * 100).toFixed(1) + "%"; }
  function rate(r) { return r ? r.count + "/" + r.of + " (" + pct(r.rate) + ")" : "–"; }
  function agentName(id) { var m = /^agent(\d+)$/.exec(id); return m ? "Agent " + m[1] : id; }
  var MODES = [
    ["partner_state_integration", "partner-state integration"], ["unanswered_question", "unanswered question"],
    ["broken_promise", "broken promise"], ["unverifiable_promise", "unverifiable promise"], ["silent_pair", "silent pair"],
  ];
  function modeName(m) { var f = MODES.filter(function (x) { return x[0] === m; })[0]; return f ? f[1] : m; }
  function badge(verdict) { return '<span class="badge ' + esc(verdict) + '">' + esc(verdict) + "</span>"; }

  // ---- plots -------------------------------------------------------------------------------
  // Horizontal bars: items [{label, value, text, cls}].
  function barChart(title, items, opts) {
    opts = opts || {};
    var width = 520, labelW = opts.labelWidth || 170, rowH = 22, pad = 6;
    var height = items.length * rowH + pad * 2;
    var max = opts.max != null ? opts.max : Math.max.apply(null, items.map(function (i) { return i.value; }).concat([0]));
    var plotW = width - labelW - (opts.textWidth || 90);
    var bars = items.map(function (it, k) {
      var y = pad + k * rowH;
      var w = max > 0 ? Math.max(0, (it.value / max) * plotW) : 0;
      return '<text x="' + (labelW - 6) + '" y="' + (y + 15) + '" text-anchor="end">' + esc(it.label) + "</text>" +
        '<rect class="bar ' + esc(it.cls || "") + '" x="' + labelW + '" y="' + (y + 3) + '" width="' + w.toFixed(1) + '" height="' + (rowH - 7) + '"><title>' + esc(it.label + ": " + it.text) + "</title></rect>" +
        '<text x="' + (labelW + w + 5) + '" y="' + (y + 15) + '">' + esc(it.text) + "</text>";
    }).join("");
    if (!items.length) bars = '<text x="10" y="20">nothing to plot</text>';
    return '<div class="plot"><h3>' + esc(title) + '</h3><svg viewBox="0 0 ' + width + " " + Math.max(height, 30) +
      '" role="img" aria-label="' + esc(title) + '">' +
      '<line class="axis" x1="' + labelW + '" y1="0" x2="' + labelW + '" y2="' + height + '"/>' + bars + "</svg></div>";
  }

  // Histogram of values into up to `bins` equal-width bins.
  function histogram(title, values, fmt, bins) {
    values = values.filter(function (v) { return v != null && isFinite(v); });
    if (!values.length) return barChart(title, []);
    // About √n bins (at most 10): a few pairs are not spread over empty bins.
    bins = bins || Math.min(10, Math.max(3, Math.ceil(Math.sqrt(values.length))));
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (hi === lo) { return barChart(title, [{ label: fmt(lo), value: values.length, text: values.length + "" }]); }
    var step = (hi - lo) / bins, counts = new Array(bins).fill(0);
    values.forEach(function (v) { counts[Math.min(bins - 1, Math.floor((v - lo) / step))] += 1; });
    return barChart(title, counts.map(function (c, k) {
      return { label: fmt(lo + k * step) + " – " + fmt(lo + (k + 1) * step), value: c, text: String(c), cls: "info" };
    }));
  }

  // ---- overview ----------------------------------------------------------------------------
  function header(run) {
    var c = run.config || {}, a = c.agent || {}, s = run.summary || {}, r = run.report || {};
    var budgets = [
      "max steps " + (c.max_steps == null ? "–" : c.max_steps),
      "command timeout " + secs(c.command_timeout_s),
      "cost/agent " + (c.max_cost_usd == null ? "unlimited" : money(c.max_cost_usd)),
      "tokens/agent " + (c.max_tokens == null ? "unlimited" : num(c.max_tokens)),
      "run cost " + (c.max_run_cost_usd == null ? "unlimited" : money(c.max_run_cost_usd)),
    ].join(" · ");
    // The team setting: its lead and the mechanisms an ablation switched off.
    var tf = c.team_features;
    var teamOff = tf ? [["task_list", "--team-no-task-list"], ["scratchpad", "--team-no-scratchpad"], ["mcp", "--team-no-mcp"],
      ["auto_refresh", "--team-no-auto-refresh"], ["protocol", "--team-no-protocol"]]
      .filter(function (x) { return tf[x[0]] === false; }).map(function (x) { return x[1]; }) : [];
    var setting = c.setting + (tf ? " (lead agent" + (c.team_lead || 1) + "; off: " + (teamOff.length ? teamOff.join(" ") : "none") + ")" : "");
    var fields = [
      ["setting", setting], ["model", c.model],
      ["plugin", c.team && c.team.length ? "team " + c.team.map(function (m, k) { return "agent" + (k + 1) + " = " + m.name + " " + m.version + " (sha256 " + String(m.sha256 || "").slice(0, 12) + "…)"; }).join(", ") : (a.name || "?") + " " + (a.version || "")],
      ["plugin sha256", '<span class="mono" title="' + esc(a.sha256) + '">' + esc((a.sha256 || "").slice(0, 16)) + "…</span>"],
      ["WIT", a.wit_version], ["backend", (c.backend || "") + (c.isolation ? " — " + c.isolation : "")],
      ["merge policy", c.merge_policy], ["budgets", budgets],
      ["sampling", "temperature " + (c.temperature == null ? "provider default" : c.temperature) +
        " · max output tokens " + (c.max_output_tokens == null ? "provider default" : num(c.max_output_tokens)) +
        " · API base " + (c.api_base || "provider default")],
      ["created", c.created_at],
    ];
    var grid = fields.map(function (f) {
      var value = f[0] === "plugin sha256" ? f[1] : esc(f[1] == null ? "–" : f[1]);
      return "<div><span>" + esc(f[0]) + "</span>" + value + "</div>";
    }).join("");
    var conflicts = r.naive_merge_conflicts ? r.naive_merge_conflicts.count : 0;
    // Without summary.json (a run copied in part), the totals are the rows'.
    var sum = function (f) { return run.pairs.reduce(function (t, p) { return t + (f(p) || 0); }, 0); };
    var tokens = s.token_usage ? s.token_usage.total_tokens : sum(function (p) { return p.tokens; });
    var cost = s.token_usage ? s.cost_usd : sum(function (p) { return p.cost_usd; });
    var wall = s.run_duration_s || s.duration_s || null;
    var totals = [
      [num(r.pairs), "pairs"], [rate(r.overall), "overall success"], [rate(r.individual), "individual success"],
      [num(conflicts), "merge conflicts"], [num(r.infra_errors), "infrastructure errors"],
      [num(tokens), "tokens"], [money(cost), "cost"], [secs(wall), "wall"],
      [num(s.llm_retries || 0), "LLM requests retried"],
    ].concat(s.redone_attempts ? [[num(s.redone_attempts), "attempts redone after infrastructure errors (counted in cost)"]] : []).map(function (t) { return '<div class="total"><b>' + esc(t[0]) + "</b><span>" + esc(t[1]) + "</span></div>"; }).join("");
    return "<h1>" + esc(c.name || r.run) + '</h1><div class="muted">cbench report · ' + esc(c.cbench_version || "") + "</div>" +
      '<div class="header-grid">' + grid + '</div><div class="totals">' + totals + "</div>";
  }

  function plots(run) {
    var rows = run.pairs, out = [];
    var repos = {};
    rows.forEach(function (p) {
      if (p.verdict !== "success" && p.verdict !== "failed") return;
      var e = repos[p.repo] || (repos[p.repo] = { ok: 0, n: 0 });
      e.n += 1; if (p.verdict === "success") e.ok += 1;
    });
    out.push(barChart("Success per repository", Object.keys(repos).sort().map(function (k) {
      var e = repos[k];
      return { label: k, value: e.ok / e.n, text: e.ok + "/" + e.n + " (" + pct(e.ok / e.n) + ")", cls: "ok" };
    }), { max: 1 }));
    var outcomes = [["clean", "ok"], ["union-rescued", "info"], ["lead-only", "warn"], ["conflict", "bad"], ["apply-failure", "bad"], ["nothing to merge", "warn"]];
    out.push(barChart("Merge outcomes", outcomes.map(function (o) {
      var n = rows.filter(function (p) { return p.merge_outcome === o[0]; }).length;
      return { label: o[0], value: n, text: String(n), cls: o[1] };
    })));
    var costs = rows.map(function (p) { return p.cost_usd; }).filter(function (c) { return c != null; });
    if (costs.some(function (c) { return c > 0; })) {
      out.push(histogram("Cost per pair (USD)", costs, function (v) { return "$" + v.toFixed(3); }));
    }
    out.push(histogram("Tokens per pair", rows.map(function (p) { return p.has_page ? p.tokens : null; }), function (v) { return num(Math.round(v)); }));
    var steps = [];
    rows.forEach(function (p) { p.agents.forEach(function (a) { steps.push(a.steps); }); });
    out.push(histogram("Steps per agent (model calls)", steps, function (v) { return String(Math.round(v)); }));
    out.push(histogram("Agents' time per pair (grading not included)", rows.map(function (p) { return p.wall_s; }), secs));
    var co = run.report && run.report.coordination;
    if (co && co.pairs) {
      out.push(barChart("Coordination failure modes (" + co.pairs + " coop pair" + (co.pairs === 1 ? "" : "s") + ", cbench analyze)", MODES.map(function (m) {
        var n = (co.modes || {})[m[0]] || 0;
        return { label: m[1], value: n, text: n + "/" + co.pairs, cls: "bad" };
      }), { max: co.pairs }));
      if (co.judge) {
        out.push(barChart("Failure modes named by the judge (" + co.judge.models.join(", ") + ", " + co.judge.pairs + " pairs, cost " + money(co.judge.cost_usd) + ")", MODES.map(function (m) {
          var n = (co.judge.modes || {})[m[0]] || 0;
          return { label: m[1], value: n, text: n + "/" + co.judge.pairs, cls: "warn" };
        }), { max: co.judge.pairs }));
      }
    }
    var team = run.report && run.report.team;
    // With the task list off there is no list to chart.
    if (team && team.pairs && !(team.features && team.features.task_list === false)) {
      out.push(barChart("Team task list (" + plural(team.pairs, "team pair") + ")", [
        { label: "tasks done", value: team.tasks_done, text: team.tasks_done + "/" + team.tasks_total, cls: "ok" },
        { label: "unowned at end", value: team.unowned_at_end, text: team.unowned_at_end + "/" + team.tasks_total, cls: "warn" },
        { label: "claims by the lead", value: team.claims_by_lead, text: String(team.claims_by_lead), cls: "info" },
        { label: "claims by members", value: team.claims_by_members, text: String(team.claims_by_members), cls: "info" },
        { label: "requests answered", value: team.responses, text: team.responses + "/" + team.requests, cls: "info" },
      ], { max: Math.max(1, team.tasks_total, team.requests, team.claims_by_lead + team.claims_by_members) }));
    }
    var b = run.report && run.report.baseline;
    if (b) {
      out.push(barChart("Coordination deficit vs solo " + b.baseline + " (" + b.matched_pairs + " matched pairs)", [
        { label: "solo", value: b.solo_rate, text: pct(b.solo_rate), cls: "info" },
        { label: "coop", value: b.coop_rate, text: pct(b.coop_rate), cls: "ok" },
        { label: "deficit (1 − coop/solo)", value: Math.max(0, b.deficit || 0), text: b.deficit == null ? "–" :
          pct(b.deficit) + (b.ci95 ? " [" + pct(b.ci95[0]) + ", " + pct(b.ci95[1]) + "]" : ""), cls: "bad" },
      ], { max: 1 }));
    }
    return '<div class="plots">' + out.join("") + "</div>";
  }

  var COLUMNS = [
    ["key", "Pair"], ["verdict", "Verdict"], ["agents", "Agents alone"], ["merge_outcome", "Merge"], ["modes", "Coordination flags"],
    ["steps", "Steps (all agents)", true], ["tokens", "Tokens", true], ["cost_usd", "Cost", true], ["wall_s", "Agents' time", true],
    ["messages", "Msgs", true], ["status", "Agent status"], ["infra_error", "Infrastructure error"],
  ];

  function cell(p, col) {
    switch (col) {
      case "key":
        return p.has_page ? '<a href="pair.html?p=' + encodeURIComponent(p.id) + '">' + esc(p.key) + "</a>" : esc(p.key);
      case "verdict": return badge(p.verdict);
      case "agents": return p.agents.map(function (a) {
        var mark = a.success == null ? "·" : a.success ? '<span class="yes">✓</span>' : '<span class="no">✗</span>';
        return esc(agentName(a.id)) + " " + mark;
      }).join("<br>");
      case "merge_outcome": return esc(p.merge_outcome || "–") + (p.merge_strategy ? ' <span class="muted">(' + esc(p.merge_strategy) + ")</span>" : "");
      case "steps": return num(p.steps);
      case "tokens": return num(p.tokens);
      case "cost_usd": return money(p.cost_usd);
      case "wall_s": return secs(p.wall_s);
      case "messages": return num(p.messages);
      case "modes": return (p.modes || []).map(function (m) { return '<span class="flag">' + esc(m) + "</span>"; }).join("<br>");
      case "status": return p.agents.map(function (a) { return esc(a.status); }).join("<br>");
      case "infra_error": return p.infra_error ? '<span class="err">' + esc(p.infra_error) + "</span>" : "";
    }
    return "";
  }

  function sortValue(p, col) {
    if (col === "agents") return p.agents.filter(function (a) { return a.success; }).length;
    if (col === "status") return p.agents.map(function (a) { return a.status; }).join(",");
    if (col === "modes") return (p.modes || []).length;
    var v = p[col];
    return v == null ? "" : v;
  }

  function table(root, rows) {
    var state = { sort: "key", dir: 1, text: "", verdict: "" };
    var verdicts = ["", "success", "failed", "infra", "ungraded"];
    root.insertAdjacentHTML("beforeend",
      '<h2>Pairs</h2><div class="controls"><input id="filter" type="search" placeholder="filter: repo, task, features, status, error…">' +
      '<select id="verdict">' + verdicts.map(function (v) { return '<option value="' + v + '">' + (v || "all verdicts") + "</option>"; }).join("") +
      '</select><span id="count" class="muted"></span></div>' +
      '<table id="pairs"><thead><tr>' + COLUMNS.map(function (c) {
        return '<th data-col="' + c[0] + '"' + (c[2] ? ' class="num"' : "") + ">" + esc(c[1]) + "</th>";
      }).join("") + "</tr></thead><tbody></tbody></table>");
    var tbody = root.querySelector("#pairs tbody");
    function draw() {
      var text = state.text.toLowerCase();
      var shown = rows.filter(function (p) {
        if (state.verdict && p.verdict !== state.verdict) return false;
        if (!text) return true;
        var hay = [p.key, p.verdict, p.merge_outcome, p.infra_error].concat(p.agents.map(function (a) { return a.status; })).concat(p.modes || []).join(" ").toLowerCase();
        return hay.indexOf(text) >= 0;
      });
      shown.sort(function (a, b) {
        var x = sortValue(a, state.sort), y = sortValue(b, state.sort);
        return (x < y ? -1 : x > y ? 1 : 0) * state.dir;
      });
      tbody.innerHTML = shown.map(function (p) {
        return '<tr class="pair-row" data-verdict="' + esc(p.verdict) + '">' + COLUMNS.map(function (c) {
          return "<td" + (c[2] ? ' class="num"' : "") + ">" + cell(p, c[0]) + "</td>";
        }).join("") + "</tr>";
      }).join("");
      root.querySelector("#count").textContent = shown.length + " of " + rows.length + " pairs";
      root.querySelectorAll("th").forEach(function (th) {
        th.className = (th.dataset.col === state.sort ? (state.dir > 0 ? "sorted-asc" : "sorted-desc") : "") +
          (th.classList.contains("num") ? " num" : "");
      });
    }
    root.querySelectorAll("th").forEach(function (th) {
      th.addEventListener("click", function () {
        if (state.sort === th.dataset.col) state.dir = -state.dir; else { state.sort = th.dataset.col; state.dir = 1; }
        draw();
      });
    });
    root.querySelector("#filter").addEventListener("input", function (e) { state.text = e.target.value; draw(); });
    root.querySelector("#verdict").addEventListener("change", function (e) { state.verdict = e.target.value; draw(); });
    draw();
  }

  function overview(root, run) {
    if (!run) { root.innerHTML = '<p class="err">data/run.js is missing: regenerate with cbench view.</p>'; return; }
    document.title = "cbench · " + ((run.config && run.config.name) || "run");
    root.innerHTML = header(run) + "<h2>Plots</h2>" + plots(run);
    table(root, run.pairs);
    rendered();
  }

  // When the page finished drawing, for tests and the load-time benchmark.
  function rendered() {
    document.body.setAttribute("data-rendered-ms", String(Math.round(performance.now())));
  }

  // ---- pair page ---------------------------------------------------------------------------
  function diff(text) {
    if (!text) return '<p class="muted">empty</p>';
    return '<div class="diff mono">' + text.split("\n").map(function (line) {
      var cls = /^(diff --git|index |--- |\+\+\+ )/.test(line) ? "file" : line[0] === "+" ? "add" : line[0] === "-" ? "del" : line.slice(0, 2) === "@@" ? "hunk" : "";
      return '<span class="' + cls + '">' + (esc(line) || " ") + "</span>";
    }).join("") + "</div>";
  }

  // Where an agent's time went: waiting on the model, running commands, and the rest (the
  // plugin's own code and the host), drawn as one stacked bar.
  function timeSplit(a) {
    var wall = (Date.parse(a.end_time) - Date.parse(a.start_time)) / 1000;
    if (!(wall > 0)) return "";
    var sum = function (xs) { return xs.reduce(function (t, x) { return t + (Number(x.duration_ms) || 0); }, 0) / 1000; };
    var model = sum(a.calls || []), commands = sum(a.steps || []);
    var rest = Math.max(0, wall - model - commands);
    var parts = [["model", model, "#2563eb"], ["commands", commands, "#16a34a"], ["plugin and host", rest, "#9ca3af"]];
    var bar = parts.map(function (p) {
      return '<span style="display:inline-block;height:8px;width:' + (100 * p[1] / Math.max(wall, model + commands)).toFixed(1) +
        "%;background:" + p[2] + '" title="' + esc(p[0]) + '"></span>';
    }).join("");
    return '<div class="time-split">time: ' + parts.map(function (p) { return esc(p[0]) + " " + secs(p[1]); }).join(" · ") +
      '<div style="width:260px;background:#f3f4f6;line-height:0">' + bar + "</div></div>";
  }

  // The agent's steps as result.json counts them (its model calls).
  function stepsOf(row, agent) {
    var recorded = (row.agents || []).filter(function (r) { return r.id === agent.id; })[0];
    return recorded ? recorded.steps : (agent.calls || []).length;
  }

  function plural(n, one, many) { return num(n) + " " + (Number(n) === 1 ? one : (many || one + "s")); }

  function folded(text, cls) {
    text = text == null ? "" : String(text);
    var lines = text.split("\n").length;
    var pre = '<pre class="' + (cls || "") + '">' + esc(text) + "</pre>";
    if (lines <= 14 && text.length <= 1500) return pre;
    return "<details><summary>" + lines + " lines, " + num(text.length) + " chars — show</summary>" + pre + "</details>";
  }

  function argsText(args) {
    if (args == null) return "";
    if (typeof args === "object" && typeof args.command === "string") return args.command;
    if (typeof args === "object" && typeof args.content === "string") return (args.to ? "to " + args.to + ": " : "") + args.content;
    return JSON.stringify(args, null, 2);
  }

  function time(t) {
    var d = new Date(t);
    return isNaN(d) ? "" : d.toISOString().slice(11, 23);
  }

  function timeline(detail) {
    var agents = detail.agents.map(function (a) { return a.id; });
    var events = [];
    detail.agents.forEach(function (a, col) {
      // The model's replies, in the agent's column where they arrived (their text above the
      // action they led to; folded when long).
      (a.calls || []).forEach(function (c) {
        // A call's timestamp is when its reply arrived.
        var at = Date.parse(c.timestamp) || 0;
        // Raw text: folded() escapes it once. Arguments are JSON; a command shows as itself.
        var tools = (c.tool_calls || []).map(function (t) {
          var args = t.arguments;
          try { args = argsText(JSON.parse(args)); } catch (e) { /* not JSON: shown as sent */ }
          return t.name + " " + args;
        }).join("\n");
        var tokens = c.usage ? num(c.usage.input_tokens) + " in / " + num(c.usage.output_tokens) + " out" : "";
        // Within a column: reply k, then the actions it led to, then reply k + 1.
        events.push({ t: at, order: 0.5, col: col, rank: 2 * Number(c.index) + 1, html:
          '<div class="step reply" data-agent="' + esc(a.id) + '" style="grid-column:' + (col + 1) + '">' +
          '<div class="meta"><span><span class="action">model</span> · call ' + esc(Number(c.index) + 1) + ((c.retries || []).length ? " · " + plural(c.retries.length, "retry", "retries") : "") +
          "</span><span>" + esc(tokens) + " · " + esc(time(at)) + "</span></div>" +
          (c.content ? folded(c.content, "thought") : (tools ? "" : '<p class="muted">(no text)</p>')) +
          (tools ? folded(tools, "args") : "") +
          // Each failed attempt apart: why, how long it took, how long the host waited after it.
          ((c.retries || []).length ? '<p class="muted">' + c.retries.map(function (r) {
            return "attempt " + esc(r.attempt) + ": " + esc(r.reason) + " (" + esc(r.duration_ms || 0) + " ms, then waited " + esc(r.waited_ms) + " ms)";
          }).join("<br>") + "</p>" : "") +
          (c.truncated ? '<p class="err truncated">cut at the output-token cap (finish reason ' + esc(c.finish_reason) +
            "): an action the plugin could not parse may just be unfinished</p>" : "") +
          (c.error ? '<p class="err">' + esc(c.error) + "</p>" : "") + "</div>" });
      });
      a.steps.forEach(function (s, k) {
        events.push({ t: Date.parse(s.timestamp) || 0, order: 1, col: col,
          rank: s.after_call == null ? null : 2 * Number(s.after_call), html:
          '<div class="step" data-agent="' + esc(a.id) + '" style="grid-column:' + (col + 1) + '">' +
          '<div class="meta"><span><span class="action">' + esc(s.action) + "</span> · step " + (k + 1) + "</span><span>" + esc(time(s.timestamp)) + "</span></div>" +
          (argsText(s.args) ? folded(argsText(s.args), "args") : "") + folded(s.observation) + "</div>" });
      });
    });
    var flags = flaggedMessages(detail.analysis);
    (detail.conversation || []).forEach(function (m, i) {
      var why = flags[i] || [];
      // At the same millisecond: the reply that sent it, the message, then the send action.
      events.push({ t: Number(m.timestamp) || 0, order: 0.75, html:
        '<div class="message' + (why.length ? " flagged" : "") + '" id="m' + i + '" data-message="' + i + '"><div class="meta">m' + i + " · " + esc(agentName(m.from)) + " → " + esc(agentName(m.to)) + " · " + esc(time(Number(m.timestamp))) +
        "</div>" + esc(m.content) + (why.length ? '<div class="why">' + why.map(esc).join("<br>") + "</div>" : "") + "</div>" });
    });
    events.sort(function (a, b) {
      var sameColumn = a.col === b.col && a.rank != null && b.rank != null;
      return a.t - b.t || (sameColumn ? a.rank - b.rank : 0) || a.order - b.order;
    });
    return '<div class="timeline" style="grid-template-columns: repeat(' + Math.max(1, agents.length) + ', minmax(0, 1fr))">' +
      agents.map(function (id) { return '<div class="col-head">' + esc(agentName(id)) + "</div>"; }).join("") +
      events.map(function (e) { return e.html; }).join("") + "</div>";
  }

  // Per message index, why the analysis flagged it.
  function flaggedMessages(a) {
    var out = {};
    if (!a) return out;
    var add = function (i, why) { (out[i] = out[i] || []).push(why); };
    (a.questions || []).forEach(function (q) {
      if (q.answered_by == null) add(q.message, "unanswered question" + (q.read ? " (read)" : " (never read)") + ": " + q.text);
    });
    (a.claims || []).forEach(function (c) {
      if (c.verdict === "broken") add(c.message, "broken promise: " + c.evidence);
      else if (c.verdict === "unverifiable" && c.kind === "intends") add(c.message, "unverifiable promise: " + c.evidence);
    });
    return out;
  }

  function coordination(detail) {
    var a = detail.analysis;
    if (!a) return '<p class="muted">not graded</p>';
    if (!a.applicable) return '<p class="muted">not a coop pair: coordination does not apply</p>';
    var html = '<div class="coordination">';
    html += "<p>" + (a.modes.length ? "Flagged: " + a.modes.map(function (m) { return '<span class="flag">' + esc(modeName(m)) + "</span>"; }).join(" ") :
      '<span class="yes">nothing flagged</span>') + ' <span class="muted">(' + num(a.messages) + " messages; " +
      a.agents.map(function (x) { return esc(agentName(x.agent_id)) + " sent " + x.sent + ", read " + x.read; }).join(" · ") + ")</span></p><ul>";
    var i = a.integration;
    if (i) {
      html += "<li>The merged tree failed feature(s) " + esc(i.failing_features.join(", ")) + " though each patch passed alone" +
        (i.failing_tests.length ? ": " + i.failing_tests.map(esc).join(", ") : "") + ".";
      Object.keys(i.symbols_in_failures || {}).forEach(function (agent) {
        html += "<br>" + esc(agentName(agent)) + "'s changes named in the failures: " + i.symbols_in_failures[agent].map(esc).join(", ");
      });
      html += "</li>";
    }
    var flags = flaggedMessages(a);
    Object.keys(flags).forEach(function (k) {
      flags[k].forEach(function (why) { html += '<li><a href="#m' + k + '">m' + k + "</a>: " + esc(why) + "</li>"; });
    });
    (a.overlaps || []).forEach(function (o) {
      if (o.overlapping_hunks) html += "<li>" + esc(agentName(o.agents[0])) + " and " + esc(agentName(o.agents[1])) + " both changed " + esc(o.file) + " at the same place" + (o.functions.length ? " (in " + o.functions.map(esc).join(", ") + ")" : "") + ".</li>";
    });
    if ((a.modes || []).indexOf("silent_pair") >= 0) html += "<li>No agent sent a message.</li>";
    html += "</ul>";
    if (a.judge) {
      var j = a.judge;
      html += '<div class="judge"><b>Judge ' + esc(j.model) + "</b> (" + num(j.usage.input_tokens) + " in / " + num(j.usage.output_tokens) + " out tokens, " + money(j.cost_usd) + "): " +
        (j.error ? '<span class="err">' + esc(j.error) + "</span>" : (j.modes.length ? j.modes.map(function (m) { return '<span class="flag">' + esc(modeName(m)) + "</span>"; }).join(" ") : "no failure") +
          "<p>" + esc(j.explanation) + "</p>") + "</div>";
    }
    return html + "</div>";
  }

  function verdicts(detail) {
    var ev = detail.eval;
    if (!ev) return '<p class="muted">not graded</p>';
    // The failing tests the runs of one tree name, from their logs.
    var failingOf = function (grade) {
      var names = [];
      ((grade && grade.features) || []).forEach(function (f) {
        var log = String(f.log || "").split("/").pop();
        ((detail.failing || {})[log] || []).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
      });
      return names;
    };
    var rows = detail.agents.map(function (a) {
      var g = ev[a.id] || {};
      return [agentName(a.id) + " alone", g.success, g.tests_passed, g.tests_failed, g.error, failingOf(g)];
    });
    if (ev.merged) rows.push(["merged (" + (ev.merge_strategy || "?") + ")", ev.merged.success, ev.merged.tests_passed, ev.merged.tests_failed, ev.merged.error || (ev.merged.apply_failed || []).join(", "), failingOf(ev.merged)]);
    return '<table class="verdicts"><thead><tr><th>tree</th><th>verdict</th><th class="num">passed</th><th class="num">failed</th><th>error</th><th>failing tests</th></tr></thead><tbody>' +
      rows.map(function (r) {
        var names = r[5] || [];
        var shown = names.slice(0, 10).map(function (n) { return '<span class="mono">' + esc(n) + "</span>"; }).join("<br>") +
          (names.length > 10 ? '<br><span class="muted">and ' + (names.length - 10) + " more</span>" : "");
        return "<tr><td>" + esc(r[0]) + "</td><td>" + (r[1] == null ? "–" : r[1] ? '<span class="yes">✓ pass</span>' : '<span class="no">✗ fail</span>') +
          '</td><td class="num">' + num(r[2]) + '</td><td class="num">' + num(r[3]) + '</td><td class="err">' + esc(r[4] || "") + '</td><td class="failing">' + shown + "</td></tr>";
      }).join("") + "</tbody></table>";
  }

  // The team setting: who leads, what was switched off, the final task list and its history.
  function teamSection(detail) {
    var t = detail.team;
    if (!t) return "";
    var r = t.result || {}, m = r.metrics || {}, f = r.team_features || {};
    var off = [["task_list", "--team-no-task-list"], ["scratchpad", "--team-no-scratchpad"], ["mcp", "--team-no-mcp"],
      ["auto_refresh", "--team-no-auto-refresh"], ["protocol", "--team-no-protocol"]]
      .filter(function (x) { return f[x[0]] === false; }).map(function (x) { return x[1]; });
    var html = "<h2>Team</h2><p>lead " + esc(agentName(r.lead_agent || "?")) + " · tasks done " + num(m.tasks_done) + "/" + num(m.tasks_total) +
      " · unowned at end " + num(m.unowned_at_end) + " · first claim after " + (m.time_to_first_claim_seconds == null ? "–" : secs(m.time_to_first_claim_seconds)) +
      " · requests " + num(m.requests) + " (answered " + num(m.responses) + ")" + (off.length ? ' · <span class="muted">off: ' + esc(off.join(" ")) + "</span>" : "") + "</p>";
    html += '<table class="verdicts team-tasks"><thead><tr><th>task</th><th>title</th><th>owner</th><th>status</th><th>note</th></tr></thead><tbody>' +
      (t.tasks || []).map(function (x) {
        return "<tr><td>" + esc(x.id) + "</td><td>" + esc(x.title) + "</td><td>" + esc(x.owner ? agentName(x.owner) : "–") + "</td><td>" + esc(x.status) + "</td><td>" + esc(x.note || "") + "</td></tr>";
      }).join("") + "</tbody></table>";
    if ((t.log || []).length) {
      html += "<details><summary>history (" + plural(t.log.length, "change") + ")</summary><ol class=\"team-log\">" + t.log.map(function (e) {
        var what = e.kind + (e.task_id ? " " + e.task_id : "") + (e.request_id ? " " + e.request_id : "") + (e.title ? " “" + e.title + "”" : "") +
          (e.status ? " → " + e.status : "") + (e.note ? " (" + e.note + ")" : "") + (e.to ? " to " + agentName(e.to) : "") + (e.request_kind ? " [" + e.request_kind + "]" : "");
        return "<li><span class=\"mono\">" + esc(new Date(e.ts * 1000).toISOString().slice(11, 23)) + "</span> " + esc(agentName(e.by)) + ": " + esc(what) + "</li>";
      }).join("") + "</ol></details>";
    }
    return html;
  }

  function renderPair(root, detail) {
    var row = detail.row;
    document.title = "cbench · " + row.key;
    var agentsInfo = detail.agents.map(function (a) {
      // A step is one model call, as in result.json, report and compare; each leads to actions.
      return "<div><span>" + esc(agentName(a.id)) + "</span>" + esc(a.status || "?") + " · " +
        plural(stepsOf(row, a), "step") + " · " + plural(a.steps.length, "action") + " · " +
        num(a.token_usage ? a.token_usage.total_tokens : null) + " tokens · " + money(a.cost_usd) + timeSplit(a) +
        (a.error ? '<br><span class="err">' + esc(a.error) + "</span>" : "") + "</div>";
    }).join("");
    var logs = Object.keys(detail.logs || {}).map(function (name) {
      return "<details><summary>" + esc(name) + "</summary><pre>" + esc(detail.logs[name]) + "</pre></details>";
    }).join("");
    root.innerHTML = '<p><a href="index.html">← all pairs</a></p><h1>' + esc(row.key) + " " + badge(row.verdict) + "</h1>" +
      '<div class="muted mono">' + esc(detail.path) + "</div>" +
      '<div class="header-grid">' + agentsInfo + "<div><span>merge</span>" + esc(row.merge_outcome || "–") + " " + esc(row.merge_strategy ? "(" + row.merge_strategy + ")" : "") +
      "</div><div><span>agents' time (grading not included)</span>" + secs(row.wall_s) + " · " + num(row.messages) + " messages</div></div>" +
      (row.infra_error ? '<p class="err">Infrastructure error: ' + esc(row.infra_error) + "</p>" : "") +
      "<h2>Verdicts</h2>" + verdicts(detail) +
      "<h2>Coordination</h2>" + coordination(detail) + teamSection(detail) +
      "<h2>Trajectories and messages</h2>" + timeline(detail) +
      "<h2>Patches</h2>" + detail.agents.map(function (a) { return "<h3>" + esc(agentName(a.id)) + "</h3>" + diff(a.patch); }).join("") +
      (detail.merged_diff != null ? "<h3>Merged</h3>" + diff(detail.merged_diff) : "") +
      "<h2>Test logs</h2>" + (logs || '<p class="muted">none</p>');
    rendered();
  }

  function pair(root, search) {
    var id = new URLSearchParams(search).get("p") || "";
    if (!/^[A-Za-z0-9_-]+$/.test(id)) { root.innerHTML = '<p class="err">No pair given (pair.html?p=…).</p>'; return; }
    var script = document.createElement("script");
    script.src = "data/pairs/" + id + ".js";
    script.onload = function () { renderPair(root, window.CBENCH_PAIR); };
    script.onerror = function () { root.innerHTML = '<p class="err">No data for pair ' + esc(id) + ': regenerate with cbench view.</p>'; };
    document.body.appendChild(script);
  }

  // ---- comparison ------------------------------------------------------------------------------
  function rateCi(r) {
    if (!r) return "–";
    var ci = r.ci95 ? ' <span class="muted">[' + pct(r.ci95[0]) + ", " + pct(r.ci95[1]) + "]</span>" : "";
    return esc(r.count + "/" + r.of + " " + pct(r.rate)) + ci;
  }
  function pts(v) { return (v >= 0 ? "+" : "") + (v * 100).toFixed(1) + " pts"; }
  function pairedCells(p) {
    return "<td class=num>" + p.both + "</td><td class=num>" + p.only_a + "</td><td class=num>" + p.only_b + "</td><td class=num>" + p.neither +
      "</td><td class=num>" + pts(p.difference) + "</td><td>" + (p.only_a + p.only_b === 0 ? "– (no pair where they differ)" : p.ci95 ? "[" + pts(p.ci95[0]) + ", " + pts(p.ci95[1]) + "]" : "–") +
      "</td><td class=num>" + p.mcnemar_p.toFixed(4) + "</td>";
  }
  var PAIRED_HEAD = "<th class=num>both ✓</th><th class=num>only A</th><th class=num>only B</th><th class=num>neither</th><th class=num>A − B</th><th>95% CI</th><th class=num>McNemar p</th>";

  function compare(root, data) {
    if (!data) { root.innerHTML = '<p class="err">data/compare.js is missing: rerun cbench compare.</p>'; return; }
    var c = data.comparison, views = data.views || {};
    document.title = "cbench · " + c.runs.map(function (r) { return r.name; }).join(" vs ");
    var plugin = function (r) {
      if (r.team && r.team.length) return r.team.map(function (p) { return p.name + " " + p.version; }).join(" + ");
      return r.plugin ? r.plugin.name + " " + r.plugin.version + " (WIT " + r.plugin.wit_version + ")" : "–";
    };
    var sha = function (r) {
      var ps = r.team && r.team.length ? r.team : (r.plugin ? [r.plugin] : []);
      return ps.map(function (p) { return '<span class="mono" title="' + esc(p.sha256) + '">' + esc(p.sha256.slice(0, 12)) + "…</span>"; }).join(" + ");
    };
    var rows = [
      ["plugin", function (r) { return esc(plugin(r)); }], ["plugin sha256", sha], ["model", function (r) { return esc(r.model); }],
      ["overall success", function (r) { return rateCi(r.overall); }], ["individual success", function (r) { return rateCi(r.individual); }],
      ["naive-merge conflicts", function (r) { return rateCi(r.naive_merge_conflicts); }], ["union rescues", function (r) { return rateCi(r.union_rescues); }],
      ["coordination failures", function (r) { return rateCi(r.coordination_failures); }], ["tokens", function (r) { return num(r.tokens); }],
      ["cost", function (r) { return money(r.cost_usd); }], ["cost per success", function (r) { return money(r.cost_per_success_usd); }],
      ["steps (model calls)", function (r) { return num(r.steps); }], ["agent wall time", function (r) { return secs(r.wall_s); }],
      ["left out", function (r) {
        var l = r.left_out, parts = [[l.not_run, "not run"], [l.infrastructure_error, "infra error"], [l.not_graded, "not graded"], [l.missing_elsewhere, "not in others"]]
          .filter(function (x) { return x[0] > 0; }).map(function (x) { return x[0] + " " + x[1]; });
        return parts.length ? esc(parts.join(", ")) : "none";
      }],
    ];
    var html = "<h1>" + esc(c.runs.map(function (r) { return r.name; }).join(" vs ")) + '</h1><div class="muted">' + c.compared_pairs +
      " pairs graded in every run · Wilson 95% intervals per run · paired bootstrap 95% intervals (" + num(c.bootstrap_resamples) + " resamples, seed " + esc(c.bootstrap_seed) + ") · exact McNemar tests</div>";
    c.mismatches.forEach(function (m) { html += '<p class="err">Mismatch accepted with --allow-mismatch: ' + esc(m) + "</p>"; });
    html += (c.differing_options || []).length ? "<p>Options that differ: " + c.differing_options.map(esc).join(" · ") + "</p>" : '<p class="muted">Options: the same in every run.</p>';
    html += '<h2>Runs</h2><table class="verdicts"><thead><tr><th></th>' + c.runs.map(function (r) { return "<th>" + esc(r.name) + "</th>"; }).join("") + "</tr></thead><tbody>" +
      rows.map(function (row) { return "<tr><td>" + esc(row[0]) + "</td>" + c.runs.map(function (r) { return "<td>" + row[1](r) + "</td>"; }).join("") + "</tr>"; }).join("") + "</tbody></table>";
    if (c.runs.some(function (r) { return r.failure_modes; })) {
      html += '<h2>Coordination failure modes</h2><table class="verdicts modes"><thead><tr><th>pairs flagged</th>' + c.runs.map(function (r) { return "<th>" + esc(r.name) + "</th>"; }).join("") + "</tr></thead><tbody>" +
        MODES.map(function (m) {
          return "<tr><td>" + esc(m[1]) + "</td>" + c.runs.map(function (r) { return "<td>" + rateCi((r.failure_modes || {})[m[0]]) + "</td>"; }).join("") + "</tr>";
        }).join("") + "</tbody></table>";
    }
    if (c.runs.some(function (r) { return r.team_metrics; })) {
      var teamRows = [
        ["tasks done", function (t) { return num(t.tasks_done) + "/" + num(t.tasks_total); }],
        ["unowned at end", function (t) { return num(t.unowned_at_end); }],
        ["claims lead / members", function (t) { return num(t.claims_by_lead) + " / " + num(t.claims_by_members); }],
        ["requests (answered)", function (t) { return num(t.requests) + " (" + num(t.responses) + ")"; }],
        ["median first claim", function (t) { return t.median_time_to_first_claim_s == null ? "–" : secs(t.median_time_to_first_claim_s); }],
      ];
      html += '<h2>Team setting</h2><table class="verdicts"><thead><tr><th>summed over the compared pairs</th>' + c.runs.map(function (r) { return "<th>" + esc(r.name) + "</th>"; }).join("") + "</tr></thead><tbody>" +
        teamRows.map(function (row) {
          return "<tr><td>" + esc(row[0]) + "</td>" + c.runs.map(function (r) { return "<td>" + (r.team_metrics ? row[1](r.team_metrics) : "–") + "</td>"; }).join("") + "</tr>";
        }).join("") + "</tbody></table>";
    }
    c.runs.filter(function (r) { return r.team && r.team.length; }).forEach(function (r) {
      html += "<p><b>" + esc(r.name) + "</b> roles: " + r.roles.map(function (role) { return esc(role.agent_id + " = " + role.plugin) + " alone " + rateCi(role.individual); }).join(" · ") + "</p>";
    });
    html += '<div class="plots">' + barChart("Overall success (Wilson 95%)", c.runs.map(function (r) {
      return { label: r.name, value: r.overall.rate || 0, text: pct(r.overall.rate) + (r.overall.ci95 ? " [" + pct(r.overall.ci95[0]) + ", " + pct(r.overall.ci95[1]) + "]" : ""), cls: "ok" };
    }), { max: 1, labelWidth: 200, textWidth: 170 }) + "</div>";
    c.pairwise.forEach(function (p) {
      html += "<h2>A = " + esc(p.a) + " vs B = " + esc(p.b) + '</h2><p class="verdict-sentence">' + esc(p.verdict) + '</p><table class="verdicts paired"><thead><tr><th>pairs</th>' + PAIRED_HEAD + "</tr></thead><tbody>" +
        "<tr><td>all (" + p.overall.pairs + ")</td>" + pairedCells(p.overall) + "</tr>" +
        Object.keys(p.per_repo).map(function (repo) { return "<tr><td>" + esc(repo) + " (" + p.per_repo[repo].pairs + ")</td>" + pairedCells(p.per_repo[repo]) + "</tr>"; }).join("") +
        "</tbody></table>";
      if (p.failure_modes) {
        html += '<table class="verdicts paired modes"><thead><tr><th>flagged in</th>' + PAIRED_HEAD + "</tr></thead><tbody>" +
          MODES.filter(function (m) { return p.failure_modes[m[0]]; }).map(function (m) {
            return "<tr><td>" + esc(m[1]) + "</td>" + pairedCells(p.failure_modes[m[0]]) + "</tr>";
          }).join("") + "</tbody></table>";
      }
      if (!p.disagreements.length) { html += '<p class="muted">No pair where they disagree.</p>'; return; }
      html += "<h3>They disagree on " + p.disagreements.length + " pair(s)</h3><table class=\"verdicts disagreements\"><thead><tr><th>pair</th><th>" + esc(p.a) + "</th><th>" + esc(p.b) + "</th></tr></thead><tbody>" +
        p.disagreements.map(function (d) {
          var link = function (run, ok) {
            var mark = ok ? '<span class="yes">✓</span>' : '<span class="no">✗</span>';
            return views[run] ? '<a class="pair-link" href="' + esc(views[run] + "/pair.html?p=" + encodeURIComponent(d.page_id)) + '">' + mark + " pair page</a>" : mark;
          };
          return '<tr class="disagreement"><td>' + esc(d.key) + "</td><td>" + link(p.a, d.a_success) + "</td><td>" + link(p.b, d.b_success) + "</td></tr>";
        }).join("") + "</tbody></table>";
    });
    root.innerHTML = html;
    rendered();
  }

  return { overview: overview, pair: pair, compare: compare };
})();
