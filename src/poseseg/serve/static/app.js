// poseseg's page: send pictures to POST /predict, draw the JSON on a canvas. Plain JS, no build step.
// Filtering by score and switching layers redraw from the JSON already received: no new request.
"use strict";

const LEFT = [30, 144, 255], RIGHT = [255, 69, 0], CENTER = [50, 205, 50];  // as poseseg.visualize
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
const state = { info: null, items: [], current: -1, requests: 0 };
window.poseseg = state;  // for the browser test and for curious users

// ---------------------------------------------------------------- server

function headers() {
  const key = localStorage.getItem("poseseg-api-key");
  return key ? { "X-API-Key": key } : {};
}

async function loadInfo() {
  const response = await fetch("/info", { headers: headers() });
  if (response.status === 401) {
    $("key-row").hidden = false;
    $("model-info").textContent = "this server needs an API key";
    return;
  }
  state.info = await response.json();
  const m = state.info.model;
  $("model-info").textContent = `${m.backbone}, heads ${m.heads.join(" + ")}, on ${state.info.device}` +
    ` (poseseg ${state.info.version})`;
  setThreshold(state.info.score_thresh);
}

async function predict(item) {
  const form = new FormData();
  form.append("image", item.file, item.file.name);
  const low = state.info ? state.info.min_score_thresh : 0;  // everything: the slider filters locally
  state.requests += 1;
  const response = await fetch(`/predict?format=simple&score_thresh=${low}`,
                               { method: "POST", body: form, headers: headers() });
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status}: ${body.message || body.error}`);
  return body;
}

// ---------------------------------------------------------------- pictures in

async function addFiles(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/") || !f.type);
  if (!images.length) return status("Those files are not pictures.", "error");
  const added = images.map((file) => ({ file, name: file.name, result: null, error: null, bitmap: null, masks: [] }));
  state.items.push(...added);
  select(state.items.length - added.length);
  document.body.dataset.state = "busy";
  status(`Running the model on ${added.length} picture(s)…`);
  await Promise.all(added.map(async (item) => {  // sent together: the server batches them
    const [bitmap, result] = await Promise.allSettled([loadBitmap(item.file), predict(item)]);
    if (result.status === "rejected") item.error = result.reason.message;  // the server says what is wrong
    else if (bitmap.status === "rejected") item.error = bitmap.reason.message;
    else {
      [item.bitmap, item.result] = [bitmap.value, result.value];
      item.masks = item.result.people.map(() => null);
    }
    renderGallery();
    if (state.items[state.current] === item) render();
  }));
  const failed = added.filter((i) => i.error);
  document.body.dataset.state = failed.length ? "error" : "ready";
  status(failed.length ? `Failed: ${failed.map((i) => `${i.name} (${i.error})`).join("; ")}`
                       : "Done. Move the slider or switch layers; hover a keypoint for its name.");
}

function loadBitmap(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this picture"));
    img.src = URL.createObjectURL(file);
  });
}

// ---------------------------------------------------------------- drawing

function personColor(i) {  // golden-ratio hue steps, as poseseg.visualize.person_color
  const h = (0.11 + i * 0.618033988749895) % 1, s = 0.85, v = 0.95;
  const k = (n) => (n + h * 6) % 6;
  const f = (n) => v - v * s * Math.max(0, Math.min(k(n), 4 - k(n), 1));
  return [f(5), f(3), f(1)].map((c) => Math.round(c * 255));
}

function side(name) {
  const n = name.toLowerCase();
  if (n.startsWith("left") || n.startsWith("l_") || n.endsWith("_left") || n.endsWith("_l")) return "left";
  if (n.startsWith("right") || n.startsWith("r_") || n.endsWith("_right") || n.endsWith("_r")) return "right";
  return "center";
}

function limbColor(names, a, b) {
  const sides = new Set([side(names[a]), side(names[b])]);
  if (sides.has("left") && !sides.has("right")) return LEFT;
  if (sides.has("right") && !sides.has("left")) return RIGHT;
  return CENTER;
}

const rgb = (c, alpha = 1) => `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${alpha})`;

// COCO's compressed RLE string -> run lengths (pycocotools' rleFrString), column-major.
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function maskLayer(mask, color) {  // an off-screen canvas: the mask's pixels in colour at 45 % opacity
  const [h, w] = mask.size;
  const layer = document.createElement("canvas");
  layer.width = w; layer.height = h;
  const lctx = layer.getContext("2d"), data = lctx.createImageData(w, h), px = data.data;
  let index = 0, on = false;
  for (const run of rleCounts(mask.counts)) {
    if (on) {
      for (let i = index; i < index + run; i++) {
        const x = Math.floor(i / h), y = i - x * h, o = (y * w + x) * 4;
        px[o] = color[0]; px[o + 1] = color[1]; px[o + 2] = color[2]; px[o + 3] = 115;
      }
    }
    index += run; on = !on;
  }
  lctx.putImageData(data, 0, 0);
  return layer;
}

function threshold() { return parseFloat($("score").value); }
function keypointThreshold() { return parseFloat($("keypoint-score").value); }  // 0.2 as poseseg.visualize

function render() {
  const item = state.items[state.current];
  if (!item || !item.bitmap) return;
  const { bitmap, result } = item;
  canvas.width = bitmap.naturalWidth; canvas.height = bitmap.naturalHeight;
  ctx.drawImage(bitmap, 0, 0);
  const people = result.people, names = (result.keypoint_schema || { names: [] }).names;
  const skeleton = (result.keypoint_schema || { skeleton: [] }).skeleton;
  const scale = Math.max(canvas.width, canvas.height) / 640;
  const shown = people.map((p, i) => [p, i]).filter(([p]) => p.score >= threshold());
  if ($("show-masks").checked) {
    for (const [p, i] of shown) {
      if (!p.mask) continue;
      item.masks[i] = item.masks[i] || maskLayer(p.mask, personColor(i));
      ctx.drawImage(item.masks[i], 0, 0);
    }
  }
  for (const [p, i] of shown) {
    const [x1, y1, x2, y2] = p.box, color = personColor(i);
    if ($("show-boxes").checked) {
      ctx.lineWidth = Math.max(1, 2 * scale) + 2; ctx.strokeStyle = "black";
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.lineWidth = Math.max(1, 2 * scale); ctx.strokeStyle = rgb(color);
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    if ($("show-skeletons").checked && p.keypoints) drawSkeleton(p.keypoints, names, skeleton, scale, p.keypoint_visibility);
    if ($("show-labels").checked) {
      const size = Math.max(10, Math.round(13 * scale)), text = p.score.toFixed(2);
      ctx.font = `${size}px sans-serif`;
      const tw = ctx.measureText(text).width + 4, th = size + 4;
      const ly = y1 - th >= 0 ? y1 - th : y1;
      ctx.fillStyle = rgb(color); ctx.fillRect(x1, ly, tw, th);
      ctx.fillStyle = "black"; ctx.fillText(text, x1 + 2, ly + size);
    }
  }
  canvas.dataset.shown = shown.length;
  canvas.dataset.total = people.length;
  $("counts").textContent = `${shown.length} of ${people.length} people at score ≥ ${threshold().toFixed(2)}`;
}

// flags (the visibility head's, when the model has one): 0 not labelled (hidden), 1 occluded (hollow), 2 visible
function drawSkeleton(keypoints, names, skeleton, scale, flags) {
  const visible = keypoints.map((k, j) => k[2] >= keypointThreshold() && (!flags || flags[j] > 0));
  ctx.lineCap = "round";
  for (const [a, b] of skeleton) {
    if (!visible[a] || !visible[b]) continue;
    for (const [width, color] of [[3 * scale + 3, "black"], [3 * scale, rgb(limbColor(names, a, b))]]) {
      ctx.lineWidth = Math.max(2, width); ctx.strokeStyle = color;
      ctx.beginPath(); ctx.moveTo(keypoints[a][0], keypoints[a][1]); ctx.lineTo(keypoints[b][0], keypoints[b][1]);
      ctx.stroke();
    }
  }
  keypoints.forEach((k, j) => {
    if (!visible[j]) return;
    const s = side(names[j] || ""), color = s === "left" ? LEFT : s === "right" ? RIGHT : CENTER;
    ctx.beginPath(); ctx.arc(k[0], k[1], Math.max(2, 3.5 * scale), 0, 2 * Math.PI);
    if (flags && flags[j] === 1) { ctx.lineWidth = 2; ctx.strokeStyle = rgb(color); ctx.stroke(); return; }
    ctx.fillStyle = rgb(color); ctx.fill(); ctx.lineWidth = 1; ctx.strokeStyle = "black"; ctx.stroke();
  });
}

// ---------------------------------------------------------------- hover, gallery, controls

function hover(event) {
  const item = state.items[state.current], tip = $("tooltip");
  if (!item || !item.result) { tip.hidden = true; return; }
  const rect = canvas.getBoundingClientRect(), k = canvas.width / rect.width;
  const x = (event.clientX - rect.left) * k, y = (event.clientY - rect.top) * k;
  const names = (item.result.keypoint_schema || { names: [] }).names;
  let best = null, bestDistance = 10 * k;  // within 10 screen pixels
  item.result.people.forEach((p, i) => {
    if (p.score < threshold() || !p.keypoints || !$("show-skeletons").checked) return;
    p.keypoints.forEach((kp, j) => {
      const d = Math.hypot(kp[0] - x, kp[1] - y);
      if (kp[2] >= keypointThreshold() && d < bestDistance) { best = { i, j, p, kp }; bestDistance = d; }
    });
  });
  if (!best) { tip.hidden = true; return; }
  tip.textContent = `${names[best.j] || `keypoint ${best.j}`} ${best.kp[2].toFixed(2)} · person ${best.i + 1} ` +
                    `(score ${best.p.score.toFixed(2)})`;
  tip.style.left = `${event.clientX - rect.left}px`; tip.style.top = `${event.clientY - rect.top}px`;
  tip.hidden = false;
}

function select(index) {
  state.current = index;
  renderGallery();
  render();
}

function renderGallery() {
  const list = $("gallery");
  list.replaceChildren(...state.items.map((item, i) => {
    const li = document.createElement("li");
    li.textContent = item.error ? `${item.name}: failed` :
      item.result ? `${item.name} (${item.result.people.length})` : `${item.name}…`;
    li.title = item.error || item.name;
    li.className = (i === state.current ? "current " : "") + (item.error ? "error" : "");
    li.onclick = () => select(i);
    return li;
  }));
  const item = state.items[state.current];
  $("download").disabled = !(item && item.result);
}

function download() {
  const item = state.items[state.current];
  const blob = new Blob([JSON.stringify(item.result, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = item.name.replace(/\.[^.]+$/, "") + ".poseseg.json";
  a.click();
  URL.revokeObjectURL(a.href);
}

function setThreshold(value) {
  $("score").value = value;
  $("score-value").textContent = Number(value).toFixed(2);
  render();
}

function status(text, kind) {
  $("status").textContent = text;
  if (kind) document.body.dataset.state = kind;
}

$("file").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("score").addEventListener("input", (e) => setThreshold(e.target.value));
$("keypoint-score").addEventListener("input", (e) => {
  $("keypoint-value").textContent = Number(e.target.value).toFixed(2);
  render();
});
for (const id of ["show-masks", "show-boxes", "show-skeletons", "show-labels"]) $(id).addEventListener("change", render);
$("download").addEventListener("click", download);
$("api-key").addEventListener("change", (e) => { localStorage.setItem("poseseg-api-key", e.target.value); loadInfo(); });
canvas.addEventListener("mousemove", hover);
canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
loadInfo().catch((e) => status(`Cannot reach the server: ${e.message}`, "error"));
