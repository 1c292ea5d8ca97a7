"""`GET /sandbox/chat`: chat with the bot from a browser, as if from the Telegram app.

The page asks the sandbox to build each update (so message ids and callback query ids are the
sandbox's, as they would be Telegram's), then POSTs it to the webhook the bot registered, with the
secret header, exactly as Telegram would; it polls the chat to show the bot's replies and toasts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route


def _sandbox(request: Request):
    return request.app.state.telegram


def _chat_id(request: Request) -> int:
    return int(request.path_params["chat_id"])


async def _messages(request: Request) -> JSONResponse:
    sandbox, chat_id = _sandbox(request), _chat_id(request)
    chat = sandbox.chat(chat_id)
    toasts = [a["text"] for a in sandbox.answers if a["chat_id"] == chat_id and a["text"]]
    return JSONResponse({"messages": sandbox.messages(chat_id), "toasts": toasts, "blocked": chat.blocked,
                         "webhook": bool(sandbox.webhook["url"])})


async def _update(request: Request) -> JSONResponse:
    """Build the update a user action makes; the page posts it to the webhook."""
    sandbox, chat_id = _sandbox(request), _chat_id(request)
    body = await request.json()
    sandbox.chat(chat_id, first_name=str(body.get("first_name") or "Wanjiku")[:64])
    kind = body.get("kind")
    try:
        if kind == "text":
            update = sandbox.say(chat_id, str(body.get("text") or ""))
        elif kind == "contact":
            update = sandbox.share_contact(chat_id, str(body.get("phone") or ""))
        elif kind == "foreign_contact":
            update = sandbox.share_contact(chat_id, str(body.get("phone") or ""), user_id=chat_id + 1,
                                           first_name="Someone else")
        elif kind == "sticker":
            update = sandbox.sticker(chat_id)
        elif kind == "press":
            update = sandbox.press(chat_id, int(body.get("message_id")), data=str(body.get("data") or ""))
        else:
            return JSONResponse({"error": "unknown kind"}, status_code=400)
    except (LookupError, TypeError, ValueError) as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    hook = sandbox.webhook
    return JSONResponse({"update": update, "webhook": {"url": hook["url"], "secret": hook["secret_token"]}})


async def _block(request: Request) -> JSONResponse:
    body = await request.json()
    _sandbox(request).block(_chat_id(request), bool(body.get("blocked")))
    return JSONResponse({"blocked": bool(body.get("blocked"))})


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Telegram chat (sandbox)</title>
<style>body{font-family:system-ui,sans-serif;margin:0;background:#e6ebee;color:#222}
header{background:#517da2;color:#fff;padding:.6rem 1rem}header input{width:7rem}
#log{max-width:40rem;margin:0 auto;padding:1rem;min-height:60vh}
.m{background:#fff;border-radius:.6rem;padding:.5rem .7rem;margin:.4rem 0;max-width:80%;white-space:pre-wrap}
.me{background:#effdde;margin-left:auto}.kb button{margin:.2rem;padding:.35rem .6rem;border:0;border-radius:.4rem;
background:#dbe7f1;cursor:pointer}small{color:#888}#toast{color:#a60;min-height:1.2rem;text-align:center}
footer{position:sticky;bottom:0;background:#fff;padding:.6rem;display:flex;gap:.4rem;flex-wrap:wrap;justify-content:center}
footer input[type=text]{flex:1;min-width:12rem}</style></head>
<body><header><b>LipaMeter bot</b> <small style="color:#dde">Telegram sandbox</small> &middot;
chat id <input id="chat" value="5550001"> name <input id="name" value="Wanjiku">
phone <input id="phone" value="254712345678"> <label><input type="checkbox" id="blocked"> blocked the bot</label></header>
<div id="log"></div><div id="toast"></div>
<footer><input type="text" id="text" placeholder="Message, /start, a meter number, an amount">
<button id="send">Send</button><button id="contact">Share my phone number</button>
<button id="foreign">Share someone else's contact</button><button id="sticker">Send a sticker</button></footer>
<script>
const $ = id => document.getElementById(id);
const chat = () => parseInt($("chat").value, 10);
const base = location.pathname.replace(/\\/sandbox\\/chat\\/?$/, "");
async function act(body) {
  body.first_name = $("name").value;
  const built = await (await fetch(`${base}/sandbox/chat/${chat()}/updates`, {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).json();
  if (built.error) { $("toast").textContent = built.error; return; }
  if (!built.webhook.url) { $("toast").textContent = "No webhook registered: is the app running with TELEGRAM_BOT_TOKEN?"; return; }
  const hook = new URL(built.webhook.url);
  const url = hook.host === location.host ? hook.pathname : hook.href;
  const answer = await fetch(url, {method: "POST", body: JSON.stringify(built.update), headers: {
    "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": built.webhook.secret}});
  if (!answer.ok) $("toast").textContent = `webhook answered HTTP ${answer.status}`;
  setTimeout(refresh, 300);
}
function render(m) {
  const div = document.createElement("div");
  div.className = "m" + (m.from.is_bot ? "" : " me");
  div.textContent = m.text || (m.contact ? `Contact: ${m.contact.phone_number}` : m.sticker ? m.sticker.emoji : "[photo]");
  const rows = (m.reply_markup || {}).inline_keyboard || [];
  if (rows.length) {
    const kb = document.createElement("div"); kb.className = "kb";
    for (const row of rows) { const line = document.createElement("div");
      for (const b of row) { const btn = document.createElement("button"); btn.textContent = b.text;
        btn.onclick = () => act({kind: "press", message_id: m.message_id, data: b.callback_data}); line.append(btn); }
      kb.append(line); }
    div.append(kb);
  }
  if (m.keyboard && m.keyboard.keyboard) $("contact").style.fontWeight = "bold";
  if (m.keyboard && m.keyboard.remove_keyboard) $("contact").style.fontWeight = "normal";
  return div;
}
let shown = "";
async function refresh() {
  const data = await (await fetch(`${base}/sandbox/chat/${chat()}/messages`)).json();
  const key = JSON.stringify(data.messages);
  if (key !== shown) { shown = key; $("log").replaceChildren(...data.messages.map(render)); window.scrollTo(0, document.body.scrollHeight); }
  if (data.toasts.length) $("toast").textContent = data.toasts[data.toasts.length - 1];
  $("blocked").checked = data.blocked;
}
$("send").onclick = () => { const t = $("text").value; if (t) { $("text").value = ""; act({kind: "text", text: t}); } };
$("text").onkeydown = e => { if (e.key === "Enter") $("send").onclick(); };
$("contact").onclick = () => act({kind: "contact", phone: $("phone").value});
$("foreign").onclick = () => act({kind: "foreign_contact", phone: "254700000001"});
$("sticker").onclick = () => act({kind: "sticker"});
$("blocked").onchange = () => fetch(`${base}/sandbox/chat/${chat()}/block`, {method: "POST",
  headers: {"Content-Type": "application/json"}, body: JSON.stringify({blocked: $("blocked").checked})});
setInterval(refresh, 1000); refresh();
</script></body></html>"""

chat_routes = [
    Route("/sandbox/chat", _page, methods=["GET"]),
    Route("/sandbox/chat/{chat_id:int}/messages", _messages, methods=["GET"]),
    Route("/sandbox/chat/{chat_id:int}/updates", _update, methods=["POST"]),
    Route("/sandbox/chat/{chat_id:int}/block", _block, methods=["POST"]),
]
