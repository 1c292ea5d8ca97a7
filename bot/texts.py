"""What only the Telegram bot says, in English and Swahili. The purchase screens themselves come from
core.dialogue.texts (shared with USSD); the goodbyes that speak of dialling are reworded here for a chat."""

from __future__ import annotations

from core.dialogue import texts as core_texts

EN = {
    "greet": "Karibu! I am LipaMeter. Buy electricity for your meter with M-Pesa, check its balance and "
             "get your receipts here.\n\nFirst, share your phone number with the button below: it must be "
             "the M-Pesa number you pay with.",
    "share_button": "Share my phone number",
    "link_first": "Please share your phone number first, with the button below.",
    "foreign_contact": "That is not your own contact. Please share your own number with the button below.",
    "not_kenyan": "Sorry, LipaMeter works with Kenyan M-Pesa numbers only (07... or 01...).",
    "linked": "Thank you{name}! This Telegram account is now linked to {phone}.",
    "welcome_back": "Welcome back{name}.",
    "help": "LipaMeter buys electricity for your meter with M-Pesa.\n\n"
            "/start - the menu\n/buy - buy electricity\n/balance - your meter's balance\n"
            "/history - your last payments\n/language - English or Kiswahili\n/cancel - stop what you are doing\n"
            "/help - this message\n\nYou can also type a meter number or an amount when asked.",
    "unknown_command": "Sorry, I do not know {command}. /help shows what I can do.",
    "not_text": "Sorry, I can only read text and the buttons. /help shows what I can do.",
    "stale": "This button is from an earlier message. Please use the latest one.",
    "nothing_to_cancel": "Nothing to cancel. /start shows the menu.",
    "private_only": "Please talk to me in a private chat.",
    "menu": "Menu",
    "started": "Check your phone for the M-Pesa prompt: {amount} for meter {number}, from {phone}. "
               "Enter your M-Pesa PIN to pay. Your receipt will come here.",
    "pending": "An M-Pesa prompt is already waiting on your phone. Finish or cancel it, then try again.",
    "too_many": "Too many wrong entries. Press Menu to start again.",
    "expired": "This conversation has ended. Press Menu to start again.",
    "trouble": "Sorry, something went wrong on our side. Nothing was charged. Please try again.",
}

SW = {
    "greet": "Karibu! Mimi ni LipaMeter. Nunua umeme wa mita yako kwa M-Pesa, angalia salio na upokee "
             "risiti hapa.\n\nKwanza, tuma nambari yako ya simu kwa kitufe kilicho hapa chini: iwe nambari "
             "ya M-Pesa unayolipa nayo.",
    "share_button": "Tuma nambari yangu ya simu",
    "link_first": "Tafadhali tuma nambari yako ya simu kwanza, kwa kitufe kilicho hapa chini.",
    "foreign_contact": "Hiyo si nambari yako. Tafadhali tuma nambari yako mwenyewe kwa kitufe kilicho hapa chini.",
    "not_kenyan": "Samahani, LipaMeter ni kwa nambari za M-Pesa za Kenya tu (07... au 01...).",
    "linked": "Asante{name}! Akaunti hii ya Telegram sasa imeunganishwa na {phone}.",
    "welcome_back": "Karibu tena{name}.",
    "help": "LipaMeter hununua umeme wa mita yako kwa M-Pesa.\n\n"
            "/start - menyu\n/buy - nunua umeme\n/balance - salio la mita yako\n"
            "/history - malipo yako ya mwisho\n/language - Kiingereza au Kiswahili\n/cancel - acha unachofanya\n"
            "/help - ujumbe huu\n\nUnaweza pia kuandika nambari ya mita au kiasi ukiulizwa.",
    "unknown_command": "Samahani, sijui {command}. /help inaonyesha ninachoweza kufanya.",
    "not_text": "Samahani, ninasoma maandishi na vitufe tu. /help inaonyesha ninachoweza kufanya.",
    "stale": "Kitufe hiki ni cha ujumbe wa zamani. Tafadhali tumia ujumbe wa mwisho.",
    "nothing_to_cancel": "Hakuna cha kughairi. /start inaonyesha menyu.",
    "private_only": "Tafadhali ongea nami kwenye gumzo la faragha.",
    "menu": "Menyu",
    "started": "Angalia simu yako kwa ombi la M-Pesa: {amount} kwa mita {number}, kutoka {phone}. "
               "Weka PIN yako ya M-Pesa kulipa. Risiti yako itakuja hapa.",
    "pending": "Tayari kuna ombi la M-Pesa kwenye simu yako. Likamilishe au ulighairi, kisha ujaribu tena.",
    "too_many": "Makosa mengi mno. Bonyeza Menyu kuanza upya.",
    "expired": "Mazungumzo haya yamekwisha. Bonyeza Menyu kuanza upya.",
    "trouble": "Samahani, kuna hitilafu upande wetu. Hakuna pesa iliyotozwa. Tafadhali jaribu tena.",
}

TEXTS = {"en": EN, "sw": SW}


def text(language: str, key: str, **values: object) -> str:
    table = TEXTS.get(language, EN)
    return table[key].format(**values) if values else table[key]


def language_of(saved: str | None, telegram_code: str | None) -> str:
    """The tenant's saved language; before we know them, the language their Telegram app is set to."""
    if saved in core_texts.LANGUAGES:
        return saved
    code = (telegram_code or "").lower()[:2]
    return code if code in core_texts.LANGUAGES else core_texts.DEFAULT_LANGUAGE
