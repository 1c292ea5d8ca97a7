"""Configuration from the environment (and `.env`), named as in DESIGN §6. Secrets are SecretStr so
they never print in a repr, a log line or a traceback."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.db import DEFAULT_DATABASE_URL

TELEGRAM_WEBHOOK_PORTS = (443, 80, 88, 8443)  # setWebhook: "Ports currently supported for webhooks"


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    public_base_url: str = ""
    api_keys: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    callback_token: SecretStr = SecretStr("")
    callback_allowed_ips: str = ""
    trusted_proxies: str = ""
    ussd_allowed_ips: str = ""  # Africa's Talking's addresses; empty lets any source post USSD hops
    sms_report_allowed_ips: str = ""  # where SMS delivery reports may come from; empty: USSD_ALLOWED_IPS
    verify_callbacks: bool = False

    daraja_base_url: str = "https://sandbox.safaricom.co.ke"
    daraja_consumer_key: SecretStr = SecretStr("")
    daraja_consumer_secret: SecretStr = SecretStr("")
    daraja_shortcode: str = ""
    daraja_passkey: SecretStr = SecretStr("")
    daraja_transaction_type: str = "CustomerPayBillOnline"
    daraja_party_b: str = ""
    daraja_timeout_s: float = 15.0
    daraja_c2b_shortcode: str = ""  # the Paybill/Till whose C2B URLs we register; default DARAJA_SHORTCODE
    paybill_number: str = ""  # the business number tenants are shown; default the C2B shortcode

    tuya_endpoint: str = ""
    tuya_access_id: str = ""
    tuya_access_secret: SecretStr = SecretStr("")
    tuya_timeout_s: float = Field(10.0, gt=0)
    meter_profiles_file: str = ""  # TOML or JSON profiles merged over the built-in ones

    telegram_bot_token: SecretStr = SecretStr("")
    telegram_webhook_secret: SecretStr = SecretStr("")
    telegram_webhook_url: str = ""
    telegram_api_base: str = ""

    whatsapp_token: SecretStr = SecretStr("")  # a system user's permanent access token
    whatsapp_phone_number_id: str = ""
    whatsapp_app_secret: SecretStr = SecretStr("")  # signs the webhook deliveries (X-Hub-Signature-256)
    whatsapp_verify_token: SecretStr = SecretStr("")  # our own secret, typed into Meta's webhook settings
    whatsapp_api_base: str = ""  # default https://graph.facebook.com/v21.0; the sandbox in the demo
    whatsapp_receipt_template: str = ""  # "name:language" of an approved template with one body parameter

    at_username: str = ""
    at_api_key: SecretStr = SecretStr("")
    at_sender_id: str = ""
    at_api_base: str = ""

    min_amount: int = Field(10, ge=1)
    max_amount: int = Field(100_000, ge=1, le=250_000)  # Daraja's own ceiling is 250,000 a transaction
    topup_max_attempts: int = Field(12, ge=1)
    topup_confirm_deadline_s: float = Field(20, gt=0)
    topup_poll_interval_s: float = Field(0.3, gt=0)  # the first confirm poll; then x1.5 up to 5 s
    topup_backoff_s: str = "10,30,120,600,1800"  # then hourly, up to TOPUP_MAX_ATTEMPTS
    topup_attempt_lease_s: float = Field(180, gt=0)  # longer than any one attempt can take
    job_lease_s: float = Field(120, gt=0)  # the backstop: a running job not renewed this long is taken over
    worker_heartbeat_s: float = Field(5, gt=0)  # each worker beats (and renews what it runs) this often
    worker_silent_after_s: float = Field(15, gt=0)  # a worker silent this long is dead: its claims are taken over
    worker_concurrency: int = Field(8, ge=1, le=256)  # jobs one worker runs at once (one top-up per meter still)
    # While at most this many callbacks are in flight in one process, each is applied before its answer;
    # past it (a rush) the answer goes out once the body is committed and a worker applies it (the inbox).
    callback_apply_inline_max: int = Field(4, ge=0, le=1024)
    reconcile_after_s: float = Field(120, gt=0)
    reconcile_give_up_s: float = Field(3600, gt=0)
    sweep_every_s: float = Field(30, gt=0)
    audit_every_s: float = Field(300, gt=0)  # the worker checks the books this often (metrics, the landlord's alert)
    admin_phone: str = ""  # the landlord's mobile: violations and new reviews, at most one message an hour
    readings_every_s: float = Field(900, ge=60)  # a meter far from empty is read this often
    tuya_calls_per_minute: int = Field(60, ge=1)  # shared by all workers; sampling stays within it
    alert_quiet_hours: str = "21-7"  # Nairobi hours without low-balance alerts; empty: none
    ussd_code: str = ""  # e.g. *384*123#, told in SMS alerts
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # Slow clients (web/serving.py): request headers must arrive within this; idle kept-alive connections
    # close after HTTP_KEEP_ALIVE_S; beyond HTTP_MAX_CONNECTIONS connections and tasks, new requests get 503.
    http_header_timeout_s: float = Field(10.0, gt=0)
    http_keep_alive_s: int = Field(5, ge=1)
    http_max_connections: int = Field(1000, ge=10)
    log_level: str = "INFO"

    @property
    def api_key_list(self) -> list[str]:
        return _split(self.api_keys.get_secret_value())

    @property
    def allowed_callback_ips(self) -> list[str]:
        return _split(self.callback_allowed_ips)

    @property
    def allowed_sms_report_ips(self) -> list[str]:
        # Both come from Africa's Talking, so one list usually serves both.
        return _split(self.sms_report_allowed_ips or self.ussd_allowed_ips)

    @property
    def sms_report_url(self) -> str:
        """The delivery report URL to register in Africa's Talking's dashboard (SMS > Callback URLs)."""
        return f"{self.public_base_url.rstrip('/')}/sms/delivery/{self.callback_token.get_secret_value()}"

    @property
    def trusted_proxy_list(self) -> list[str]:
        return _split(self.trusted_proxies)

    @property
    def callback_url(self) -> str:
        # Not /mpesa/...: Safaricom's guidance says callback URLs naming M-Pesa or Safaricom may be filtered.
        return f"{self.public_base_url.rstrip('/')}/payments/callback/{self.callback_token.get_secret_value()}"

    @property
    def telegram_webhook_target(self) -> str:
        """Where the bot asks Telegram to post updates: TELEGRAM_WEBHOOK_URL, else PUBLIC_BASE_URL's."""
        base = self.public_base_url.rstrip("/")
        return self.telegram_webhook_url or (f"{base}/telegram/webhook" if base else "")

    def telegram_webhook_problem(self) -> str | None:
        """Why api.telegram.org would refuse the webhook URL (setWebhook: HTTPS, ports 443, 80, 88 or
        8443 only), or None. A self-hosted Bot API server or the sandbox (TELEGRAM_API_BASE) may take any."""
        url = self.telegram_webhook_target
        if not self.telegram_bot_token.get_secret_value() or not url or self.telegram_api_base:
            return None
        parts = urlsplit(url)
        if parts.scheme.lower() != "https" or not parts.hostname:
            return f"the Telegram webhook {url!r} is not an https:// URL; Telegram posts updates only over HTTPS"
        try:
            port = parts.port or 443
        except ValueError:
            return f"the Telegram webhook {url!r} has no valid port"
        if port not in TELEGRAM_WEBHOOK_PORTS:
            return (f"the Telegram webhook {url!r} uses port {port}; Telegram posts only to ports "
                    + ", ".join(map(str, TELEGRAM_WEBHOOK_PORTS)))
        return None

    @property
    def c2b_shortcode(self) -> str:
        return self.daraja_c2b_shortcode or self.daraja_shortcode

    @property
    def paybill(self) -> str:
        """The business number shown to tenants ("Pay by Paybill"); empty shows nothing."""
        return self.paybill_number or self.c2b_shortcode

    def c2b_url(self, step: str) -> str:
        """`validate` or `confirm`: the URLs registered with Daraja (no "mpesa" in the path, as Safaricom asks)."""
        return f"{self.public_base_url.rstrip('/')}/payments/c2b/{step}/{self.callback_token.get_secret_value()}"

    def startup_warnings(self) -> list[str]:
        """Settings `serve` runs with but that will not work against the real Daraja."""
        from gateways.daraja import environment_warnings

        warnings = []
        if self.public_base_url and not self.public_base_url.lower().startswith("https://"):
            warnings.append(f"PUBLIC_BASE_URL {self.public_base_url!r} is not https://: Daraja calls back only over "
                            "HTTPS, so no payment will ever be confirmed by its callback")
        warnings += environment_warnings(self.daraja_base_url, self.daraja_shortcode,
                                         self.daraja_passkey.get_secret_value())
        return warnings

    def missing_for_serve(self) -> list[str]:
        """What `lipameter serve` cannot run without. It never falls back to the sandbox silently."""
        required = {
            "PUBLIC_BASE_URL": self.public_base_url,
            "API_KEYS": self.api_keys.get_secret_value(),
            "CALLBACK_TOKEN": self.callback_token.get_secret_value(),
            "DARAJA_CONSUMER_KEY": self.daraja_consumer_key.get_secret_value(),
            "DARAJA_CONSUMER_SECRET": self.daraja_consumer_secret.get_secret_value(),
            "DARAJA_SHORTCODE": self.daraja_shortcode,
            "DARAJA_PASSKEY": self.daraja_passkey.get_secret_value(),
            "TUYA_ENDPOINT": self.tuya_endpoint,
            "TUYA_ACCESS_ID": self.tuya_access_id,
            "TUYA_ACCESS_SECRET": self.tuya_access_secret.get_secret_value(),
        }
        return [name for name, value in required.items() if not value] + self.missing_for_whatsapp()

    def _whatsapp_required(self) -> dict[str, str]:
        return {
            "WHATSAPP_TOKEN": self.whatsapp_token.get_secret_value(),
            "WHATSAPP_PHONE_NUMBER_ID": self.whatsapp_phone_number_id,
            "WHATSAPP_APP_SECRET": self.whatsapp_app_secret.get_secret_value(),
            "WHATSAPP_VERIFY_TOKEN": self.whatsapp_verify_token.get_secret_value(),
        }

    def missing_for_whatsapp(self) -> list[str]:
        """WhatsApp is optional, but half a configuration is a mistake: an app secret without a token
        answers nobody, a token without the app secret refuses every delivery."""
        required = self._whatsapp_required()
        if not any(required.values()) and not self.whatsapp_receipt_template:
            return []
        return [name for name, value in required.items() if not value]

    @property
    def whatsapp_enabled(self) -> bool:
        return all(self._whatsapp_required().values())

    @property
    def whatsapp_template(self) -> tuple[str, str]:
        """(name, language) of the receipt template; ("", "") when none is configured."""
        name, _, language = self.whatsapp_receipt_template.strip().partition(":")
        return (name.strip(), language.strip() or "en") if name.strip() else ("", "")

    @property
    def topup_backoff(self) -> tuple[float, ...]:
        return tuple(float(item) for item in _split(self.topup_backoff_s))

    @property
    def admin_phone_number(self) -> str | None:
        """ADMIN_PHONE as stored (2547…), or None when unset or not a Kenyan mobile number."""
        from core.shared.errors import InvalidInput
        from core.shared.phone import normalize_kenyan_mobile

        try:
            return normalize_kenyan_mobile(self.admin_phone) if self.admin_phone else None
        except InvalidInput:
            return None

    @property
    def sms_enabled(self) -> bool:
        return bool(self.at_username and self.at_api_key.get_secret_value())

    @property
    def tuya_enabled(self) -> bool:
        return bool(self.tuya_endpoint and self.tuya_access_id and self.tuya_access_secret.get_secret_value())

    def validation_problems(self) -> list[str]:
        problems = []
        if self.min_amount > self.max_amount:
            problems.append("MIN_AMOUNT is above MAX_AMOUNT")
        if self.daraja_transaction_type not in ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"):
            problems.append("DARAJA_TRANSACTION_TYPE must be CustomerPayBillOnline or CustomerBuyGoodsOnline")
        try:
            if not self.topup_backoff or min(self.topup_backoff) <= 0:
                problems.append("TOPUP_BACKOFF_S must be positive seconds, comma-separated")
        except ValueError:
            problems.append("TOPUP_BACKOFF_S must be numbers of seconds, comma-separated")
        if self.admin_phone and self.admin_phone_number is None:
            problems.append("ADMIN_PHONE must be a Kenyan mobile number such as 0712345678")
        if self.worker_silent_after_s < 2 * self.worker_heartbeat_s:
            problems.append("WORKER_SILENT_AFTER_S must be at least twice WORKER_HEARTBEAT_S (one late beat is "
                            "not a death)")
        from core.usage.alerts import parse_quiet_hours

        try:
            parse_quiet_hours(self.alert_quiet_hours)
        except ValueError as error:
            problems.append(f"ALERT_QUIET_HOURS: {error}")
        token = self.callback_token.get_secret_value()
        if token and len(token) < 16:
            problems.append("CALLBACK_TOKEN must be at least 16 characters (it is the callback's only secret)")
        return problems
