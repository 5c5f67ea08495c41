/* EmbedLab scatter: linked WebGL scatter panes with image thumbnails on hover.
 *
 * A Streamlit (components v1) custom component written against the raw postMessage protocol,
 * so it needs no build step and no network:
 *   iframe -> parent  {isStreamlitMessage: true, type: "streamlit:componentReady", apiVersion: 1}
 *   parent -> iframe  {type: "streamlit:render", args: {payload, overlay, ...}}
 *   iframe -> parent  {isStreamlitMessage: true, type: "streamlit:setComponentValue", value, dataType: "json"}
 *   iframe -> parent  {isStreamlitMessage: true, type: "streamlit:setFrameHeight", height}
 *
 * The payload carries base64 typed arrays (ids, categories, labels, predictions, one x/y[/z] per
 * pane). Thumbnails are never in the payload: they are 16x16 sprite sheets of 256 samples each,
 * served as static files next to this page and fetched by the browser only when a hover needs one.
 * The value sent back is {data_key, selection: {pane, ids, seq} | null, click: {pane, id, seq} | null}.
 *
 * User strings (class names, run labels) never become markup: Plotly gets them escaped by the Python
 * side (core.safe_text.plotly_text), the tooltip and status line build text nodes. The frame touches its
 * parent only through postMessage, and index.html's Content-Security-Policy runs no inline script or
 * handler even if markup got in (Streamlit's component iframe is same-origin with the app).
 */
"use strict";

const ST = {
  send(type, data) { window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type }, data), "*"); },
  ready() { ST.send("streamlit:componentReady", { apiVersion: 1 }); },
  height(h) { ST.send("streamlit:setFrameHeight", { height: h }); },
  value(v) { ST.send("streamlit:setComponentValue", { value: v, dataType: "json" }); },
};

const TIP_SIZE = 96; // thumbnail side in the tooltip, px
const gd = document.getElementById("plot");
const tip = document.getElementById("tip");
const tipImg = tip.querySelector(".img");
const tipTxt = tip.querySelector(".txt");
const statusEl = document.getElementById("status");

const S = {
  key: null,          // data_key of what is drawn
  P: null,            // the payload
  ids: null, labels: null, preds: null, panes: null,
  traceIdx: [],       // per trace: Int32Array of global point indices
  traceMeta: [],      // per trace: {kind: points|anchors|overlay, pane, cat}
  idToIdx: new Map(), // sample id -> global index
  seq: 0, selection: null, click: null,
  overlayRings: [], hoverRings: [], overlayKey: null,
  mouse: { x: 0, y: 0 }, listening: false, syncing: false, drawn: false,
};

function b64(str, Type) {
  const bin = atob(str);
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return new Type(u8.buffer);
}

function axisSuffix(p) { return p === 0 ? "" : String(p + 1); }

function paneDomain(p, n) {
  const gap = n > 1 ? 0.02 : 0;
  return [p / n + (p > 0 ? gap : 0), (p + 1) / n - (p < n - 1 ? gap : 0)];
}

function membersOf(cat, nCats, n) {
  const members = Array.from({ length: nCats }, () => []);
  for (let i = 0; i < n; i++) members[cat[i]].push(i);
  return members.map((m) => Int32Array.from(m));
}

