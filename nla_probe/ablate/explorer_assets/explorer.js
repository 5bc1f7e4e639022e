/* nla-probe run explorer: builds the decode browser from the page's JSON block.
   Data is inserted with textContent / createTextNode only (never innerHTML): explanations are
   untrusted model output. Offsets in the data are UTF-16 code units. */
function nlaExplorer(root, opts) {
  "use strict";
  opts = opts || {};
  var D = JSON.parse(root.querySelector("script.nlx-data").textContent);
  var app = root.querySelector(".nlx-app");
  var S = D.strings, FAM = D.families;
  var lower = null;
  var st = {exp: 0, sort: "delta", dir: 1, q: "", a: null, b: null, page: 0, size: 100, row: null, filters: {}};

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (attrs[k] === null || attrs[k] === undefined) continue;
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else if (k === "style") e.style.cssText = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function fmt(x, d) { return (x === null || x === undefined) ? "n/a" : (x >= 0 ? "+" : "") + x.toFixed(d === undefined ? 3 : d); }
  function str(i) { return i === null || i < 0 ? "" : S[i]; }
  function E() { return D.experiments[st.exp]; }
  function baseIndex(e) { for (var i = 0; i < e.conds.length; i++) if (e.conds[i].baseline) return i; return 0; }
  function condIndex(e, name) { for (var i = 0; i < e.conds.length; i++) if (e.conds[i].name === name) return i; return -1; }
  function explOf(c, r) { return c.expl[r]; }
  function textOf(c, r) { return c.text[r] === -2 ? c.expl[r] : c.text[r]; }

  /* ---------------------------------------------------------------- colour scale */
  function binOf(scale, d) { var k = 0; for (var i = 0; i < scale.edges.length; i++) if (d >= scale.edges[i]) k++; return k; }
  function paint(node, scale, d) {
    if (d === null || d === undefined) return;
    var k = binOf(scale, d);
    node.style.background = scale.palette[k];
    node.style.color = scale.ink[k];
  }
  function legend(e) {
    var sc = e.scale, box = el("div", {cls: "nlx-legend"});
    var cells = [el("span", {text: "ΔFVE = FVE(full) − FVE(without the part), FVE units: "})];
    for (var k = 0; k < sc.palette.length; k++) {
      var lo = k === 0 ? null : sc.edges[k - 1], hi = k === sc.palette.length - 1 ? null : sc.edges[k];
      var label = lo === null ? "< " + fmt(hi, 2) : hi === null ? "≥ " + fmt(lo, 2) : fmt(lo, 2) + " … " + fmt(hi, 2);
      var sw = el("span", {cls: "nlx-swatch", text: label});
      sw.style.background = sc.palette[k]; sw.style.color = sc.ink[k];
      cells.push(sw);
    }
    box.appendChild(el("span", {}, cells));
    box.appendChild(el("span", {cls: "nlx-muted", text: "orange: removing the part loses reconstruction (it carries signal); blue: removing it helps; scale ±" + sc.limit + " (95th percentile of |ΔFVE| in this experiment, rounded up)"}));
    var fams = el("span", {}, ["spans by delimiter family: "]);
    FAM.forEach(function (f, i) { fams.appendChild(el("span", {cls: "nlx-span nlx-f" + i, text: f, style: "margin-right:10px"})); });
    box.appendChild(fams);
    return box;
  }

  /* ---------------------------------------------------------------- highlighted text */
  function spansOf(si) {
    var flat = D.spans[si] || [], out = [];
    for (var i = 0; i < flat.length; i += 4) out.push({a: flat[i], b: flat[i + 1], fam: flat[i + 2], depth: flat[i + 3]});
    return out;
  }
  /* Text with nested family spans; parts (span unit, [unit, a, b, fam, delta, without]) colour matching spans. */
  function renderText(si, scale, parts) {
    var text = str(si), nodes = spansOf(si).map(function (s) { return {a: s.a, b: s.b, fam: s.fam, kids: []}; });
    var byPos = {};
    (parts || []).forEach(function (p) { if (p[0] === 0) byPos[p[1] + ":" + p[2]] = p; });
    nodes.forEach(function (n) { n.part = byPos[n.a + ":" + n.b]; if (n.part) delete byPos[n.a + ":" + n.b]; });
    Object.keys(byPos).forEach(function (k) { var p = byPos[k]; nodes.push({a: p[1], b: p[2], fam: p[3], kids: [], part: p}); });
    nodes.sort(function (x, y) { return x.a - y.a || y.b - x.b; });
    var top = {a: 0, b: text.length, kids: []}, stack = [top];
    nodes.forEach(function (n) {
      while (stack.length > 1 && stack[stack.length - 1].b <= n.a) stack.pop();
      var parent = stack[stack.length - 1];
      if (n.b > parent.b) return;  /* crossing spans: keep the first */
      parent.kids.push(n); stack.push(n);
    });
    function emit(node, into) {
      var pos = node.a;
      node.kids.forEach(function (k) {
        if (k.a > pos) into.appendChild(document.createTextNode(text.slice(pos, k.a)));
        var fam = k.fam >= 0 ? FAM[k.fam] : "span";
        var title = fam;
        var sp = el("span", {cls: "nlx-span nlx-f" + k.fam, "data-family": fam});
        if (k.part) {
          sp.setAttribute("data-delta", String(k.part[4]));
          sp.setAttribute("data-part", "span");
          title += " · ΔFVE " + fmt(k.part[4], 4) + " · FVE without " + fmt(k.part[5], 4);
          paint(sp, scale, k.part[4]);
        }
        sp.title = title;
        emit(k, sp);
        into.appendChild(sp);
        pos = k.b;
      });
      if (node.b > pos) into.appendChild(document.createTextNode(text.slice(pos, node.b)));
    }
    var box = el("div", {cls: "nlx-text"});
    emit(top, box);
    return box;
  }
  function renderSentences(si, scale, parts) {
    var text = str(si), box = el("div", {cls: "nlx-text"}), pos = 0;
    parts.filter(function (p) { return p[0] === 1; }).sort(function (x, y) { return x[1] - y[1]; }).forEach(function (p) {
      if (p[1] > pos) box.appendChild(document.createTextNode(text.slice(pos, p[1])));
      var sp = el("span", {"data-part": "sentence", "data-delta": String(p[4]), title: "sentence · ΔFVE " + fmt(p[4], 4) + " · FVE without " + fmt(p[5], 4), text: text.slice(p[1], p[2])});
      paint(sp, scale, p[4]);
      box.appendChild(sp);
      pos = p[2];
    });
    if (pos < text.length) box.appendChild(document.createTextNode(text.slice(pos)));
    return box;
  }
  function famsUsed(si) { var u = {}; spansOf(si).forEach(function (s) { u[s.fam] = (u[s.fam] || 0) + 1; }); return u; }

  /* ---------------------------------------------------------------- table model */
  function columns(e) {
    var cols = [{key: "sample", label: "sample", num: true}, {key: "doc", label: "document"}, {key: "pos", label: "pos", num: true},
      {key: "attr", label: "ΔFVE"}, {key: "delta", label: "Δ " + e.conds[st.a].name + " − " + e.conds[st.b].name, num: true}];
    e.conds.forEach(function (c, i) { cols.push({key: "c" + i, label: c.name + (c.baseline ? " (base)" : ""), num: true, cond: i}); });
    cols.push({key: "expl", label: "explanation (" + e.conds[baseIndex(e)].name + ")"});
    return cols;
  }
  function value(e, key, r) {
    if (key === "sample") return e.ids[r];
    if (key === "doc") return str(e.doc[r]);
    if (key === "pos") return e.pos[r];
    if (key === "attr") return e.attr[String(e.ids[r])] ? "yes" : "";
    if (key === "delta") { var x = e.conds[st.a].fve[r], y = e.conds[st.b].fve[r]; return (x === null || y === null) ? null : x - y; }
    if (key === "expl") return str(explOf(e.conds[baseIndex(e)], r));
    return e.conds[+key.slice(1)].fve[r];
  }
  function parseFilter(s) {
    s = s.trim(); if (!s) return null;
    var m = s.match(/^(-?[\d.]+)\s*\.\.\s*(-?[\d.]+)$/);
    if (m) { var lo = +m[1], hi = +m[2]; return function (v) { return v !== null && v >= lo && v <= hi; }; }
    m = s.match(/^(<=|>=|<|>|=)\s*(-?[\d.]+(?:e-?\d+)?)$/);
    if (m) {
      var t = +m[2], op = m[1];
      return function (v) { return v !== null && (op === "<" ? v < t : op === ">" ? v > t : op === "<=" ? v <= t : op === ">=" ? v >= t : v === t); };
    }
    var q = s.toLowerCase();
    return function (v) { return v !== null && String(v).toLowerCase().indexOf(q) >= 0; };
  }
  function visibleRows(e) {
    var n = e.ids.length, rows = [], q = st.q.toLowerCase(), fs = [];
    if (q && !lower) lower = S.map(function (s) { return s.toLowerCase(); });
    Object.keys(st.filters).forEach(function (k) { var f = parseFilter(st.filters[k]); if (f) fs.push([k, f]); });
    for (var r = 0; r < n; r++) {
      if (q) {
        var hit = lower[e.doc[r]] && lower[e.doc[r]].indexOf(q) >= 0;
        for (var c = 0; !hit && c < e.conds.length; c++) {
          var i1 = e.conds[c].expl[r], i2 = textOf(e.conds[c], r);
          hit = (i1 >= 0 && lower[i1].indexOf(q) >= 0) || (i2 >= 0 && lower[i2].indexOf(q) >= 0);
        }
        if (!hit) continue;
      }
      var ok = true;
      for (var j = 0; ok && j < fs.length; j++) ok = fs[j][1](value(e, fs[j][0], r));
      if (ok) rows.push(r);
    }
    var key = st.sort, dir = st.dir;
    var keys = rows.map(function (r) { return value(e, key, r); });
    var idx = rows.map(function (_, i) { return i; });
    idx.sort(function (x, y) {
      var a = keys[x], b = keys[y];
      if (a === null || a === undefined) return (b === null || b === undefined) ? rows[x] - rows[y] : 1;
      if (b === null || b === undefined) return -1;
      if (a < b) return -dir; if (a > b) return dir; return rows[x] - rows[y];
    });
    return idx.map(function (i) { return rows[i]; });
  }

  /* ---------------------------------------------------------------- views */
  var ui = {};
  function build() {
    app.textContent = "";
    var e = E(), bi = baseIndex(e);
    if (st.b === null || st.b >= e.conds.length) st.b = bi;
    if (st.a === null || st.a >= e.conds.length) st.a = e.conds.length > 1 ? (bi === 0 ? 1 : 0) : bi;
    var ctl = el("div", {cls: "nlx-controls"});
    if (D.experiments.length > 1) {
      var sel = el("select", {"aria-label": "experiment", cls: "nlx-exp-select"});
      D.experiments.forEach(function (x, i) { sel.appendChild(el("option", {value: String(i), text: x.name})); });
      sel.value = String(st.exp);
      sel.onchange = function () { st.exp = +sel.value; st.a = st.b = null; st.row = null; st.page = 0; st.filters = {}; st.sort = "delta"; st.dir = 1; build(); };
      ctl.appendChild(el("label", {}, ["experiment ", sel]));
    }
    var search = el("input", {type: "search", placeholder: "text or document", cls: "nlx-search", "aria-label": "search"});
    search.value = st.q;
    var timer = null;
    search.oninput = function () { clearTimeout(timer); timer = setTimeout(function () { st.q = search.value; st.page = 0; refresh(); }, 150); };
    ctl.appendChild(el("label", {}, ["search ", search]));
    function condSelect(which, label) {
      var s = el("select", {"aria-label": label, cls: "nlx-" + which});
      e.conds.forEach(function (c, i) { s.appendChild(el("option", {value: String(i), text: c.name})); });
      s.value = String(st[which]);
      s.onchange = function () { st[which] = +s.value; build(); };
      return s;
    }
    ctl.appendChild(el("label", {}, ["Δ = ", condSelect("a", "condition A"), " − ", condSelect("b", "condition B")]));
    var size = el("select", {"aria-label": "rows per page"});
    [50, 100, 250, 500].forEach(function (n) { size.appendChild(el("option", {value: String(n), text: String(n)})); });
    size.value = String(st.size);
    size.onchange = function () { st.size = +size.value; st.page = 0; refresh(); };
    ctl.appendChild(el("label", {}, ["rows per page ", size]));
    app.appendChild(ctl);
    app.appendChild(el("p", {cls: "nlx-howto", text: "How to use: pick an experiment and two conditions in Δ = A − B; the rows are sorted by that difference, largest drop first. Click a row to open it: its spans and sentences are coloured by how much FVE each carries (rows marked yes in the ΔFVE column). Click a column header to sort by it; type in the boxes under the headers to filter (<0, >0.5, 0.1..0.3, or text)."}));
    app.appendChild(el("p", {cls: "nlx-muted nlx-rows-note", text: "Rows: " + e.rows_note + ". " + attrNote(e)}));
    ui.pager = el("div", {cls: "nlx-pager"});
    app.appendChild(ui.pager);
    var wrap = el("div", {cls: "nlx-gridwrap"});
    ui.table = el("table", {cls: "nlx-grid"});
    wrap.appendChild(ui.table);
    app.appendChild(wrap);
    ui.detail = el("div", {cls: "nlx-detailbox"});
    app.appendChild(ui.detail);
    var cols = columns(e), head = el("tr"), frow = el("tr", {cls: "nlx-filter"});
    cols.forEach(function (c) {
      var th = el("th", {"data-key": c.key, cls: c.num ? "num" : null, text: c.label, scope: "col"});
      if (c.key === st.sort) th.setAttribute("aria-sort", st.dir > 0 ? "ascending" : "descending");
      th.onclick = function () { if (st.sort === c.key) st.dir = -st.dir; else { st.sort = c.key; st.dir = c.num && c.key !== "sample" && c.key !== "pos" ? -1 : 1; } st.page = 0; build(); };
      head.appendChild(th);
      var inp = el("input", {type: "text", "aria-label": "filter " + c.label, "data-key": c.key, placeholder: c.num ? "e.g. <0" : "text"});
      inp.value = st.filters[c.key] || "";
      var t2 = null;
      inp.oninput = function () { clearTimeout(t2); t2 = setTimeout(function () { st.filters[c.key] = inp.value; st.page = 0; refresh(); }, 150); };
      frow.appendChild(el("th", {}, [inp]));
    });
    ui.table.appendChild(el("thead", {}, [head, frow]));
    ui.body = el("tbody");
    ui.table.appendChild(ui.body);
    refresh();
  }
  function attrNote(e) {
    var n = Object.keys(e.attr).length;
    if (!n) return "Leave-one-out ΔFVE was not computed for this experiment (it needs the AR: `nla-probe ablate` computes it for a capped number of rows; spans are still marked by family).";
    return "Leave-one-out ΔFVE per span and sentence: computed by the run for " + e.attr_n + " of " + e.n_total + " activations (" + n + " of them shown; the rows with the largest FVE drop under each condition first, then the first rows by sample id; delimiter families " + e.attr_families.join(", ") + "). Other rows show spans by family only.";
  }
  function refresh() {
    var e = E(), rows = visibleRows(e), cols = columns(e);
    ui.rows = rows;
    var pages = Math.max(1, Math.ceil(rows.length / st.size));
    if (st.page >= pages) st.page = pages - 1;
    var lo = st.page * st.size, hi = Math.min(rows.length, lo + st.size);
    ui.body.textContent = "";
    var frag = document.createDocumentFragment();
    for (var k = lo; k < hi; k++) {
      var r = rows[k], tr = el("tr", {"data-row": String(r), "data-sample-id": String(e.ids[r]), tabindex: "0"});
      if (st.row === r) tr.className = "nlx-sel";
      cols.forEach(function (c) {
        var v = value(e, c.key, r);
        var txt = v === null || v === undefined ? "—" : c.num && c.key !== "sample" && c.key !== "pos" ? fmt(v) : String(v);
        tr.appendChild(el("td", {cls: c.key === "expl" ? "nlx-expl" : c.num ? "num" : null, text: txt, "data-key": c.key}));
      });
      tr.onclick = open.bind(null, r);
      tr.onkeydown = function (ev) { if (ev.key === "Enter") this.onclick(); };
      frag.appendChild(tr);
    }
    ui.body.appendChild(frag);
    ui.pager.textContent = "";
    var prev = el("button", {type: "button", text: "‹ previous", cls: "nlx-prev"}), next = el("button", {type: "button", text: "next ›", cls: "nlx-next"});
    prev.disabled = st.page === 0; next.disabled = st.page >= pages - 1;
    prev.onclick = function () { st.page--; refresh(); };
    next.onclick = function () { st.page++; refresh(); };
    ui.pager.appendChild(el("span", {}, [prev, " ", next, " rows " + (rows.length ? lo + 1 : 0) + "–" + hi + " of " + rows.length + (rows.length < e.ids.length ? " (filtered from " + e.ids.length + ")" : "") + ", page " + (st.page + 1) + " of " + pages]));
    if (st.row !== null) renderDetail(st.row); else ui.detail.textContent = "";
    saveHash();
  }
  function open(r) { st.row = r; refresh(); ui.detail.scrollIntoView && ui.detail.scrollIntoView({block: "nearest"}); }

  function renderDetail(r) {
    var e = E(), bi = baseIndex(e), base = e.conds[bi], sid = e.ids[r], at = e.attr[String(sid)];
    var box = el("div", {cls: "nlx-detail", "data-sample-id": String(sid)});
    box.appendChild(el("h3", {text: "sample " + sid + " · document " + str(e.doc[r]) + " · position " + (e.pos[r] === null ? "—" : e.pos[r])}));
    box.appendChild(legend(e));
    var bsi = explOf(base, r);
    if (at) {
      box.appendChild(el("h4", {text: "Explanation (" + base.name + "): spans coloured by leave-one-out ΔFVE (FVE of the whole explanation " + fmt(at.full, 4) + ")"}));
      box.appendChild(renderText(bsi, e.scale, at.parts)).classList.add("nlx-spans-view");
      box.appendChild(el("h4", {text: "The same explanation by sentence"}));
      box.appendChild(renderSentences(bsi, e.scale, at.parts)).classList.add("nlx-sent-view");
      var pt = el("table", {cls: "nlx-parts"});
      pt.appendChild(el("thead", {}, [el("tr", {}, ["unit", "part", "family", "ΔFVE", "FVE without"].map(function (h) { return el("th", {text: h}); }))]));
      var tb = el("tbody");
      at.parts.forEach(function (p) {
        var d = el("td", {cls: "num", text: fmt(p[4], 4)}); paint(d, e.scale, p[4]);
        tb.appendChild(el("tr", {"data-unit": p[0] === 0 ? "span" : "sentence"}, [
          el("td", {text: p[0] === 0 ? "span" : "sentence"}), el("td", {text: str(bsi).slice(p[1], p[2])}),
          el("td", {text: p[3] >= 0 ? FAM[p[3]] : ""}), d, el("td", {cls: "num", text: fmt(p[5], 4)})]));
      });
      pt.appendChild(tb);
      box.appendChild(pt);
      box.appendChild(el("p", {cls: "nlx-muted", text: "Why this row has ΔFVE: " + at.why + ". Edited texts are outside the AR's training distribution: a ΔFVE mixes the part's content with the AR's reaction to an unusual text."}));
    } else {
      box.appendChild(el("h4", {text: "Explanation (" + base.name + "), spans marked by delimiter family"}));
      box.appendChild(renderText(bsi, e.scale, null)).classList.add("nlx-spans-view");
      box.appendChild(el("p", {cls: "nlx-muted", text: "No leave-one-out ΔFVE for this row. " + attrNote(e)}));
    }
    box.appendChild(el("h4", {text: "Conditions side by side (text the AR scored)"}));
    var ct = el("table", {cls: "nlx-conds"});
    ct.appendChild(el("thead", {}, [el("tr", {}, ["condition", "text scored by the AR", "fve_nrm", "Δ vs " + base.name, "leak audit (spans)", "details"].map(function (h) { return el("th", {text: h}); }))]));
    var cb = el("tbody"), baseUse = famsUsed(bsi);
    e.conds.forEach(function (c) {
      var ti = textOf(c, r), x = c.fve[r], y = base.fve[r];
      var cell = el("td", {}, [renderText(ti, e.scale, null)]);
      if (c.expl[r] !== bsi && c.text[r] !== -2) cell.appendChild(el("div", {cls: "nlx-muted"}, ["AV explanation before edits: ", renderText(c.expl[r], e.scale, null)]));
      var leak = el("td", {cls: "nlx-leak"});
      if (c.banned.length) {
        var use = famsUsed(c.expl[r]), leaked = [], instead = [];
        c.banned.forEach(function (f) { if (use[f]) leaked.push(FAM[f] + " (" + use[f] + ")"); });
        Object.keys(use).forEach(function (f) { if (!baseUse[f] && c.banned.indexOf(+f) < 0) instead.push(FAM[f] + " (" + use[f] + ")"); });
        leak.appendChild(el("div", {text: "banned: " + c.banned.map(function (f) { return FAM[f]; }).join(", ")}));
        leak.appendChild(el("div", {text: "leaked: " + (leaked.length ? leaked.join(", ") : "none")}));
        leak.appendChild(el("div", {text: "used instead: " + (instead.length ? instead.join(", ") : "none")}));
      } else leak.textContent = "—";
      var items = [];
      Object.keys(c.cols).forEach(function (k) {
        var v = c.cols[k][r];
        if (c.strcols.indexOf(k) >= 0) v = str(v);
        if (v === "" || v === null || v === undefined) return;
        items.push(k + " " + (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : String(v)));
      });
      var kv = el("td", {cls: "nlx-kv", text: items.join(" · ")});
      cb.appendChild(el("tr", {"data-condition": c.name, cls: c.baseline ? "nlx-base" : null}, [
        el("td", {text: c.name, title: c.desc}), cell, el("td", {cls: "num", text: fmt(x), "data-fve": String(x)}),
        el("td", {cls: "num", text: c.baseline ? "—" : (x === null || y === null ? "n/a" : fmt(x - y))}), leak, kv]));
    });
    ct.appendChild(cb);
    box.appendChild(ct);
    if (e.copy) box.appendChild(copyDetail(e, r));
    ui.detail.textContent = "";
    ui.detail.appendChild(box);
  }

  /* ---------------------------------------------------------------- copy detection */
  function marked(text, run, cls, lead) {
    var box = el("div", {cls: "nlx-text nlx-ctx"});
    if (lead) box.appendChild(document.createTextNode("…"));
    if (!run) { box.appendChild(document.createTextNode(text)); return box; }
    box.appendChild(document.createTextNode(text.slice(0, run[0])));
    box.appendChild(el("mark", {cls: cls, text: text.slice(run[0], run[1])}));
    box.appendChild(document.createTextNode(text.slice(run[1])));
    return box;
  }
  function words(n) { return n + (n === 1 ? " word" : " words"); }
  function copyDetail(e, r) {
    var sec = el("div", {cls: "nlx-copy"}), per = e.copy.rows[String(e.ids[r])];
    sec.appendChild(el("h4", {text: "Copy detection: the longest run of words shared with the source context, next to the null's"}));
    if (!per) { sec.appendChild(el("p", {cls: "nlx-muted", text: e.copy.note + "; this row has none."})); return sec; }
    e.conds.forEach(function (c) {
      var x = per[c.name];
      if (!x) return;
      var lens = x.null_lens.slice().sort(function (p, q) { return p - q; });
      var head = c.name + ": " + words(x.len) + " shared with the true context; longest of " + x.null_lens.length +
        " null contexts (other documents): " + (x.null ? words(x.null.len) : "none") + "; null run lengths " + lens.join(" ");
      var wrap = el("div", {cls: "nlx-copyrow", "data-condition": c.name});
      wrap.appendChild(el("div", {cls: "nlx-muted", text: head}));
      wrap.appendChild(el("div", {cls: "nlx-label", text: "explanation (run with the true context marked)"}));
      wrap.appendChild(marked(str(explOf(c, r)), x.expl_run, "nlx-run", false));
      var cols = el("div", {cls: "nlx-cols"});
      var left = el("div", {cls: "nlx-half"}, [el("div", {cls: "nlx-label", text: "true context (" + words(x.len) + " shared)"}), marked(str(x.ctx), x.ctx_run, "nlx-run", x.cut)]);
      left.lastChild.setAttribute("data-run", x.ctx_run ? str(x.ctx).slice(x.ctx_run[0], x.ctx_run[1]) : "");
      cols.appendChild(left);
      if (x.null) {
        var right = el("div", {cls: "nlx-half"}, [el("div", {cls: "nlx-label", text: "null context, document " + str(x.null.doc) + " (" + words(x.null.len) + " shared)"}), marked(str(x.null.ctx), x.null.ctx_run, "nlx-run nlx-nullrun", x.null.cut)]);
        cols.appendChild(right);
      }
      wrap.appendChild(cols);
      sec.appendChild(wrap);
    });
    sec.appendChild(el("p", {cls: "nlx-muted", text: e.copy.note + ". Contexts are cut around the run (…)."}));
    return sec;
  }

  /* ---------------------------------------------------------------- state in the URL hash */
  function saveHash() {
    if (!opts.hash || !window.history || !history.replaceState) return;
    var e = E(), p = ["exp=" + encodeURIComponent(e.name), "sort=" + encodeURIComponent(st.sort), "dir=" + st.dir,
      "a=" + encodeURIComponent(e.conds[st.a].name), "b=" + encodeURIComponent(e.conds[st.b].name), "page=" + st.page];
    if (st.q) p.push("q=" + encodeURIComponent(st.q));
    if (st.row !== null) p.push("row=" + e.ids[st.row]);
    lastHash = "#" + p.join("&");
    try { history.replaceState(null, "", lastHash); } catch (err) { /* file:// in some browsers */ }
  }
  var lastHash = null;
  function loadHash() {
    if (!opts.hash || !location.hash) return;
    var h = {};
    location.hash.slice(1).split("&").forEach(function (kv) { var i = kv.indexOf("="); if (i > 0) h[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); });
    D.experiments.forEach(function (x, i) { if (x.name === h.exp) st.exp = i; });
    var e = E();
    if (h.a && condIndex(e, h.a) >= 0) st.a = condIndex(e, h.a);
    if (h.b && condIndex(e, h.b) >= 0) st.b = condIndex(e, h.b);
    if (h.sort) { var ok = ["sample", "doc", "pos", "attr", "delta", "expl"].indexOf(h.sort) >= 0 || /^c\d+$/.test(h.sort); if (ok) st.sort = h.sort; }
    if (h.dir) st.dir = h.dir === "-1" ? -1 : 1;
    if (h.q) st.q = h.q;
    if (h.page) st.page = Math.max(0, parseInt(h.page, 10) || 0);
    if (h.row) { var r = e.ids.indexOf(parseInt(h.row, 10)); if (r >= 0) st.row = r; }
  }
  loadHash();
  build();
  if (opts.hash) window.addEventListener("hashchange", function () {
    if (location.hash === lastHash) return;
    st.row = null; st.a = st.b = null; st.filters = {}; st.q = ""; st.page = 0;
    loadHash(); build();
  });
  root.setAttribute("data-ready", "1");
  return st;
}
