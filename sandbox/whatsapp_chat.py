"""`GET /sandbox/chat`: chat with LipaMeter from a browser, as if from the WhatsApp app.

The page asks the sandbox to build each user message (so message ids are the sandbox's, as they would
be Meta's); the sandbox signs it with the app secret and delivers it to the webhook, retrying as Meta
does; the page polls the chat to show the replies, their delivery status, and the 24-hour window.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route


def _sandbox(request: Request):
    return request.app.state.whatsapp


def _wa_id(request: Request) -> str:
    return request.path_params["wa_id"]


async def _log(request: Request) -> JSONResponse:
    sandbox, wa_id = _sandbox(request), _wa_id(request)
    user = sandbox.user(wa_id)
    return JSONResponse({"messages": sandbox.messages(wa_id), "window_open": user.window_open(time.time()),
                         "webhook": sandbox.webhook_url,
                         "deliveries": sandbox.deliveries[-5:]})


async def _act(request: Request) -> JSONResponse:
    """Build what a user action sends and deliver it to the webhook (in the background)."""
    sandbox, wa_id = _sandbox(request), _wa_id(request)
    body = await request.json()
    sandbox.user(wa_id, str(body.get("name") or "Wanjiku")[:64])
    kind = body.get("kind")
    try:
        if kind == "text":
            delivery = sandbox.say(wa_id, str(body.get("text") or "")[:4096])
        elif kind == "tap":
            delivery = sandbox.tap(wa_id, str(body.get("message_id") or ""), reply_id=str(body.get("reply_id") or ""))
        elif kind in ("sticker", "image", "location"):
            delivery = getattr(sandbox, kind)(wa_id)
        else:
            return JSONResponse({"error": "unknown kind"}, status_code=400)
    except (LookupError, TypeError, ValueError) as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    if not sandbox.webhook_url:
        return JSONResponse({"error": "no webhook URL configured"}, status_code=409)
    sandbox.deliver_later(delivery)
    return JSONResponse({"delivered": True})


async def _expire(request: Request) -> JSONResponse:
    _sandbox(request).expire_window(_wa_id(request))
    return JSONResponse({"window_open": False})


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>WhatsApp chat (sandbox)</title>
<style>body{font-family:system-ui,sans-serif;margin:0;background:#efeae2;color:#111}
header{background:#075e54;color:#fff;padding:.6rem 1rem}header input{width:8rem}
#log{max-width:40rem;margin:0 auto;padding:1rem;min-height:60vh}
.m{background:#fff;border-radius:.5rem;padding:.45rem .7rem;margin:.4rem 0;max-width:80%;white-space:pre-wrap;
box-shadow:0 1px .5px rgba(0,0,0,.13)}.me{background:#d9fdd3;margin-left:auto}
.kb{display:flex;flex-direction:column;gap:.2rem;margin-top:.4rem}.kb button{padding:.4rem;border:0;border-top:1px solid #e9edef;
background:#fff;color:#027eb5;cursor:pointer;font-size:.95rem}.list{color:#027eb5;font-weight:600}
small{color:#667781}.tpl{border-left:3px solid #25d366}#note{color:#a60;min-height:1.2rem;text-align:center}
footer{position:sticky;bottom:0;background:#f0f2f5;padding:.6rem;display:flex;gap:.4rem;flex-wrap:wrap;justify-content:center}
footer input[type=text]{flex:1;min-width:12rem}</style></head>
<body><header><b>LipaMeter</b> <small style="color:#cfe">WhatsApp sandbox</small> &middot;
number <input id="wa" value="254712345678"> name <input id="name" value="Wanjiku">
<span id="window"></span> <button id="expire">Expire the 24 h window</button></header>
<div id="log"></div><div id="note"></div>
<footer><input type="text" id="text" placeholder="Message: hi, buy, balance, a meter number, an amount">
<button id="send">Send</button><button id="sticker">Sticker</button><button id="location">Location</button></footer>
<script>
const $ = id => document.getElementById(id);
const wa = () => $("wa").value.replace(/[^0-9]/g, "");
const base = location.pathname.replace(/\\/sandbox\\/chat\\/?$/, "");
async function act(body) {
  body.name = $("name").value;
  const answer = await (await fetch(`${base}/sandbox/chat/${wa()}/act`, {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).json();
  $("note").textContent = answer.error || "";
  setTimeout(refresh, 400);
}
function choicesOf(p) {
  const i = p.interactive || {}; const a = i.action || {};
  if (i.type === "button") return a.buttons.map(b => b.reply);
  if (i.type === "list") return a.sections.flatMap(s => s.rows);
  return [];
}
function render(m) {
  const div = document.createElement("div");
  if (m.side === "user") {
    div.className = "m me"; const msg = m.message;
    div.textContent = msg.text ? msg.text.body : msg.interactive ? (msg.interactive.button_reply || msg.interactive.list_reply).title
      : `[${msg.type}]`;
    return div;
  }
  div.className = "m" + (m.payload.type === "template" ? " tpl" : "");
  div.textContent = m.text;
  const choices = choicesOf(m.payload);
  if (choices.length) {
    const kb = document.createElement("div"); kb.className = "kb";
    if (m.payload.interactive.type === "list") { const t = document.createElement("div"); t.className = "list";
      t.textContent = "\\u2630 " + m.payload.interactive.action.button; kb.append(t); }
    for (const c of choices) { const btn = document.createElement("button");
      btn.textContent = c.title + (c.description ? ` \\u2014 ${c.description}` : "");
      btn.onclick = () => act({kind: "tap", message_id: m.id, reply_id: c.id}); kb.append(btn); }
    div.append(kb);
  }
  const status = document.createElement("small");
  status.textContent = `\\n${m.payload.type === "template" ? "template \\u00b7 " : ""}${m.status}`;
  div.append(status);
  return div;
}
let shown = "";
async function refresh() {
  const data = await (await fetch(`${base}/sandbox/chat/${wa()}/log`)).json();
  const key = JSON.stringify(data.messages);
  if (key !== shown) { shown = key; $("log").replaceChildren(...data.messages.map(render)); window.scrollTo(0, document.body.scrollHeight); }
  $("window").textContent = data.window_open ? "window open" : "window closed";
  if (!data.webhook) $("note").textContent = "No webhook URL: is the app running with WHATSAPP_* set?";
}
$("send").onclick = () => { const t = $("text").value; if (t) { $("text").value = ""; act({kind: "text", text: t}); } };
$("text").onkeydown = e => { if (e.key === "Enter") $("send").onclick(); };
$("sticker").onclick = () => act({kind: "sticker"});
$("location").onclick = () => act({kind: "location"});
$("expire").onclick = async () => { await fetch(`${base}/sandbox/chat/${wa()}/expire-window`, {method: "POST"}); refresh(); };
setInterval(refresh, 1000); refresh();
</script></body></html>"""

chat_routes = [
    Route("/sandbox/chat", _page, methods=["GET"]),
    Route("/sandbox/chat/{wa_id}/log", _log, methods=["GET"]),
    Route("/sandbox/chat/{wa_id}/act", _act, methods=["POST"]),
    Route("/sandbox/chat/{wa_id}/expire-window", _expire, methods=["POST"]),
]
