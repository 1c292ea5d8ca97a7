"""The send-message payloads the WhatsApp Cloud API accepts, checked the way Meta documents them
(developers.facebook.com/docs/whatsapp/cloud-api/reference/messages): text, interactive `button` and
`list`, and `template`. A payload that breaks a rule gets Meta's error shape: HTTP 400, code 100
(`Invalid parameter`) or 131009 (`Parameter value is not valid`) with the rule in `error_data.details`;
a template that does not exist (in that language) 132001, one with the wrong number of parameters 132000.
"""

from __future__ import annotations


class CloudApiError(Exception):
    def __init__(self, status: int, code: int, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def answer(self) -> dict:
        error = {"message": self.message, "type": "OAuthException", "code": self.code,
                 "fbtrace_id": "AsandboxTrace"}
        if self.details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        return {"error": error}


def invalid(details: str) -> CloudApiError:
    return CloudApiError(400, 131009, "(#131009) Parameter value is not valid", details)


def _text(value: object, name: str, limit: int, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise invalid(f"{name} is required and must be a non-empty string")
    if len(value) > limit:
        raise invalid(f"{name} is longer than {limit} characters")
    return value


def check(payload: object, templates: dict[str, dict[str, str]]) -> str:
    """The recipient (digits) of a valid payload; raises CloudApiError otherwise."""
    if not isinstance(payload, dict):
        raise CloudApiError(400, 100, "(#100) Invalid parameter", "the body must be a JSON object")
    if payload.get("messaging_product") != "whatsapp":
        raise CloudApiError(400, 100, "(#100) The parameter messaging_product is required.")
    if payload.get("recipient_type", "individual") != "individual":
        raise CloudApiError(400, 100, "(#100) Invalid parameter", "recipient_type must be individual")
    to = str(payload.get("to") or "").lstrip("+")
    if not to.isascii() or not to.isdigit() or not 8 <= len(to) <= 15:
        raise CloudApiError(400, 100, "(#100) Invalid parameter", "to must be a phone number in international form")
    kind = payload.get("type", "text")
    if kind == "text":
        body = payload.get("text")
        _text(body.get("body") if isinstance(body, dict) else None, "text.body", 4096)
    elif kind == "interactive":
        _interactive(payload.get("interactive"))
    elif kind == "template":
        _template(payload.get("template"), templates)
    else:
        raise CloudApiError(400, 100, "(#100) Invalid parameter", f"type {kind!r} is not supported by this sandbox")
    return to


def _interactive(interactive: object) -> None:
    if not isinstance(interactive, dict) or interactive.get("type") not in ("button", "list"):
        raise invalid("interactive.type must be button or list")
    body = interactive.get("body")
    _text(body.get("text") if isinstance(body, dict) else None, "interactive.body.text", 1024)
    footer = interactive.get("footer")
    if footer is not None:
        _text(footer.get("text") if isinstance(footer, dict) else None, "interactive.footer.text", 60)
    action = interactive.get("action")
    if not isinstance(action, dict):
        raise invalid("interactive.action is required")
    if interactive["type"] == "button":
        _buttons(action.get("buttons"))
    else:
        _list(action)


def _buttons(buttons: object) -> None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise invalid("interactive.action.buttons must hold 1 to 3 buttons")
    ids, titles = set(), set()
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) and button.get("type") == "reply" else None
        if not isinstance(reply, dict):
            raise invalid("each button must be {type: reply, reply: {id, title}}")
        ids.add(_text(reply.get("id"), "button id", 256))
        titles.add(_text(reply.get("title"), "button title", 20))
    if len(ids) != len(buttons) or len(titles) != len(buttons):
        raise invalid("button ids and titles must be unique")


def _list(action: dict) -> None:
    _text(action.get("button"), "interactive.action.button", 20)
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
        raise invalid("interactive.action.sections must hold 1 to 10 sections")
    ids = []
    for section in sections:
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list) or not section["rows"]:
            raise invalid("each section needs rows")
        _text(section.get("title"), "section title", 24, required=len(sections) > 1)
        for row in section["rows"]:
            if not isinstance(row, dict):
                raise invalid("each row must be an object")
            ids.append(_text(row.get("id"), "row id", 200))
            _text(row.get("title"), "row title", 24)
            _text(row.get("description"), "row description", 72, required=False)
    if len(ids) > 10:
        raise invalid("a list holds at most 10 rows in all")
    if len(set(ids)) != len(ids):
        raise invalid("row ids must be unique")


def _template(template: object, templates: dict[str, dict[str, str]]) -> None:
    if not isinstance(template, dict):
        raise invalid("template is required")
    name = _text(template.get("name"), "template.name", 512)
    language = template.get("language")
    code = _text(language.get("code") if isinstance(language, dict) else None, "template.language.code", 15)
    body = templates.get(name, {}).get(code)
    if body is None:
        raise CloudApiError(404, 132001, "(#132001) Template name does not exist in the translation",
                            f"template name ({name}) does not exist in {code}")
    parameters = []
    for component in template.get("components") or []:
        if isinstance(component, dict) and component.get("type") == "body":
            parameters += component.get("parameters") or []
    wanted = body.count("{{")
    if len(parameters) != wanted:
        raise CloudApiError(400, 132000, "(#132000) Number of parameters does not match the expected number of params",
                            f"body: number of localizable_params ({len(parameters)}) does not match the expected "
                            f"number of params ({wanted})")
    for parameter in parameters:
        value = _text(parameter.get("text") if isinstance(parameter, dict) else None, "template parameter", 1024)
        if "\n" in value or "\t" in value or "     " in value:
            raise invalid("a template parameter cannot have new lines, tabs or more than 4 consecutive spaces")


def template_text(template: dict, templates: dict[str, dict[str, str]]) -> str:
    """What the user sees for a (valid) template message: its body with the parameters filled in."""
    body = templates[template["name"]][template["language"]["code"]]
    for component in template.get("components") or []:
        if component.get("type") == "body":
            for i, parameter in enumerate(component.get("parameters") or [], start=1):
                body = body.replace("{{%d}}" % i, parameter["text"])
    return body
