// BraNet's web page: upload, result, saliency, ROI correction, feedback and history.
// Data from the service is always rendered with textContent (never innerHTML).

import * as api from "./api.js";
import {
  formatDate, formatNumber, initialLanguage, language, optionText, serviceText, setLanguage, t, valueText,
} from "./i18n.js";
import { Viewer } from "./viewer.js";

const CLASSES = ["normal", "benign", "malignant"];
const HISTORY_PAGE = 20;
// Fields of the upload form that are not analysis options (the form has its own controls for them).
const NOT_OPTIONS = new Set(["file", "modality", "extract_roi"]);

const $ = (id) => document.getElementById(id);

const state = {
  schema: null, // AnalysisRequest from /v1/openapi.json: the one source of the options' ranges
  feedbackSchema: null,
  file: null,
  analysis: null,
  history: [],
  historyTotal: 0,
  authMode: "local",
  firebase: null,
  objectUrls: [],
};

const viewer = new Viewer($("stage"), updatePromptSummary);

function show(element, visible) {
  element.hidden = !visible;
}

function say(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
  show(element, Boolean(text));
}

function make(tag, attributes = {}, text) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) element.setAttribute(name, value === true ? "" : String(value));
  }
  if (text !== undefined) element.textContent = text;
  return element;
}

// ---- The options, built from the OpenAPI document ----

function stepOf(property) {
  if (property.type === "integer") return 1;
  const span = property.maximum - property.minimum;
  return Number((span / 500).toPrecision(1));
}

function buildModalities() {
  const container = $("modality-options");
  const previous = container.querySelector("input:checked")?.value;
  container.replaceChildren();
  const modalities = state.schema.properties.modality.enum;
  modalities.forEach((modality, index) => {
    const input = make("input", { type: "radio", name: "modality", value: modality, id: `modality-${modality}` });
    input.checked = previous ? previous === modality : index === 0;
    const label = make("label", { for: `modality-${modality}` });
    label.append(input, " ", make("span", {}, t(modality)));
    container.append(label);
  });
}

function buildOptions() {
  const container = $("option-fields");
  const values = currentOptionValues();
  container.replaceChildren();
  for (const [name, property] of Object.entries(state.schema.properties)) {
    if (NOT_OPTIONS.has(name)) continue;
    const { label, help } = optionText(name, property.description);
    const id = `opt-${name}`;
    const field = make("div", { class: "field", "data-option": name });
    field.append(make("label", { for: id }, label));
    const inputs = make("div", { class: "inputs" });
    const value = values[name] ?? property.default;
    let range = "";
    if (property.enum) {
      const select = make("select", { id, name, "aria-describedby": `${id}-hint` });
      for (const choice of property.enum) select.append(make("option", { value: choice }, valueText(choice)));
      select.value = value;
      inputs.append(select);
      range = property.enum.map(valueText).join(", ");
    } else if (property.type === "integer" || property.type === "number") {
      const limits = { min: property.minimum, max: property.maximum, step: stepOf(property) };
      const number = make("input", { type: "number", id, name, ...limits, "aria-describedby": `${id}-hint`, inputmode: "decimal" });
      number.value = value;
      if (property.maximum - property.minimum <= 100) {
        const slider = make("input", { type: "range", ...limits, "aria-label": label, "aria-describedby": `${id}-hint`, "data-slider-for": name });
        slider.value = value;
        slider.addEventListener("input", () => { number.value = slider.value; });
        number.addEventListener("input", () => { slider.value = number.value; });
        inputs.append(slider);
      }
      inputs.append(number);
      range = `${formatNumber(property.minimum, 4)} – ${formatNumber(property.maximum, 4)}`;
    } else if (property.type === "boolean") {
      const box = make("input", { type: "checkbox", id, name, "aria-describedby": `${id}-hint` });
      box.checked = Boolean(value);
      inputs.append(box);
    }
    field.append(inputs);
    const defaultText = property.enum ? valueText(property.default) : property.default;
    const parts = [help, range, t("defaultValue", { value: defaultText })].filter(Boolean);
    field.append(make("p", { class: "hint", id: `${id}-hint` }, parts.join(" · ")));
    container.append(field);
  }
}

function currentOptionValues() {
  const values = {};
  for (const input of $("option-fields").querySelectorAll("[name]")) {
    values[input.name] = input.type === "checkbox" ? input.checked : input.value;
  }
  return values;
}

