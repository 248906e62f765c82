// The counter kiosk page: polls the agent's /api/state each second and posts staff actions.
// Everything is served by the agent itself (CSP default-src 'self'); no inline script.
"use strict";

const TEXT = {
  ja: {
    idle_title: "録音の準備", start: "告知を表示して開始", recheck: "再確認",
    given: "告知済み・録音開始", objects: "お客様が拒否", cancel: "戻る", other_lang: "English notice",
    rec: "録音中", stop: "停止", incident: "インシデント", help: "応援を呼ぶ",
    checking: "準備を確認しています…", not_ready: "開始できません: ",
    spoken_playing: "告知を音声で再生中です", spoken_done: "告知を音声で再生しました",
    spoken_failed: "音声を再生できません。告知を読み上げてください", spoken_no: "告知を読み上げてください",
    uploaded: (s, w) => `送信済み ${s} 区間 / 待機 ${w} 区間`,
    offline: "オフライン: サーバーに接続できません。録音は端末に保存され、復旧後に自動送信されます。",
    waiting_spool: (n) => `端末に未送信の区間が ${n} 件あります (自動送信します)`,
    incident_flagged: (c) => `インシデントとして登録しました: ${c}`,
    alert_sending: "応援要請を送信中… (まだ届いていません)",
    alert_open: "応援を要請しました。応答を待っています…",
    alert_escalated: (t) => `応答がないため上位の担当者 (段階 ${t}) に連絡しました。待っています…`,
    alert_acknowledged: (who, msg) => `応答あり: ${who || ""} ${msg || ""}`,
    alert_unavailable: "このサーバーは応援要請に対応していません。電話で上長に連絡してください。",
    alert_failed: "応援要請が拒否されました。電話で上長に連絡してください。",
    last_recorded: (n, s) => `録音を終了しました (${n} 区間, ${s} 秒)。`,
    last_objected: "拒否を記録しました。録音はしていません。",
    last_interrupted: "録音が中断されました。録音済みの部分は保存されています。",
    last_sent: "サーバーへ送信済みです。", last_waiting: "未送信分は自動で送信されます。",
    device: (d, s) => `端末 ${d} · 拠点 ${s}`,
  },
  en: {
    idle_title: "Ready to record", start: "Show notice and start", recheck: "Check again",
    given: "Notice given, start", objects: "Customer objects", cancel: "Back", other_lang: "日本語の告知",
    rec: "REC", stop: "Stop", incident: "Incident", help: "Call for help",
    checking: "Checking readiness…", not_ready: "Cannot start: ",
    spoken_playing: "The notice is being read aloud", spoken_done: "The notice was read aloud",
    spoken_failed: "The audio cannot be played: read the notice to the customer",
    spoken_no: "Read the notice to the customer",
    uploaded: (s, w) => `Sent ${s} segments / waiting ${w}`,
    offline: "Offline: the server cannot be reached. The recording is kept on this PC and sent when it returns.",
    waiting_spool: (n) => `${n} segments wait on this PC (sent automatically)`,
    incident_flagged: (c) => `Flagged as an incident: ${c}`,
    alert_sending: "Sending the call for help… (not delivered yet)",
    alert_open: "Help has been called. Waiting for an answer…",
    alert_escalated: (t) => `No answer yet: escalated to the next supervisor (tier ${t}). Waiting…`,
    alert_acknowledged: (who, msg) => `Answered: ${who || ""} ${msg || ""}`,
    alert_unavailable: "This service does not take help alerts: phone your supervisor.",
    alert_failed: "The call for help was refused: phone your supervisor.",
    last_recorded: (n, s) => `Recording stopped (${n} segments, ${s} s).`,
    last_objected: "The objection was logged. Nothing was recorded.",
    last_interrupted: "The recording was interrupted; what was recorded is kept.",
    last_sent: "Sent to the server.", last_waiting: "What is not sent yet goes automatically.",
    device: (d, s) => `device ${d} · site ${s}`,
  },
};

let lang = localStorage.getItem("countersign-kiosk-lang") === "en" ? "en" : "ja";
let snapshot = null;
let lastState = null;
let categoriesKey = "";
const $ = (id) => document.getElementById(id);

