"""What the purchase dialogue says, in English and Swahili.

Plain ASCII on purpose: USSD handsets and telcos mangle anything else. Kept short: a USSD screen
holds 160 characters including `CON `, the options and the navigation line (tests render every screen).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from core.shared.clock import NAIROBI
from core.shared.money import format_kes

LANGUAGES = ("en", "sw")
DEFAULT_LANGUAGE = "en"

EN = {
    "app": "LipaMeter",
    "menu.buy": "Buy electricity",
    "menu.balance": "Check balance",
    "menu.payments": "My payments",
    "menu.language": "Language",
    "nav.back": "Back",
    "nav.home": "Home",
    "nav.more": "More",
    "choose_meter": "Choose meter:",
    "other_meter": "Other meter",
    "enter_meter": "Enter meter number:",
    "enter_amount": "Enter amount, KES {min}-{max}:",
    "meter_line": "Meter {number} {name}",
    "confirm": "Confirm payment:",
    "amount_line": "Amount {amount}",
    "phone_line": "Phone {phone}",
    "pay_now": "Pay now",
    "cancel": "Cancel",
    "other_payer": "Pay from other phone",  # <= 20 characters: a WhatsApp button title
    "enter_payer": "Enter the Safaricom number to pay from:",
    "not_safaricom": "M-Pesa prompts reach Safaricom lines only.",
    "err.payer": "Use a Safaricom M-Pesa number.",
    "started": "You will get an M-Pesa prompt for {amount} on {phone} in a few seconds. "
               "Enter your M-Pesa PIN to pay for meter {number}.",
    "cancelled": "Cancelled. Nothing was charged.",
    "pending": "An M-Pesa prompt is already waiting on your phone. Finish or cancel it, then dial again.",
    "not_started": "Sorry, we could not start the payment. Nothing was charged. Please try again later.",
    "balance": "Balance",
    "balance_live": "{amount} now",
    "balance_old": "{amount}, {age}",
    "balance_unknown": "Balance not known yet.",
    "paybill": "Pay by Paybill {number}, account {meter}",
    "no_meters": "No meter is linked to this phone. Ask your landlord to add you.",
    "payments": "Last payments:",
    "no_payments": "No payments yet.",
    "choose_language": "Choose language:",
    "language_saved": "Language saved.",
    "menu.alerts": "Alerts",
    "days_left": "about {days} days at your usual use",
    "day_left": "about 1 day at your usual use",
    "day_less": "less than a day at your usual use",
    "days_left_many": "over 99 days at your usual use",
    "alerts": "Low-balance alerts:",
    "alert_on": "On, below {level}",
    "alert_on_auto": "On, below about 2 days of use",
    "alert_off": "Off",
    "alert_change": "Change level",  # option labels <= 20 characters: WhatsApp buttons
    "alert_turn_off": "Turn off",
    "alert_turn_on": "Turn on",
    "alert_automatic": "Automatic level",
    "enter_level": "Alert me when the balance is below ({unit}, {min}-{max}):",
    "alerts_saved": "Alerts saved.",
    "alerts_not_saved": "Not saved. Try again.",
    "err.level": "Whole {unit} {min}-{max} only.",
    "err.choice": "Invalid choice.",
    "err.amount": "Whole KES {min}-{max} only.",
    "err.meter": "Meter {number} not found.",
    "err.meter_format": "Use the number on the meter.",
    "err.meter_off": "Meter {number} is not in service.",
    "too_many": "Too many wrong entries. Please dial again. Goodbye.",
    "expired": "This session has ended. Please dial again.",
    "age.now": "just now",
    "age.min": "{n} min ago",
    "age.hours": "{n} h ago",
    "age.days": "{n} days ago",
    "status.requested": "Sending",
    "status.pending": "Waiting",
    "status.completed": "Paid",
    "status.failed": "Failed",
    "status.cancelled": "Cancelled",
    "status.push_failed": "Not sent",
    "status.needs_review": "Checking",
}

SW = {
    "app": "LipaMeter",
    "menu.buy": "Nunua umeme",
    "menu.balance": "Angalia salio",
    "menu.payments": "Malipo yangu",
    "menu.language": "Lugha",
    "nav.back": "Rudi",
    "nav.home": "Mwanzo",
    "nav.more": "Zaidi",
    "choose_meter": "Chagua mita:",
    "other_meter": "Mita nyingine",
    "enter_meter": "Weka nambari ya mita:",
    "enter_amount": "Weka kiasi, KES {min}-{max}:",
    "meter_line": "Mita {number} {name}",
    "confirm": "Thibitisha malipo:",
    "amount_line": "Kiasi {amount}",
    "phone_line": "Simu {phone}",
    "pay_now": "Lipa sasa",
    "cancel": "Ghairi",
    "other_payer": "Lipa simu nyingine",
    "enter_payer": "Weka nambari ya Safaricom ya kulipa:",
    "not_safaricom": "Ombi la M-Pesa hufika laini za Safaricom tu.",
    "err.payer": "Tumia nambari ya M-Pesa ya Safaricom.",
    "started": "Utapokea ombi la M-Pesa la {amount} kwa {phone} baada ya sekunde chache. "
               "Weka PIN yako ya M-Pesa kulipia mita {number}.",
    "cancelled": "Imeghairiwa. Hakuna pesa iliyotozwa.",
    "pending": "Tayari kuna ombi la M-Pesa kwenye simu yako. Likamilishe au ulighairi, kisha piga tena.",
    "not_started": "Samahani, malipo hayakuanza. Hakuna pesa iliyotozwa. Tafadhali jaribu tena baadaye.",
    "balance": "Salio",
    "balance_live": "{amount} sasa",
    "balance_old": "{amount}, {age}",
    "balance_unknown": "Salio halijulikani bado.",
    "paybill": "Lipa kwa Paybill {number}, akaunti {meter}",
    "no_meters": "Hakuna mita iliyounganishwa na simu hii. Mwombe mwenye nyumba akuongeze.",
    "payments": "Malipo ya mwisho:",
    "no_payments": "Bado hakuna malipo.",
    "choose_language": "Chagua lugha:",
    "language_saved": "Lugha imehifadhiwa.",
    "menu.alerts": "Arifa",
    "days_left": "takriban siku {days} kwa matumizi ya kawaida",
    "day_left": "takriban siku 1 kwa matumizi ya kawaida",
    "day_less": "chini ya siku 1 kwa matumizi ya kawaida",
    "days_left_many": "zaidi ya siku 99 kwa matumizi ya kawaida",
    "alerts": "Arifa za salio kidogo:",
    "alert_on": "Zimewashwa, chini ya {level}",
    "alert_on_auto": "Zimewashwa, chini ya matumizi ya siku 2",
    "alert_off": "Zimezimwa",
    "alert_change": "Badilisha kiwango",
    "alert_turn_off": "Zima",
    "alert_turn_on": "Washa",
    "alert_automatic": "Kiwango otomatiki",
    "enter_level": "Nijulishe salio likiwa chini ya ({unit}, {min}-{max}):",
    "alerts_saved": "Arifa zimehifadhiwa.",
    "alerts_not_saved": "Hazikuhifadhiwa. Jaribu tena.",
    "err.level": "{unit} {min}-{max} bila senti.",
    "err.choice": "Chaguo si sahihi.",
    "err.amount": "KES {min}-{max} bila senti.",
    "err.meter": "Mita {number} haipatikani.",
    "err.meter_format": "Tumia nambari iliyo kwenye mita.",
    "err.meter_off": "Mita {number} haitumiki.",
    "too_many": "Makosa mengi mno. Tafadhali piga tena. Kwaheri.",
    "expired": "Kipindi hiki kimekwisha. Tafadhali piga tena.",
    "age.now": "sasa hivi",
    "age.min": "dakika {n} zilizopita",
    "age.hours": "saa {n} zilizopita",
    "age.days": "siku {n} zilizopita",
    "status.requested": "Inatumwa",
    "status.pending": "Inasubiri",
    "status.completed": "Imelipwa",
    "status.failed": "Imeshindwa",
    "status.cancelled": "Imeghairiwa",
    "status.push_failed": "Haikutumwa",
    "status.needs_review": "Inakaguliwa",
}

TEXTS = {"en": EN, "sw": SW}
LANGUAGE_NAMES = {"en": "English", "sw": "Kiswahili"}  # each in its own language, so anyone finds theirs

# Before we know who is calling (odd phone number, unknown session), say it in both languages.
BILINGUAL_EXPIRED = "Session ended. Please dial again.\nKipindi kimekwisha. Tafadhali piga tena."
BILINGUAL_NOT_KENYAN = ("Sorry, LipaMeter works with Kenyan M-Pesa numbers only.\n"
                        "Samahani, LipaMeter ni kwa nambari za M-Pesa za Kenya tu.")
BILINGUAL_TOO_MANY = ("Too many sessions from this phone. Please try again later.\n"
                      "Vipindi vingi mno kutoka simu hii. Tafadhali jaribu tena baadaye.")
BILINGUAL_TROUBLE = "Sorry, something went wrong. Please try again.\nSamahani, kuna hitilafu. Jaribu tena."


def text(language: str, key: str, **values: object) -> str:
    table = TEXTS.get(language, EN)
    return table[key].format(**values) if values else table[key]


def kes(amount: Decimal | int) -> str:
    return format_kes(amount)


def days_left(language: str, days: int) -> str:
    """"about 12 days at your usual use"; past 99 days only that (a screen has no room for more)."""
    if days > 99:
        return text(language, "days_left_many")
    if days < 1:
        return text(language, "day_less")
    return text(language, "day_left") if days == 1 else text(language, "days_left", days=days)


def level(unit: str, value: Decimal | int) -> str:
    """An alert level in the meter's unit: `KES 50`, `5 kWh`."""
    return kes(value) if unit == "KES" else f"{Decimal(value).normalize():f} {unit}"


def thousands(value: int) -> str:
    return f"{value:,}"


def age(language: str, seconds: int) -> str:
    """`5 min ago` / `dakika 5 zilizopita`: how old a last known meter reading is."""
    if seconds < 60:
        return text(language, "age.now")
    if seconds < 3600:
        return text(language, "age.min", n=seconds // 60)
    if seconds < 2 * 86400:
        return text(language, "age.hours", n=seconds // 3600)
    return text(language, "age.days", n=seconds // 86400)


def short_date(moment: datetime) -> str:
    """`27/11`, in Nairobi time: the day a tenant remembers paying."""
    return moment.astimezone(NAIROBI).strftime("%d/%m")


def local_phone(phone: str) -> str:
    """`254712345678` -> `0712345678`, the way Kenyans write their own number."""
    return "0" + phone[3:] if phone.startswith("254") and len(phone) == 12 else phone