function resetOptions() {
  for (const input of $("option-fields").querySelectorAll("[name]")) {
    const property = state.schema.properties[input.name];
    if (input.type === "checkbox") input.checked = Boolean(property.default);
    else input.value = property.default;
  }
  for (const slider of $("option-fields").querySelectorAll("[data-slider-for]")) {
    slider.value = state.schema.properties[slider.dataset.sliderFor].default;
  }
}

// The options checked against the ranges of the OpenAPI document before anything is sent.
function optionsProblem() {
  for (const input of $("option-fields").querySelectorAll("input[type=number]")) {
    const property = state.schema.properties[input.name];
    const value = Number(input.value);
    if (input.value === "" || Number.isNaN(value) || value < property.minimum || value > property.maximum
        || (property.type === "integer" && !Number.isInteger(value))) {
      $("options-panel").open = true;
      input.focus();
      return `${optionText(input.name).label}: ${formatNumber(property.minimum, 4)} – ${formatNumber(property.maximum, 4)}`;
    }
  }
  return null;
}

// ---- Upload and analysis ----

function chooseFile(file) {
  state.file = file || null;
  $("file-name").textContent = file ? `${file.name} (${formatNumber(file.size / 1024, 0)} KB)` : t("noFile");
  $("analyse").disabled = !file;
}

async function submitAnalysis(event) {
  event.preventDefault();
  const error = $("upload-error");
  say(error, "");
  if (!state.file) return;
  const problem = optionsProblem();
  if (problem) {
    say(error, t("analysisFailed", { message: problem }), true);
    return;
  }
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  form.append("modality", document.querySelector("input[name=modality]:checked").value);
  form.append("extract_roi", $("extract-roi").checked ? "true" : "false");
  for (const [name, value] of Object.entries(currentOptionValues())) form.append(name, String(value));

  const button = $("analyse");
  button.disabled = true;
  const progress = $("progress");
  const bar = $("progress-bar");
  const text = $("progress-text");
  show(progress, true);
  bar.value = 0;
  text.textContent = t("uploading", { percent: 0 });
  const started = performance.now();
  let timer = null;
  const analysing = () => {
    bar.removeAttribute("value"); // indeterminate while the model works
    const tick = () => { text.textContent = t("analysing", { seconds: Math.round((performance.now() - started) / 1000) }); };
    tick();
    timer = setInterval(tick, 1000);
  };
  try {
    const analysis = await api.analyse(form, (fraction) => {
      if (fraction >= 1 && timer === null) analysing();
      else if (timer === null) {
        bar.value = fraction;
        text.textContent = t("uploading", { percent: Math.round(fraction * 100) });
      }
    });
    await showAnalysis(analysis, { focus: true });
    await loadHistory();
  } catch (failure) {
    say(error, t("analysisFailed", { message: failure.message }), true);
  } finally {
    clearInterval(timer);
    show(progress, false);
    button.disabled = !state.file;
  }
}

// ---- Result ----

function revokeImages() {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
}

async function showAnalysis(analysis, { focus = false } = {}) {
  state.analysis = analysis;
  show($("result"), true);
  renderSummary();
  revokeImages();
  const url = await api.imageUrl(analysis.images.original);
  state.objectUrls.push(url);
  await viewer.show(url, analysis);
  viewer.setOpacity($("opacity").value);
  $("brush").value = viewer.brush;
  $("brush-value").textContent = String(viewer.brush);
  show($("no-saliency"), !analysis.saliency);
  await renderRois();
  updatePromptSummary();
  say($("roi-status"), "");
  say($("feedback-status"), "");
  $("comment").value = "";
  const labelInput = document.querySelector(`input[name=feedback-label][value=${analysis.label}]`);
  if (labelInput) labelInput.checked = true;
  checkReport(analysis.id);
  markCurrentInHistory();
  if (focus) $("result-heading").focus();
}

