"""`lipameter mpesa register-urls`: register the C2B validation and confirmation URLs of the Paybill
or Till (DARAJA_C2B_SHORTCODE, default DARAJA_SHORTCODE) with Daraja (Register URL v2).

ResponseType is what M-Pesa does when our validation URL does not answer in time (only used once
Safaricom has enabled external validation on the shortcode): `Completed` takes the money anyway (an
unknown account then waits for a person), `Cancelled` gives it back to the payer."""

from __future__ import annotations

import argparse

from core.shared.errors import UpstreamError
from gateways.daraja import RESPONSE_TYPES
from web.bootstrap import Container
from web.cli.common import fail, load_settings, run_with_container


def cmd_register_urls(args: argparse.Namespace) -> None:
    settings = load_settings()
    missing = [name for name, value in (("PUBLIC_BASE_URL", settings.public_base_url),
                                        ("CALLBACK_TOKEN", settings.callback_token.get_secret_value()),
                                        ("DARAJA_C2B_SHORTCODE or DARAJA_SHORTCODE", settings.c2b_shortcode))
               if not value]
    if missing:
        fail(f"set {', '.join(missing)} first")

    async def go(container: Container) -> dict:
        try:
            return await container.payment_gateway.register_c2b_urls(
                shortcode=settings.c2b_shortcode, response_type=args.response_type,
                confirmation_url=settings.c2b_url("confirm"), validation_url=settings.c2b_url("validate"))
        except UpstreamError as error:
            fail(error.message, exit_code=1)

    answer = run_with_container(go)
    base = settings.public_base_url.rstrip("/")
    # The paths carry CALLBACK_TOKEN: print them without it.
    print(f"C2B URLs registered for shortcode {settings.c2b_shortcode} (ResponseType {args.response_type}):")
    print(f"  validation:   {base}/payments/c2b/validate/<CALLBACK_TOKEN>")
    print(f"  confirmation: {base}/payments/c2b/confirm/<CALLBACK_TOKEN>")
    print(f"  Daraja: {answer.get('ResponseDescription') or answer.get('ResponseCode') or 'accepted'}")


def add_parser(sub) -> None:
    mpesa = sub.add_parser("mpesa", help="M-Pesa (Daraja) set-up").add_subparsers(
        dest="mpesa_command", required=True, metavar="ACTION")
    register = mpesa.add_parser("register-urls", help="register the Paybill/Till C2B validation and confirmation URLs")
    register.add_argument("--response-type", default="Completed", choices=RESPONSE_TYPES,
                          help="what M-Pesa does when validation does not answer in time (default Completed)")
    register.set_defaults(func=cmd_register_urls)