function t(key, ...args) {
  const value = TEXT[lang][key];
  return typeof value === "function" ? value(...args) : value;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function show(el, visible) {
  if (el.hidden === visible) el.hidden = !visible;
}

function clock(seconds) {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(r).padStart(2, "0")}`;
}

function showMessage(message) {
  const box = $("message");
  show(box, Boolean(message));
  if (message) setText(box, message[lang] || message.en || "");
}

async function post(path, body) {
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json();
    if (response.ok) {
      showMessage(null);
      render(data);
    } else {
      showMessage(data);
    }
  } catch (err) {
    showMessage({ ja: "エージェントに接続できません", en: "The agent does not answer" });
  }
}

function renderStatic() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => setText(el, t(el.dataset.i18n)));
  const toggle = $("lang-toggle");
  setText(toggle, lang === "ja" ? "English" : "日本語");
  toggle.lang = lang === "ja" ? "en" : "ja";
  categoriesKey = "";  // relabel the category buttons
}

function renderChecks(s) {
  const list = $("checks");
  const wanted = s.checks.map((c) => c.name).join(",");
  if (list.dataset.names !== wanted) {
    list.replaceChildren(...s.checks.map((c) => {
      const li = document.createElement("li");
      li.dataset.check = c.name;
      return li;
    }));
    list.dataset.names = wanted;
  }
  s.checks.forEach((c, i) => {
    const li = list.children[i];
    li.dataset.state = c.state;
    setText(li, c[lang]);
  });
  const failing = s.checks.filter((c) => c.state === "fail").map((c) => c[lang]);
  const start = $("start");
  start.disabled = !s.ready;
  let why = "";
  if (!s.ready) why = failing.length ? t("not_ready") + failing.join(" ") : t("checking");
  setText($("why"), why);
  start.setAttribute("aria-describedby", "why");
}

function renderLast(s) {
  const box = $("last");
  const last = s.last;
  show(box, Boolean(last) && s.state === "stopped");
  if (!last) return;
  let text;
  if (last.outcome === "objected") text = t("last_objected");
  else if (last.outcome === "interrupted") text = t("last_interrupted");
  else text = t("last_recorded", last.segments, last.seconds);
  const waiting = s.upload.waiting_segments;
  if (last.outcome !== "objected") text += " " + (waiting ? t("last_waiting") : t("last_sent"));
  setText(box, text);
}

function renderCategories(s) {
  const key = lang + JSON.stringify(s.categories);
  if (key === categoriesKey) return;
  categoriesKey = key;
  const box = $("categories");
  box.replaceChildren(...s.categories.map((c) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.code = c.code;
    b.textContent = c[lang] || c.code;
    b.addEventListener("click", () => {
      show(box, false);
      $("incident").setAttribute("aria-expanded", "false");
      post("/api/incident", { category: c.code });
      $("stop").focus();
    });
    return b;
  }));
}

function renderRecording(s) {
  const r = s.recording;
  if (!r) return;
  setText($("elapsed"), clock(r.elapsed));
  setText($("upload"), t("uploaded", r.sent, r.waiting));
  const offline = s.upload.online === false;
  show($("offline"), offline);
  if (offline) setText($("offline"), t("offline"));
  const flag = $("incident-flag");
  show(flag, Boolean(r.incident));
  if (r.incident) {
    const c = s.categories.find((x) => x.code === r.incident);
    setText(flag, t("incident_flagged", c ? c[lang] : r.incident));
  }
  renderCategories(s);
}

function renderNotice(s) {
  const n = s.notice;
  if (!n) return;
  setText($("notice-title"), n.title);
  setText($("notice-text"), n.text);
  $("notice-text").lang = n.language;
  $("notice-title").lang = n.language;
  setText($("notice-spoken"), t("spoken_" + n.spoken));
  setText($("notice-lang"), n.language === "ja" ? "English notice" : "日本語の告知");
  $("notice-lang").dataset.language = n.language === "ja" ? "en" : "ja";
}

function renderAlert(s) {
  const box = $("alert-status");
  const a = s.alert;
  show(box, Boolean(a));
  if (!a) return;
  box.dataset.state = a.state;
  let text;
  if (a.state === "escalated") text = t("alert_escalated", a.tier || 2);
  else if (a.state === "acknowledged") text = t("alert_acknowledged", a.acknowledged_by, a.message);
  else text = t("alert_" + a.state) || a.state;
  setText(box, text);
}

function render(s) {
  snapshot = s;
  document.body.dataset.state = s.state;
  setText($("device"), t("device", s.device.id, s.device.site));
  show($("idle"), s.state === "idle" || s.state === "stopped");
  show($("notice"), s.state === "notice");
  show($("recording"), s.state === "recording");
  renderChecks(s);
  renderLast(s);
  renderNotice(s);
  renderRecording(s);
  renderAlert(s);
  if (s.state !== lastState) {
    // Keyboard users land on the step's main action.
    const focus = { idle: "start", stopped: "start", notice: "given", recording: "stop" }[s.state];
    const el = focus && $(focus);
    if (el && !el.disabled) el.focus();
    if (s.state !== "recording") { show($("categories"), false); $("incident").setAttribute("aria-expanded", "false"); }
    lastState = s.state;
  } else if (s.state === "idle" && s.ready && document.activeElement === document.body) {
    $("start").focus();
  }
}

async function poll() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (response.ok) render(await response.json());
  } catch (err) {
    showMessage({ ja: "エージェントに接続できません", en: "The agent does not answer" });
  }
  setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  renderStatic();
  $("lang-toggle").addEventListener("click", () => {
    lang = lang === "ja" ? "en" : "ja";
    localStorage.setItem("countersign-kiosk-lang", lang);
    renderStatic();
    if (snapshot) render(snapshot);
  });
  $("start").addEventListener("click", () => post("/api/start", { language: lang }));
  $("recheck").addEventListener("click", () => post("/api/recheck"));
  $("given").addEventListener("click", () => post("/api/decide", { outcome: "given" }));
  $("objects").addEventListener("click", () => post("/api/decide", { outcome: "objected" }));
  $("cancel").addEventListener("click", () => post("/api/cancel"));
  $("notice-lang").addEventListener("click", (e) => post("/api/start", { language: e.target.dataset.language }));
  $("stop").addEventListener("click", () => post("/api/stop"));
  $("incident").addEventListener("click", () => {
    const box = $("categories");
    show(box, box.hidden);
    $("incident").setAttribute("aria-expanded", String(!box.hidden));
    if (!box.hidden && box.firstChild) box.firstChild.focus();
  });
  $("categories").addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;  // keyboard users close the list without choosing
    show($("categories"), false);
    $("incident").setAttribute("aria-expanded", "false");
    $("incident").focus();
  });
  $("help").addEventListener("click", () => post("/api/help"));
  poll();
});