function build(P, overlay) {
  S.P = P;
  S.key = P.data_key;
  S.drawn = false; // until Plotly.react resolves, events carry the old traces' indices: ignore them
  S.selection = null; S.click = null; S.overlayRings = []; S.hoverRings = []; S.overlayKey = null;
  S.ids = b64(P.ids, Int32Array);
  S.labels = b64(P.labels, Int16Array);
  S.preds = P.preds ? b64(P.preds, Int16Array) : null;
  const cat = b64(P.cat, Uint16Array);
  S.idToIdx = new Map();
  for (let i = 0; i < P.n; i++) S.idToIdx.set(S.ids[i], i);
  S.panes = P.panes.map((p) => ({
    title: p.title, x: b64(p.x, Float32Array), y: b64(p.y, Float32Array), z: p.z ? b64(p.z, Float32Array) : null,
    anchors: p.anchors || null, preds: p.preds ? b64(p.preds, Int16Array) : null,
    noPreds: !!p.no_preds, // Explore's before pane of an old run: no predictions of its own, show none
    members: p.cat ? membersOf(b64(p.cat, Uint16Array), P.categories.length, P.n) : null, // own colours (before pane)
  }));
  const is3d = P.dims === 3;
  const memberIdx = membersOf(cat, P.categories.length, P.n);

  const traces = [];
  S.traceIdx = []; S.traceMeta = [];
  const nP = S.panes.length;
  S.panes.forEach((pane, p) => {
    const ax = axisSuffix(p);
    (pane.members || memberIdx).forEach((m, c) => {
      if (!m.length) return;
      const x = new Float32Array(m.length), y = new Float32Array(m.length);
      const z = is3d ? new Float32Array(m.length) : null;
      for (let j = 0; j < m.length; j++) {
        x[j] = pane.x[m[j]]; y[j] = pane.y[m[j]]; if (z) z[j] = pane.z[m[j]];
      }
      const t = {
        type: is3d ? "scatter3d" : "scattergl", mode: "markers", x, y, name: P.categories[c].name,
        legendgroup: "c" + c, showlegend: p === 0, hoverinfo: "none",
        marker: { color: P.categories[c].color, size: is3d ? Math.max(2, P.marker_size - 2) : P.marker_size, opacity: 0.85 },
      };
      if (is3d) { t.z = z; t.scene = "scene" + ax; } else {
        t.xaxis = "x" + ax; t.yaxis = "y" + ax;
        t.selected = { marker: { opacity: 1 } }; t.unselected = { marker: { opacity: 0.1 } };
      }
      traces.push(t); S.traceIdx.push(m); S.traceMeta.push({ kind: "points", pane: p, cat: c });
    });
    if (pane.anchors && pane.anchors.x.length) {
      const a = pane.anchors;
      const t = {
        type: is3d ? "scatter3d" : "scattergl", mode: "markers+text", x: a.x, y: a.y, text: a.text,
        textposition: "top center", textfont: { size: 12, color: "#111" },
        name: "class anchors (text)", legendgroup: "anchors", showlegend: p === 0,
        hovertemplate: "anchor: %{text}<extra></extra>",
        marker: { symbol: is3d ? "diamond" : "star", size: is3d ? 7 : 17, color: a.color, line: { color: "#000", width: 1.5 }, opacity: 1 },
      };
      if (is3d) { t.z = a.z; t.scene = "scene" + ax; } else { t.xaxis = "x" + ax; t.yaxis = "y" + ax; }
      traces.push(t); S.traceIdx.push(null); S.traceMeta.push({ kind: "anchors", pane: p });
    }
    if (is3d) { // shapes do not exist in 3-D scenes: the overlay is a trace there
      traces.push({ type: "scatter3d", mode: "markers", x: [], y: [], z: [], scene: "scene" + ax, hoverinfo: "skip", showlegend: false,
                    marker: { symbol: "circle-open", size: 9, color: "#000", line: { width: 2 } } });
      S.traceIdx.push(null); S.traceMeta.push({ kind: "overlay", pane: p });
    }
  });

  const layout = {
    height: P.height, margin: { l: 8, r: 8, t: 28, b: 8 }, hovermode: "closest",
    dragmode: is3d ? "orbit" : "lasso", uirevision: P.view_key, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff",
    legend: { orientation: "h", x: 0, y: -0.01, yanchor: "top", itemsizing: "constant", font: { size: 12 } },
    annotations: [], showlegend: true,
  };
  S.panes.forEach((pane, p) => {
    const ax = axisSuffix(p), dom = paneDomain(p, nP);
    const plain = { showticklabels: false, zeroline: false, showgrid: false, title: { text: "" } };
    if (is3d) {
      layout["scene" + ax] = { domain: { x: dom, y: [0, 1] }, aspectmode: "cube", xaxis: plain, yaxis: plain, zaxis: plain };
    } else {
      layout["xaxis" + ax] = Object.assign({ domain: dom, anchor: "y" + ax, showline: true, mirror: true, linecolor: "#ddd" }, plain);
      layout["yaxis" + ax] = Object.assign({ anchor: "x" + ax, scaleanchor: "x" + ax, showline: true, mirror: true, linecolor: "#ddd" }, plain);
    }
    layout.annotations.push({ text: "<b>" + pane.title + "</b>", xref: "paper", yref: "paper", x: (dom[0] + dom[1]) / 2, y: 1,
                              yanchor: "bottom", showarrow: false, font: { size: 14 } });
  });
  const config = { displaylogo: false, responsive: true, scrollZoom: true, showSendToCloud: false, modeBarButtonsToRemove: ["toImage", "sendChartToCloud"] };
  Plotly.react(gd, traces, layout, config).then(() => {
    S.drawn = true;
    listen();
    statusEl.textContent = P.status || "";
    applyOverlay(overlay); // the overlay refers to the new data: apply once the plot exists
    ST.height(document.body.scrollHeight + 4);
  });
}

