// The session viewer: follows the session's SSE stream and, with a control token, acts
// on it through the REST API, exactly as any other client does.
//
// The token comes from this page's own URL (?access_token=) and goes on every request:
// as a Bearer header on fetch() calls, as ?access_token= where no header can be sent
// (EventSource, <img>). Each event is applied once (events at or below the last seq seen
// are dropped), and the timeline keeps at most MAX_ROWS rows, so a session of any length
// stays responsive.
"use strict";

(() => {
  const MAX_ROWS = 500;
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 30000;
  // Every named SSE event type (EventSource dispatches by name; `message` gets none).
  const EVENT_TYPES = [
    "session.created", "session.closed",
    "run.queued", "run.started", "run.awaiting_safety_check", "run.resumed",
    "run.completed", "run.failed", "run.cancelled", "run.paused", "run.stuck",
    "turn.started", "turn.completed",
    "assistant.message", "assistant.thinking",
    "tool.call", "tool.result", "human.action",
    "safety_check.pending", "safety_check.acknowledged", "safety_check.rejected",
    "safety_check.expired",
    "provider.retry",
  ];
  const ACTIVE = new Set(["queued", "running", "awaiting_safety_check", "paused"]);
  const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled"]);

  const $ = (id) => document.getElementById(id);
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const sessionId = meta("agent-sessions-session");
  const canControl = meta("agent-sessions-scope") === "control";
  const token = new URLSearchParams(location.search).get("access_token");
  const base = `/v1/sessions/${encodeURIComponent(sessionId)}`;

  const state = {
    lastSeq: 0,
    closed: false,
    display: null, // {width, height}: the computer's pixels, which actions are given in
    run: null, // {id, status, stopReason, usage}
    latestShot: null,
    pointer: null, // {x, y, label}
    shotBeforeCall: new Map(), // call_id -> the screenshot the model saw when it asked
    pending: new Map(), // check id -> {check, shot}
    rowsToAdd: [],
    rowsDropped: 0,
    busy: false,
  };

  // ---- talking to the service -------------------------------------------------------------

  function withToken(path) {
    if (!token) return path;
    const url = new URL(path, location.origin);
    url.searchParams.set("access_token", token);
    return url.pathname + url.search;
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) throw new Error(await problemDetail(response));
    return response.status === 204 ? null : response.json();
  }

  async function problemDetail(response) {
    try {
      const problem = await response.json();
      if (problem && problem.detail) return problem.detail;
    } catch (_) { /* not problem+json */ }
    return `${response.status} ${response.statusText}`;
  }

  // ---- the event stream --------------------------------------------------------------------

  let source = null;
  let retryMs = RETRY_MIN_MS;

  function connect() {
    const url = new URL(`${base}/events`, location.origin);
    if (state.lastSeq) url.searchParams.set("after", String(state.lastSeq));
    source = new EventSource(withToken(url.pathname + url.search));
    source.onopen = () => {
      retryMs = RETRY_MIN_MS;
      setConnection("Live");
    };
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        // EventSource reconnects by itself, with Last-Event-ID.
        setConnection("Reconnecting…");
        return;
      }
      // It gave up: a 204 (nothing more can come) or an HTTP error.
      source = null;
      if (state.closed) {
        setConnection("Session closed: everything is shown");
        return;
      }
      recover();
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, onMessage);
  }

  async function recover() {
    // EventSource gave up. Ask the session why: a final answer (the token expired or was
    // revoked, another session) or a closed session ends here; anything else is retried.
    let response = null;
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      response = await fetch(base, { headers, cache: "no-store", credentials: "omit" });
    } catch (_) {
      response = null; // the network: try again later
    }
    if (response && [401, 403, 404].includes(response.status)) {
      setConnection(`Disconnected: ${await problemDetail(response)}`);
      return;
    }
    if (response && response.ok) {
      const session = await response.json();
      if (session.status === "closed" && session.last_event_seq <= state.lastSeq) {
        state.closed = true;
        scheduleRender();
        setConnection("Session closed: everything is shown");
        return;
      }
    }
    setConnection(`Disconnected; retrying in ${Math.round(retryMs / 1000)} s`);
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  }

  function onMessage(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    if (event.seq <= state.lastSeq) return; // already shown
    state.lastSeq = event.seq;
    apply(event);
    state.rowsToAdd.push(event);
    scheduleRender();
  }

  // ---- what the events mean ----------------------------------------------------------------

  const zeroUsage = () => ({ input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 });

  function runFor(event, status) {
    const id = event.run_id || (event.data && event.data.run_id);
    if (!state.run || state.run.id !== id) {
      state.run = { id, status, stopReason: null, usage: zeroUsage() };
    }
    state.run.status = status;
    return state.run;
  }

  function apply(event) {
    const data = event.data || {};
    switch (event.type) {
      case "session.created":
        state.display = data.computer && data.computer.display;
        break;
      case "session.closed":
        state.closed = true;
        break;
      case "run.queued":
        runFor(event, "queued");
        break;
      case "run.started":
      case "run.resumed":
        runFor(event, "running");
        break;
      case "run.awaiting_safety_check":
        runFor(event, "awaiting_safety_check");
        break;
      case "run.paused":
        runFor(event, "paused");
        break;
      case "run.completed":
      case "run.failed":
      case "run.cancelled": {
        const run = runFor(event, data.status || event.type.slice(4));
        run.stopReason = data.stop_reason || null;
        if (data.usage) run.usage = { ...zeroUsage(), ...data.usage };
        state.shotBeforeCall.clear();
        break;
      }
      case "turn.completed":
        if (state.run && data.usage) {
          for (const key of Object.keys(state.run.usage)) state.run.usage[key] += data.usage[key] || 0;
        }
        break;
      case "tool.call":
        state.shotBeforeCall.set(data.call_id, state.latestShot);
        notePointer(data.action);
        break;
      case "human.action":
        notePointer(data.action);
        if (data.screenshot) state.latestShot = data.screenshot;
        break;
      case "tool.result":
        if (data.screenshot) state.latestShot = data.screenshot;
        break;
      case "safety_check.pending":
        state.pending.set(data.id, {
          check: data,
          shot: state.shotBeforeCall.has(data.call_id) ? state.shotBeforeCall.get(data.call_id) : state.latestShot,
        });
        break;
      case "safety_check.acknowledged":
      case "safety_check.rejected":
      case "safety_check.expired":
        state.pending.delete(data.id);
        break;
      default:
        break;
    }
  }

  function notePointer(action) {
    if (!action) return;
    let point = null;
    if (action.type === "drag" && action.path && action.path.length) {
      const last = action.path[action.path.length - 1];
      point = { x: last[0], y: last[1] };
    } else if (["click", "move", "scroll"].includes(action.type) && action.x != null && action.y != null) {
      point = { x: action.x, y: action.y };
    } else if (["click", "scroll", "mouse_down", "mouse_up"].includes(action.type) && state.pointer) {
      point = { x: state.pointer.x, y: state.pointer.y }; // at the cursor: where it last was
    }
    if (point) state.pointer = { ...point, label: `${action.type} at (${point.x}, ${point.y})` };
  }

  function describeAction(action) {
    if (!action) return "an action the service could not translate";
    switch (action.type) {
      case "click": {
        const times = action.count > 1 ? ` ×${action.count}` : "";
        const where = action.x != null ? ` at (${action.x}, ${action.y})` : " at the cursor";
        return `${action.button || "left"} click${times}${where}`;
      }
      case "move": return `move to (${action.x}, ${action.y})`;
      case "drag": return `drag through ${action.path.map((p) => `(${p[0]}, ${p[1]})`).join(" → ")}`;
      case "scroll": return `scroll by (${action.dx}, ${action.dy})${action.x != null ? ` at (${action.x}, ${action.y})` : ""}`;
      case "type": return `type ${JSON.stringify(action.text)}`;
      case "key": return `press ${action.keys.join("+")}${action.repeat > 1 ? ` ×${action.repeat}` : ""}`;
      case "hold_key": return `hold ${action.keys.join("+")} for ${action.seconds} s`;
      case "wait": return `wait ${action.seconds} s`;
      case "navigate": return `go to ${action.url}`;
      case "batch": return (action.actions || []).map(describeAction).join("; ");
      default: return action.type;
    }
  }

  function usageText(usage) {
    if (!usage) return "–";
    const cached = usage.cache_read_input_tokens || usage.cache_creation_input_tokens
      ? ` (cache read ${usage.cache_read_input_tokens || 0}, write ${usage.cache_creation_input_tokens || 0})`
      : "";
    return `${usage.input_tokens || 0} input, ${usage.output_tokens || 0} output tokens${cached}`;
  }

  // One timeline row per event: [css kind, heading, text].
  function describe(event) {
    const d = event.data || {};
    switch (event.type) {
      case "session.created": return ["minor", "Session created", `${d.provider} ${d.model} on ${d.computer ? d.computer.type : "?"}`];
      case "session.closed": return ["minor", "Session closed", ""];
      case "run.queued": return ["minor", "Run queued", d.input || ""];
      case "run.started": return ["minor", "Run started", ""];
      case "run.resumed": return ["minor", "Run resumed", d.reason || ""];
      case "run.awaiting_safety_check": return ["check", "Waiting for a decision", `on ${d.check_ids ? d.check_ids.length : 0} safety check(s)`];
      case "run.paused": return ["minor", "Run paused", d.reason || ""];
      case "run.completed": return ["result", "Run completed", d.output || d.stop_reason || ""];
      case "run.failed": return ["error", "Run failed", d.error ? `${d.error.type}: ${d.error.message}` : d.stop_reason || ""];
      case "run.cancelled": return ["error", "Run cancelled", d.stop_reason || ""];
      case "turn.started": return ["minor", `Turn ${(d.turn || 0) + 1}`, d.model || ""];
      case "turn.completed": return ["minor", `Turn ${(d.turn || 0) + 1} done`, `${usageText(d.usage)}, ${d.latency_ms} ms`];
      case "assistant.message": return ["message", "Assistant", d.text || ""];
      case "assistant.thinking": return ["thinking", "Thinking", d.redacted ? "(redacted)" : d.text || ""];
      case "tool.call": return ["action", "Action", describeAction(d.action)];
      case "human.action": return ["action", "Human action", describeAction(d.action)];
      case "tool.result":
        if (d.is_error) return ["error", "Action failed", d.error || d.output || ""];
        return ["result", "Result", `${d.not_executed ? "not executed" : d.output || "done"} (${d.duration_ms} ms)`];
      case "safety_check.pending": return ["check", "Safety check", `${d.message} (${describeAction(d.action)})`];
      case "safety_check.acknowledged": return ["check", "Acknowledged", d.message || ""];
      case "safety_check.rejected": return ["error", "Rejected", d.reason || d.message || ""];
      case "safety_check.expired": return ["error", "Safety check expired", d.message || ""];
      case "provider.retry": return ["retry", `Retry ${d.attempt}`, `${d.status_code || "no answer"}: ${d.error || ""}, waiting ${d.wait_s} s`];
      default: return ["minor", event.type, ""];
    }
  }

  // ---- rendering (batched: a replay of thousands of events renders once) ------------------

  let renderScheduled = false;

  function scheduleRender() {
    if (renderScheduled) return;
    renderScheduled = true;
    // A hidden tab gets no animation frames: fall back to a timer there.
    if (document.hidden) setTimeout(render, 100);
    else requestAnimationFrame(render);
  }

  function render() {
    renderScheduled = false;
    renderTimeline();
    renderScreen();
    renderRun();
    renderChecks();
    renderControls();
  }

  function renderTimeline() {
    const log = $("log");
    let events = state.rowsToAdd;
    state.rowsToAdd = [];
    if (!events.length) return;
    if (events.length > MAX_ROWS) {
      state.rowsDropped += events.length - MAX_ROWS;
      events = events.slice(-MAX_ROWS);
    }
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const fragment = document.createDocumentFragment();
    for (const event of events) {
      const [kind, what, text] = describe(event);
      const row = document.createElement("div");
      row.className = `row kind-${kind}`;
      row.dataset.seq = String(event.seq);
      row.dataset.type = event.type;
      const seq = document.createElement("span");
      seq.className = "seq";
      seq.textContent = `#${event.seq}`;
      const heading = document.createElement("span");
      heading.className = "what";
      heading.textContent = what;
      row.append(seq, heading);
      if (text) {
        const body = document.createElement("span");
        body.className = "text";
        body.textContent = text;
        row.append(body);
      }
      fragment.append(row);
    }
    log.append(fragment);
    while (log.childElementCount > MAX_ROWS) {
      log.firstElementChild.remove();
      state.rowsDropped += 1;
    }
    if (state.rowsDropped) {
      $("trimmed").hidden = false;
      $("trimmed").textContent = `${state.rowsDropped} earlier events are not shown (the last ${MAX_ROWS} are).`;
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  let firstScreenshotMarked = false;

  function renderScreen() {
    const shot = state.latestShot;
    const img = $("screenshot");
    if (shot) {
      const src = withToken(shot.url);
      if (img.getAttribute("src") !== src) {
        img.setAttribute("src", src);
        img.dataset.shotId = shot.id;
      }
      img.hidden = false;
      $("no-screenshot").hidden = true;
      $("screen-caption").textContent = shot.page_url || "";
    }
    const marker = $("pointer");
    const pointer = state.pointer;
    const space = state.display || (shot && { width: shot.width, height: shot.height });
    if (shot && pointer && space && space.width && space.height) {
      marker.style.left = `${(100 * pointer.x) / space.width}%`;
      marker.style.top = `${(100 * pointer.y) / space.height}%`;
      marker.hidden = false;
      marker.title = `Last pointer action: ${pointer.label}`;
      $("screen-caption").textContent = [`Last pointer action: ${pointer.label}`, shot.page_url]
        .filter(Boolean).join(" · ");
    } else {
      marker.hidden = true;
    }
  }

  function renderRun() {
    const run = state.run;
    let status = "no run yet";
    if (run) {
      status = run.status.replaceAll("_", " ");
      if (run.stopReason && !ACTIVE.has(run.status)) status += ` (${run.stopReason.replaceAll("_", " ")})`;
    }
    if (state.closed) status += " · session closed";
    $("run-status").textContent = status;
    $("run-usage").textContent = run ? usageText(run.usage) : "–";
  }

  function renderChecks() {
    const box = $("checks");
    const shown = new Set([...box.children].map((el) => el.dataset.checkId));
    for (const el of [...box.children]) {
      if (!state.pending.has(el.dataset.checkId)) el.remove();
    }
    for (const [id, { check, shot }] of state.pending) {
      if (shown.has(id)) continue;
      box.append(checkCard(check, shot));
    }
  }

  function checkCard(check, shot) {
    const card = document.createElement("section");
    card.className = "check";
    card.dataset.checkId = check.id;
    const titleId = `check-${check.id}`;
    card.setAttribute("aria-labelledby", titleId);
    const title = document.createElement("h3");
    title.id = titleId;
    title.textContent = `Safety check: ${check.code}`;
    const message = document.createElement("p");
    message.textContent = check.message;
    const action = document.createElement("p");
    action.textContent = `Action: ${describeAction(check.action)}`;
    card.append(title, message, action);
    if (shot) {
      const img = document.createElement("img");
      img.alt = "Screenshot the check was judged on";
      img.src = withToken(shot.url);
      card.append(img);
    } else {
      const none = document.createElement("p");
      none.textContent = "No screenshot was taken before this action.";
      card.append(none);
    }
    if (check.expires_at) {
      const expires = document.createElement("p");
      expires.textContent = `Expires ${new Date(check.expires_at).toLocaleString()}`;
      card.append(expires);
    }
    if (canControl) {
      const buttons = document.createElement("div");
      buttons.className = "buttons";
      buttons.append(
        button("Acknowledge", "primary", () => decide(check.id, "acknowledge", {})),
        button("Reject", "danger", () => decide(check.id, "reject", { reason: "Rejected in the viewer" })),
      );
      card.append(buttons);
    }
    return card;
  }

  function button(label, kind, onClick) {
    const el = document.createElement("button");
    el.type = "button";
    el.textContent = label;
    if (kind) el.className = kind;
    el.addEventListener("click", onClick);
    return el;
  }

  // ---- controls (control scope only: a read token gets none) -------------------------------

  let cancelButton = null;
  let sendButton = null;
  let input = null;

  function buildControls() {
    if (!canControl) return;
    const box = $("controls");
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    cancelButton = button("Cancel run", "danger", () => act(() => call("POST", `${base}/cancel`)));
    buttons.append(cancelButton);

    const form = document.createElement("form");
    form.className = "follow-up";
    const label = document.createElement("label");
    label.htmlFor = "follow-up-input";
    label.textContent = "Follow-up message";
    input = document.createElement("textarea");
    input.id = "follow-up-input";
    input.maxLength = 100000;
    sendButton = document.createElement("button");
    sendButton.type = "submit";
    sendButton.className = "primary";
    sendButton.textContent = "Send";
    form.append(label, input, sendButton);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      act(async () => {
        await call("POST", `${base}/runs`, { input: text });
        input.value = "";
      });
    });
    box.append(buttons, form);
  }

  function renderControls() {
    if (!canControl) return;
    const active = state.run && ACTIVE.has(state.run.status);
    cancelButton.disabled = state.busy || !active;
    sendButton.disabled = state.busy || Boolean(active) || state.closed;
    input.disabled = state.closed;
  }

  async function act(request) {
    state.busy = true;
    $("error").textContent = "";
    render();
    try {
      await request();
    } catch (error) {
      $("error").textContent = error.message;
    } finally {
      state.busy = false;
      render();
    }
  }

  function decide(checkId, verdict, body) {
    return act(() => call("POST", `${base}/safety-checks/${encodeURIComponent(checkId)}/${verdict}`, body));
  }

  function setConnection(text) {
    $("connection").textContent = text;
  }

  // ---- start -----------------------------------------------------------------------------

  $("screenshot").addEventListener("load", () => {
    if (firstScreenshotMarked) return;
    firstScreenshotMarked = true;
    performance.mark("viewer:first-screenshot"); // read by bench/viewer.py
  });
  buildControls();
  render();
  connect();
})();