function renderSummary() {
  const analysis = state.analysis;
  if (!analysis) return;
  const label = $("result-label");
  label.textContent = t(analysis.label);
  label.className = `result-label label-${analysis.label}`;
  $("risk-category").textContent = analysis.risk.birads_category;
  $("risk-likelihood").textContent = t("riskLikelihood", { range: analysis.risk.likelihood_of_malignancy });
  $("risk-caution").textContent = serviceText(analysis.risk.caution);
  const list = $("probabilities");
  list.replaceChildren();
  for (const name of CLASSES) {
    const p = analysis.probabilities[name] ?? 0;
    const item = make("li", { "data-class": name });
    const percent = `${formatNumber(p * 100, 1)} %`;
    item.append(make("span", { class: "prob-name" }, t(name)));
    const meter = make("meter", { min: 0, max: 1, value: p, "aria-label": `${t(name)} ${percent}` });
    item.append(meter, make("span", { class: "prob-value" }, percent));
    list.append(item);
  }
  let thresholdText = t("threshold", { threshold: formatNumber(analysis.threshold, 3), operatingPoint: valueText(analysis.operating_point) });
  const malignantRois = (analysis.rois || []).filter((roi) => roi.label === "malignant");
  if (analysis.label === "malignant" && (analysis.probabilities.malignant ?? 0) < analysis.threshold && malignantRois.length) {
    thresholdText += ` ${t("roiMalignant", { rois: malignantRois.map((roi) => roi.index + 1).join(", ") })}`;
  }
  $("threshold").textContent = thresholdText;
  const reliability = $("reliability");
  reliability.textContent = analysis.low_confidence ? `${t("lowConfidence")}: ${analysis.reliability_note}` : "";
  show(reliability, analysis.low_confidence);
  $("model-line").textContent = t("model", { name: analysis.model.name, version: analysis.model.version, ms: Math.round(analysis.duration_ms) });
  const count = (analysis.feedback || []).length;
  $("feedback-count").textContent = count ? t("feedbackCount", { n: count }) : "";
}

function describeRoi(roi) {
  return `ROI ${roi.index + 1}${roi.source === "correction" ? ` (${t("roiCorrection")})` : ""}: ${t(roi.label)}`;
}

async function renderRois() {
  const analysis = state.analysis;
  const list = $("roi-list");
  list.replaceChildren();
  const rois = analysis.rois;
  $("roi-empty").textContent = rois === null || rois === undefined ? t("noRois") : rois.length ? "" : t("noRoisFound");
  for (const roi of rois || []) {
    let text = t("roiItem", { n: roi.index + 1, label: t(roi.label), p: formatNumber(roi.probabilities.malignant ?? 0, 3), area: roi.area });
    if (roi.threshold !== null && roi.threshold !== undefined) text += t("roiThreshold", { threshold: formatNumber(roi.threshold, 3) });
    if (roi.area_mm2 !== null && roi.area_mm2 !== undefined) text += t("roiAreaMm", { mm: formatNumber(roi.area_mm2, 1) });
    if (roi.source === "correction") text += ` (${t("roiCorrection")})`;
    list.append(make("li", { class: `roi-${roi.label}` }, text));
  }
  const maskUrl = async (roi) => {
    const entry = Object.entries(roi.images || {}).find(([name]) => name.endsWith("_mask"));
    return entry ? api.imageUrl(entry[1]) : null;
  };
  await viewer.drawRois(rois || [], maskUrl, describeRoi);
  viewer.setContoursVisible($("show-contours").checked);
}

async function checkReport(id) {
  const link = $("report-link");
  const path = `/v1/analyses/${encodeURIComponent(id)}/report.html`;
  show(link, false);
  show($("report-missing"), false);
  const available = await api.exists(path).catch(() => false);
  if (state.analysis?.id !== id) return;
  link.href = path;
  show(link, available);
  show($("report-missing"), !available);
}

async function openReport(event) {
  if (state.authMode === "local") return; // the plain link works: no token needed
  event.preventDefault(); // Firebase mode: the report needs the bearer token
  const blob = await api.fetchBlob($("report-link").getAttribute("href"));
  window.open(URL.createObjectURL(blob), "_blank", "noopener");
}

// ---- Corrections ----

function updatePromptSummary() {
  const prompt = viewer.promptBody();
  const points = prompt?.points?.length || 0;
  $("prompt-summary").textContent = t("prompt", { points, box: prompt?.box ? t("promptBox") : t("promptNoBox") });
  $("correct-roi").disabled = !prompt || !state.analysis;
}

