"""What tenants are told after a payment, in English and Swahili (the tenant's chosen language)."""

from __future__ import annotations

TEXTS = {
    "en": {
        "payment_failed": "LipaMeter: your payment of {paid} for meter {meter} did not go through: {why}. "
                          "No money was taken. Please try again.",
        "topup_applied": "LipaMeter: {paid}{receipt} received. Meter {meter} credited{units}.{balance}",
        "topup_delayed": "LipaMeter: {paid}{receipt} received. Meter {meter} is not responding, so the credit "
                         "is delayed. We keep trying and will tell you when it is done.",
        "topup_failed": "LipaMeter: {paid}{receipt} received, but we could not credit meter {meter} yet. "
                        "Your landlord has been alerted and will credit it. Keep this message as proof.",
        "balance_money": " New balance {value}.",
        "balance_energy": " New balance {value} kWh.",
        "units_energy": " ({value} kWh)",
        "days_left": " That is {days}.",
        "why": {"1032": "you cancelled the M-Pesa prompt", "1037": "your phone could not be reached",
                "2001": "the M-Pesa PIN was wrong", "1": "your M-Pesa balance was not enough",
                "1019": "the prompt expired", "1036": "the prompt timed out", "": "M-Pesa declined it"},
    },
    "sw": {
        "payment_failed": "LipaMeter: malipo yako ya {paid} kwa mita {meter} hayakufaulu: {why}. "
                          "Hakuna pesa iliyokatwa. Tafadhali jaribu tena.",
        "topup_applied": "LipaMeter: {paid}{receipt} imepokelewa. Mita {meter} imeongezewa{units}.{balance}",
        "topup_delayed": "LipaMeter: {paid}{receipt} imepokelewa. Mita {meter} haijibu, kwa hivyo salio "
                         "limechelewa. Tunaendelea kujaribu na tutakujulisha likikamilika.",
        "topup_failed": "LipaMeter: {paid}{receipt} imepokelewa, lakini hatujaweza kuongeza mita {meter}. "
                        "Mwenye nyumba amearifiwa na ataiongeza. Hifadhi ujumbe huu kama ushahidi.",
        "balance_money": " Salio jipya {value}.",
        "balance_energy": " Salio jipya {value} kWh.",
        "units_energy": " ({value} kWh)",
        "days_left": " Hiyo ni {days}.",
        "why": {"1032": "ulighairi ombi la M-Pesa", "1037": "simu yako haikupatikana",
                "2001": "PIN ya M-Pesa haikuwa sahihi", "1": "salio lako la M-Pesa halikutosha",
                "1019": "ombi liliisha muda", "1036": "ombi liliisha muda", "": "M-Pesa ilikataa"},
    },
}


def text(language: str, key: str):
    return TEXTS.get(language, TEXTS["en"])[key]
