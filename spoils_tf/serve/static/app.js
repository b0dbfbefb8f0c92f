// The upload page of `spoils serve` (spoils_tf/serve/web.py): builds the ODI questionnaire
// from /api/config, previews the ODI, posts the form to /api/report and shows the report page
// it returns, or the server's error message. The server checks everything again.
"use strict";

const form = document.getElementById("report-form");
const errorBox = document.getElementById("error");
const busy = document.getElementById("busy");
const submit = document.getElementById("submit");
let config = null;

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.textContent = "";
  errorBox.hidden = true;
}

function sectionsMode() {
  return document.getElementById("odi-mode-sections").checked;
}

function updateMode() {
  document.getElementById("odi-sections").hidden = !sectionsMode();
  document.getElementById("odi-percent-row").hidden = sectionsMode();
}

// The same rule as spoils_tf/clinical/odi.py: total / (5 x answered) x 100.
function updatePreview() {
  if (!config) return;
  const max = config.odi_max_section_score;
  const scores = config.odi_sections.map((_, k) =>
    document.getElementById("odi_section_" + (k + 1)).value);
  const answered = scores.filter((v) => v !== "").map(Number);
  const total = answered.reduce((a, b) => a + b, 0);
  const preview = document.getElementById("odi-preview");
  if (answered.length < config.odi_min_answered) {
    preview.textContent = answered.length + " of " + scores.length + " sections answered; at " +
      "least " + config.odi_min_answered + " are needed.";
  } else {
    const odi = total / (max * answered.length) * 100;
    preview.textContent = "ODI " + odi.toFixed(1) + " % = " + total + " / (" + max + " \u00d7 " +
      answered.length + ") \u00d7 100";
  }
}

function buildSections() {
  const rows = document.getElementById("odi-section-rows");
  config.odi_sections.forEach((name, k) => {
    const id = "odi_section_" + (k + 1);
    const tr = document.createElement("tr");
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = (k + 1) + ". " + name;
    const select = document.createElement("select");
    select.id = id;
    select.name = id;
    const blank = document.createElement("option");
    blank.value = "";
    blank.textContent = "not answered";
    select.appendChild(blank);
    for (let s = 0; s <= config.odi_max_section_score; s++) {
      const opt = document.createElement("option");
      opt.value = String(s);
      opt.textContent = String(s);
      select.appendChild(opt);
    }
    select.addEventListener("change", updatePreview);
    const td1 = document.createElement("td");
    const td2 = document.createElement("td");
    td1.appendChild(label);
    td2.appendChild(select);
    tr.appendChild(td1);
    tr.appendChild(td2);
    rows.appendChild(tr);
  });
  document.getElementById("odi-rule").textContent =
    "Each section 0 (no problem) to " + config.odi_max_section_score + " (worst). ODI = " +
    "sum of the answered sections / (" + config.odi_max_section_score + " \u00d7 number " +
    "answered) \u00d7 100; an unanswered section is left out; at least " +
    config.odi_min_answered + " of " + config.odi_sections.length + " must be answered.";
  updatePreview();
}

async function init() {
  const resp = await fetch("/api/config");
  config = await resp.json();
  document.getElementById("limit-note").textContent =
    "Accepted: " + config.accepted + ". Largest upload: " + config.max_upload + ".";
  buildSections();
  document.getElementById("odi-mode-percent").addEventListener("change", updateMode);
  document.getElementById("odi-mode-sections").addEventListener("change", updateMode);
  updateMode();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const data = new FormData(form);
  data.delete("odi_mode");
  if (sectionsMode()) {
    data.delete("odi");
  } else if (config) {
    config.odi_sections.forEach((_, k) => data.delete("odi_section_" + (k + 1)));
  }
  let bytes = 0;
  for (const [, value] of data.entries()) {
    if (value instanceof File) bytes += value.size;
  }
  if (config && bytes > config.max_upload_bytes) {
    showError("The files chosen (" + (bytes / 1e6).toFixed(1) + " MB) are larger than the " +
      "limit of " + config.max_upload + "; upload one series, or a smaller file.");
    return;
  }
  submit.disabled = true;
  busy.hidden = false;
  try {
    const resp = await fetch("/api/report", {method: "POST", body: data});
    if (resp.ok) {
      const page = await resp.text();
      document.open();
      document.write(page);
      document.close();
      return;
    }
    let message = "The server refused the request (HTTP " + resp.status + ").";
    try {
      const body = await resp.json();
      if (body && body.error) message = body.error;
    } catch (e) { /* not JSON: keep the status line */ }
    showError(message);
  } catch (e) {
    showError("The server could not be reached (" + e + "). Is `spoils serve` still running?");
  } finally {
    submit.disabled = false;
    busy.hidden = true;
  }
});

init().catch((e) => showError("The page could not load its settings (" + e + ")."));