async function correctRoi() {
  const prompt = viewer.promptBody();
  if (!prompt || !state.analysis) return;
  const status = $("roi-status");
  const button = $("correct-roi");
  button.disabled = true;
  say(status, t("correcting"));
  try {
    const id = state.analysis.id;
    const roi = await api.request("POST", `/v1/analyses/${encodeURIComponent(id)}/roi`,
      { ...prompt, operating_point: state.analysis.operating_point });
    state.analysis = await api.getJson(`/v1/analyses/${encodeURIComponent(id)}`);
    renderSummary();
    await renderRois();
    viewer.clearPrompt();
    say(status, t("roiAdded", { label: t(roi.label) }));
    loadHistory();
  } catch (failure) {
    const messages = { 422: t("roiNone"), 501: t("roiUnavailable") };
    say(status, messages[failure.status] || t("roiFailed", { message: failure.message }), true);
  } finally {
    updatePromptSummary();
  }
}

async function sendFeedback(event) {
  event.preventDefault();
  if (!state.analysis) return;
  const status = $("feedback-status");
  const body = {
    label: document.querySelector("input[name=feedback-label]:checked")?.value || state.analysis.label,
    comment: $("comment").value,
  };
  const missed = viewer.maskPng("missed");
  const ignore = viewer.maskPng("ignore");
  if (missed) body.missed_lesions = { png: missed };
  if (ignore) body.ignore_regions = { png: ignore };
  $("send-feedback").disabled = true;
  try {
    const id = state.analysis.id;
    const stored = await api.request("POST", `/v1/analyses/${encodeURIComponent(id)}/feedback`, body);
    say(status, t("feedbackSent", { version: stored.version }));
    state.analysis = await api.getJson(`/v1/analyses/${encodeURIComponent(id)}`);
    renderSummary();
  } catch (failure) {
    say(status, t("feedbackFailed", { message: failure.message }), true);
  } finally {
    $("send-feedback").disabled = false;
  }
}

function buildFeedbackLabels() {
  const container = $("feedback-labels");
  const checked = container.querySelector("input:checked")?.value || state.analysis?.label;
  container.replaceChildren();
  for (const name of state.feedbackSchema?.properties?.label?.enum || CLASSES) {
    const input = make("input", { type: "radio", name: "feedback-label", value: name, id: `feedback-${name}` });
    input.checked = name === checked;
    const label = make("label", { for: `feedback-${name}` });
    label.append(input, " ", make("span", {}, t(name)));
    container.append(label);
  }
  const maxLength = state.feedbackSchema?.properties?.comment?.maxLength;
  if (maxLength) $("comment").maxLength = maxLength;
}

// ---- History ----

async function loadHistory({ append = false } = {}) {
  const status = $("history-status");
  try {
    const offset = append ? state.history.length : 0;
    const page = await api.getJson(`/v1/analyses?limit=${HISTORY_PAGE}&offset=${offset}`);
    state.history = append ? state.history.concat(page.items) : page.items;
    state.historyTotal = page.total;
    renderHistory();
  } catch (failure) {
    say(status, t("historyFailed", { message: failure.message }), true);
  }
}

function renderHistory() {
  const list = $("history-list");
  list.replaceChildren();
  $("history-status").classList.remove("error");
  $("history-status").textContent = state.history.length ? "" : t("historyEmpty");
  for (const item of state.history) {
    const entry = make("li", { "data-id": item.id });
    const summary = `${formatDate(item.created_at)} · ${t(item.modality)} · ${t(item.label)} · ${item.risk.birads_category}`;
    const open = make("button", { type: "button", class: "history-open" });
    open.append(make("span", { class: `dot label-${item.label}`, "aria-hidden": "true" }), make("span", {}, summary));
    open.addEventListener("click", () => openAnalysis(item.id));
    const remove = make("button", { type: "button", class: "danger", "aria-label": `${t("delete")}: ${summary}` }, t("delete"));
    remove.addEventListener("click", () => deleteAnalysis(item.id));
    entry.append(open, remove);
    list.append(entry);
  }
  show($("history-more"), state.history.length < state.historyTotal);
  markCurrentInHistory();
}

