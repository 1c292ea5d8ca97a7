"""What only the WhatsApp room says, in English and Swahili. The purchase screens come from
core.dialogue.texts (shared with USSD and Telegram); the goodbyes that speak of dialling are reworded."""

from __future__ import annotations

from core.dialogue import texts as core_texts

EN = {
    "greet": "Karibu! I am LipaMeter. Buy electricity for your meter with M-Pesa, check its balance and get "
             "your receipts here. This WhatsApp number, {phone}, is the M-Pesa number you will pay with.",
    "help": "LipaMeter buys electricity for your meter with M-Pesa from this WhatsApp number.\n\n"
            "Type: menu, buy, balance, payments, language, cancel or help. You can also type a meter number "
            "or an amount when asked, 0 to go back and 00 for the menu.",
    "not_text": "Sorry, I can only read text and the buttons. Type help to see what I can do.",
    "stale": "That button is from an earlier message. Please use the latest one.",
    "nothing_to_cancel": "Nothing to cancel. Type menu to start.",
    "choose": "Choose",
    "menu": "Menu",
    "type_hint": "Or type an amount. 0 back, 00 menu.",
    "started": "Check your phone for the M-Pesa prompt: {amount} for meter {number}, from {phone}. "
               "Enter your M-Pesa PIN to pay. Your receipt will come here.",
    "pending": "An M-Pesa prompt is already waiting on your phone. Finish or cancel it, then try again.",
    "too_many": "Too many wrong entries. Type menu to start again.",
    "expired": "This conversation has ended. Type menu to start again.",
    "trouble": "Sorry, something went wrong on our side. Nothing was charged. Please try again.",
}

SW = {
    "greet": "Karibu! Mimi ni LipaMeter. Nunua umeme wa mita yako kwa M-Pesa, angalia salio na upokee risiti "
             "hapa. Nambari hii ya WhatsApp, {phone}, ndiyo nambari ya M-Pesa utakayolipa nayo.",
    "help": "LipaMeter hununua umeme wa mita yako kwa M-Pesa kutoka nambari hii ya WhatsApp.\n\n"
            "Andika: menyu, nunua, salio, malipo, lugha, ghairi au msaada. Unaweza pia kuandika nambari ya "
            "mita au kiasi ukiulizwa, 0 kurudi nyuma na 00 kwa menyu.",
    "not_text": "Samahani, ninasoma maandishi na vitufe tu. Andika msaada kuona ninachoweza kufanya.",
    "stale": "Kitufe hicho ni cha ujumbe wa zamani. Tafadhali tumia ujumbe wa mwisho.",
    "nothing_to_cancel": "Hakuna cha kughairi. Andika menyu kuanza.",
    "choose": "Chagua",
    "menu": "Menyu",
    "type_hint": "Au andika kiasi. 0 nyuma, 00 menyu.",
    "started": "Angalia simu yako kwa ombi la M-Pesa: {amount} kwa mita {number}, kutoka {phone}. "
               "Weka PIN yako ya M-Pesa kulipa. Risiti yako itakuja hapa.",
    "pending": "Tayari kuna ombi la M-Pesa kwenye simu yako. Likamilishe au ulighairi, kisha ujaribu tena.",
    "too_many": "Makosa mengi mno. Andika menyu kuanza upya.",
    "expired": "Mazungumzo haya yamekwisha. Andika menyu kuanza upya.",
    "trouble": "Samahani, kuna hitilafu upande wetu. Hakuna pesa iliyotozwa. Tafadhali jaribu tena.",
}

TEXTS = {"en": EN, "sw": SW}

# Typed words that act like a Telegram command, in either language (main-menu keys where they map).
MENU_WORDS = {"hi", "hello", "start", "menu", "home", "habari", "jambo", "mambo", "menyu", "anza"}
ENTRY_WORDS = {"buy": "1", "nunua": "1", "balance": "2", "salio": "2", "payments": "3", "history": "3",
               "malipo": "3", "language": "4", "lugha": "4"}
HELP_WORDS = {"help", "msaada", "?"}
CANCEL_WORDS = {"cancel", "stop", "ghairi", "acha"}


def text(language: str, key: str, **values: object) -> str:
    table = TEXTS.get(language, EN)
    return table[key].format(**values) if values else table[key]


def language_of(saved: str | None) -> str:
    return saved if saved in core_texts.LANGUAGES else core_texts.DEFAULT_LANGUAGE