function listen() {
  if (S.listening) return;
  S.listening = true;
  gd.on("plotly_hover", (ev) => {
    const pt = ev && ev.points && ev.points[0];
    if (!pt || !S.drawn) return;
    const meta = S.traceMeta[pt.curveNumber];
    if (!meta || meta.kind !== "points") return;
    const gi = S.traceIdx[pt.curveNumber][pt.pointIndex ?? pt.pointNumber];
    if (ev.event && ev.event.clientX !== undefined) S.mouse = { x: ev.event.clientX, y: ev.event.clientY };
    showTip(gi, meta.pane);
    hoverHighlight(gi);
  });
  gd.on("plotly_unhover", () => { tip.style.display = "none"; if (S.hoverRings.length) { S.hoverRings = []; drawRings(); } });
  gd.on("plotly_relayout", drawRings);   // zoom / pan / resize moved the points
  gd.on("plotly_relayout", syncCameras); // 3-D: a rotation in one pane turns them all
  gd.on("plotly_relayouting", drawRings);
  gd.on("plotly_afterplot", drawRings);
  gd.on("plotly_selected", (ev) => {
    if (!ev || !ev.points || !S.drawn) return;
    const chosen = new Set();
    const local = new Map(); // category -> trace-local indices
    let pane = null;
    for (const pt of ev.points) {
      const meta = S.traceMeta[pt.curveNumber];
      if (!meta || meta.kind !== "points") continue;
      pane = meta.pane;
      const li = pt.pointIndex ?? pt.pointNumber;
      chosen.add(S.ids[S.traceIdx[pt.curveNumber][li]]);
      if (!local.has(meta.cat)) local.set(meta.cat, []);
      local.get(meta.cat).push(li);
    }
    if (pane === null) return;
    setTimeout(() => linkSelection(local), 0); // after plotly has finished its own selection pass
    S.selection = { pane, ids: Array.from(chosen), seq: ++S.seq };
    sendValue();
  });
  gd.on("plotly_deselect", () => {
    if (!S.selection) return;
    setTimeout(() => linkSelection(null), 0);
    S.selection = null;
    sendValue();
  });
  gd.on("plotly_click", (ev) => {
    const pt = ev && ev.points && ev.points[0];
    if (!pt || !S.drawn) return;
    const meta = S.traceMeta[pt.curveNumber];
    if (!meta || meta.kind !== "points") return;
    const gi = S.traceIdx[pt.curveNumber][pt.pointIndex ?? pt.pointNumber];
    S.click = { pane: meta.pane, id: S.ids[gi], seq: ++S.seq };
    sendValue();
  });
}

function sendValue() { ST.value({ data_key: S.key, selection: S.selection, click: S.click }); }

// Brushing: points selected in one pane are selected in every pane. Points keep the same trace-local
// position in every pane (traces are per category, in global order), so the indices carry over. The
// source pane is restyled too: plotly's own selection state does not survive the restyle of the others.
function linkSelection(local) {
  const idx = [], sel = [];
  S.traceMeta.forEach((m, t) => {
    if (m.kind === "points") { idx.push(t); sel.push(local ? (local.get(m.cat) || []) : null); }
    else if (m.kind === "anchors") { idx.push(t); sel.push(null); }
  });
  if (idx.length) Plotly.restyle(gd, { selectedpoints: sel }, idx);
}

function showTip(gi, p) {
  const P = S.P, id = S.ids[gi], names = P.class_names;
  // Compare: each pane is a run with its own predictions; Explore: the before pane has the before model's own
  const preds = S.panes[p].noPreds ? null : (S.panes[p].preds || S.preds);
  if (P.thumbs) {
    const T = P.thumbs, sheet = Math.floor(id / T.per_sheet), j = id % T.per_sheet;
    const col = j % T.cols, row = Math.floor(j / T.cols);
    tipImg.style.display = "block";
    tipImg.style.backgroundImage = `url("${T.base}sheet-${sheet}.png")`;
    tipImg.style.backgroundSize = `${T.cols * TIP_SIZE}px ${T.cols * TIP_SIZE}px`;
    tipImg.style.backgroundPosition = `-${col * TIP_SIZE}px -${row * TIP_SIZE}px`;
  } else {
    tipImg.style.display = "none";
  }
  // Class names are the user's folder names: they only ever become text nodes, never markup.
  const head = document.createElement("div");
  head.append(`#${id} \u00b7 label `, el("b", "", names[S.labels[gi]] ?? S.labels[gi]));
  const lines = [head];
  if (preds && preds[gi] >= 0) {
    const ok = preds[gi] === S.labels[gi];
    const line = document.createElement("div");
    line.append("pred ", el("span", ok ? "right" : "wrong", `${names[preds[gi]] ?? preds[gi]} ${ok ? "\u2713" : "\u2717"}`));
    lines.push(line);
  }
  tipTxt.replaceChildren(...lines);
  tip.dataset.sampleId = String(id);
  tip.dataset.pane = String(p);
  tip.style.display = "block";
  placeTip();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = String(text);
  return node;
}