function markCurrentInHistory() {
  for (const entry of $("history-list").children) {
    const current = entry.dataset.id === state.analysis?.id;
    entry.classList.toggle("current", current);
    const button = entry.querySelector(".history-open");
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

async function openAnalysis(id) {
  try {
    await showAnalysis(await api.getJson(`/v1/analyses/${encodeURIComponent(id)}`), { focus: true });
  } catch (failure) {
    say($("history-status"), failure.message, true);
  }
}

async function deleteAnalysis(id) {
  if (!window.confirm(t("confirmDelete"))) return;
  try {
    await api.request("DELETE", `/v1/analyses/${encodeURIComponent(id)}`);
    if (state.analysis?.id === id) {
      state.analysis = null;
      show($("result"), false);
      revokeImages();
    }
    await loadHistory();
    say($("history-status"), t("deleted"));
    $("history-heading").focus?.();
  } catch (failure) {
    say($("history-status"), failure.message, true);
  }
}

// ---- Language ----

function applyLanguage(lang) {
  setLanguage(lang);
  $("language").value = language();
  if (state.schema) {
    buildModalities();
    buildOptions();
  }
  buildFeedbackLabels();
  chooseFile(state.file);
  renderAccount();
  if (state.analysis) {
    renderSummary();
    renderRois();
    updatePromptSummary();
  }
  renderHistory();
}

// ---- Sign-in ----

function renderAccount() {
  const status = $("account-status");
  if (state.authMode === "local") status.textContent = t("localMode");
  else status.textContent = state.firebase?.user ? t("signedInAs", { email: state.firebase.user.email || state.firebase.user.uid }) : "";
  show($("sign-out"), Boolean(state.firebase?.user));
}

async function startFirebase(config) {
  if (!config.firebase_bundle) {
    say($("notice"), t("bundleMissing"), true);
    return false;
  }
  const sdk = await import(config.firebase_bundle);
  const session = sdk.startAuth(config.firebase);
  state.firebase = { sdk, session, user: null };
  api.setTokenProvider(async () => (state.firebase.user ? sdk.idToken(session) : null));
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    say($("sign-in-error"), "");
    try {
      await sdk.signIn(session, $("email").value, $("password").value);
    } catch (failure) {
      say($("sign-in-error"), t("signInFailed", { message: failure.code || failure.message }), true);
    }
  });
  $("sign-out").addEventListener("click", () => sdk.signOut(session));
  sdk.onUser(session, async (user) => {
    state.firebase.user = user;
    renderAccount();
    show($("sign-in"), !user);
    show($("app"), Boolean(user));
    state.analysis = null;
    show($("result"), false);
    state.history = [];
    renderHistory();
    if (user) await loadHistory();
  });
  return true;
}

// ---- Start ----

async function start() {
  applyLanguage(initialLanguage());
  $("language").addEventListener("change", (event) => applyLanguage(event.target.value));
  let config;
  try {
    config = await (await fetch("/web/config.json")).json();
    const openapi = await (await fetch("/v1/openapi.json")).json();
    state.schema = openapi.components.schemas.AnalysisRequest;
    state.feedbackSchema = openapi.components.schemas.FeedbackRequest;
  } catch (failure) {
    say($("notice"), t("serviceNotReady", { message: failure.message }), true);
    return;
  }
  state.authMode = config.auth_mode;
  buildModalities();
  buildOptions();
  buildFeedbackLabels();
  wireEvents();
  renderAccount();
  if (config.auth_mode === "firebase") {
    await startFirebase(config);
  } else {
    show($("app"), true);
    await loadHistory();
  }
  document.body.dataset.ready = "true";
}

function wireEvents() {
  const fileInput = $("file");
  fileInput.addEventListener("change", () => chooseFile(fileInput.files[0]));
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) zone.addEventListener(name, () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (file) chooseFile(file);
  });
  $("upload-form").addEventListener("submit", submitAnalysis);
  $("reset-options").addEventListener("click", resetOptions);
  const opacity = $("opacity");
  opacity.addEventListener("input", () => {
    viewer.setOpacity(opacity.value);
    $("opacity-value").textContent = `${Math.round(opacity.value * 100)}%`;
  });
  $("show-contours").addEventListener("change", (event) => viewer.setContoursVisible(event.target.checked));
  for (const radio of document.querySelectorAll("input[name=tool]")) {
    radio.addEventListener("change", () => viewer.setTool(radio.value));
  }
  const brush = $("brush");
  brush.addEventListener("input", () => {
    viewer.setBrush(brush.value);
    $("brush-value").textContent = brush.value;
  });
  $("correct-roi").addEventListener("click", correctRoi);
  $("clear-prompt").addEventListener("click", () => viewer.clearPrompt());
  $("clear-paint").addEventListener("click", () => viewer.clearPaint());
  $("feedback-form").addEventListener("submit", sendFeedback);
  $("history-more").addEventListener("click", () => loadHistory({ append: true }));
  $("report-link").addEventListener("click", openReport);
}

start();