function placeTip() {
  const w = tip.offsetWidth, h = tip.offsetHeight, pad = 14;
  let x = S.mouse.x + pad, y = S.mouse.y + pad;
  if (x + w > window.innerWidth) x = S.mouse.x - w - pad;
  if (y + h > window.innerHeight) y = S.mouse.y - h - pad;
  tip.style.left = Math.max(0, x) + "px";
  tip.style.top = Math.max(0, y) + "px";
}

document.addEventListener("mousemove", (e) => {
  S.mouse = { x: e.clientX, y: e.clientY };
  if (tip.style.display === "block") placeTip();
});

// Rings (the hovered sample in every pane; the clicked sample and its neighbours) are drawn on our
// own SVG layer over the plot, never through Plotly.relayout: a relayout during or after a box /
// lasso drag would drop plotly's selection, and it would redraw 50k WebGL points on every hover.
const svg = document.getElementById("rings");

function drawRings() {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const L = gd._fullLayout;
  if (!L || !S.panes || S.P.dims === 3) return;
  svg.setAttribute("width", L.width); svg.setAttribute("height", L.height);
  const items = S.overlayRings.concat(S.hoverRings);
  for (const r of items) {
    const ax = axisSuffix(r.pane), xa = L["xaxis" + ax], ya = L["yaxis" + ax], pane = S.panes[r.pane];
    if (!xa || !ya) continue;
    const px = xa._offset + xa.l2p(pane.x[r.gi]), py = ya._offset + ya.l2p(pane.y[r.gi]);
    if (px < xa._offset || px > xa._offset + xa._length || py < ya._offset || py > ya._offset + ya._length) continue;
    const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    c.setAttribute("cx", px); c.setAttribute("cy", py); c.setAttribute("r", r.size);
    c.setAttribute("fill", "none"); c.setAttribute("stroke", r.color); c.setAttribute("stroke-width", r.width);
    svg.appendChild(c);
  }
}

// 3-D panes share one camera, so before/after (or CE/LaCViT/FLYP) are always seen from the same side,
// the way linked brushing keeps 2-D panes comparable. The relayout that copies the camera fires this
// handler again: `syncing` stops the echo.
function syncCameras(ev) {
  if (!ev || S.syncing || !S.P || S.P.dims !== 3) return;
  const source = Object.keys(ev).find((k) => /^scene\d*\.camera$/.test(k));
  if (!source) return;
  const update = {};
  S.panes.forEach((_, p) => {
    const key = "scene" + axisSuffix(p) + ".camera";
    if (key !== source) update[key] = ev[source];
  });
  if (!Object.keys(update).length) return;
  S.syncing = true;
  Plotly.relayout(gd, update).finally(() => { S.syncing = false; });
}

// The hovered sample, ringed in every pane: where did this image go after fine-tuning?
function hoverHighlight(gi) {
  S.hoverRings = S.panes.map((_, p) => ({ pane: p, gi, color: "#ff00aa", size: 9, width: 2.5 }));
  drawRings();
}

function applyOverlay(overlay) {
  const key = JSON.stringify(overlay || null);
  if (key === S.overlayKey) return;
  S.overlayKey = key;
  const centre = overlay && overlay.center !== undefined && overlay.center !== null ? S.idToIdx.get(overlay.center) : undefined;
  const others = ((overlay && overlay.ids) || []).map((id) => S.idToIdx.get(id)).filter((g) => g !== undefined);
  if (S.P.dims === 3) {
    const upd = { x: [], y: [], z: [] }, idx = [];
    S.traceMeta.forEach((m, t) => {
      if (m.kind !== "overlay") return;
      const pane = S.panes[m.pane], all = (centre !== undefined ? [centre] : []).concat(others);
      upd.x.push(all.map((g) => pane.x[g])); upd.y.push(all.map((g) => pane.y[g])); upd.z.push(all.map((g) => pane.z[g]));
      idx.push(t);
    });
    if (idx.length) Plotly.restyle(gd, upd, idx);
    return;
  }
  S.overlayRings = [];
  S.panes.forEach((_, p) => {
    others.forEach((gi) => S.overlayRings.push({ pane: p, gi, color: "#ff8f00", size: 7, width: 2 }));
    if (centre !== undefined) S.overlayRings.push({ pane: p, gi: centre, color: "#000", size: 10, width: 3 });
  });
  drawRings();
}

window.addEventListener("message", (ev) => {
  if (ev.source !== window.parent) return; // only the Streamlit page that embeds this frame may draw
  const d = ev.data;
  if (!d || d.type !== "streamlit:render") return;
  const args = d.args || {};
  const P = args.payload;
  if (!P) return;
  if (P.data_key !== S.key) {
    build(P, args.overlay);
  } else {
    applyOverlay(args.overlay);
    ST.height(document.body.scrollHeight + 4);
  }
});

ST.ready();
