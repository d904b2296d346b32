"""Stripe's webhooks: verified, stored as received, applied once."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import invoices, stripe_gateway
from marketplace.exceptions import error_body


@csrf_exempt
@require_POST
def stripe_webhook(request) -> JsonResponse:
    try:
        event = stripe_gateway.event_verified(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
    except stripe_gateway.BadSignature as error:
        body = error_body(
            error_type="validation_error",
            errors=[
                {"code": "bad_signature", "detail": f"the Stripe-Signature does not verify: {error}", "attr": None}
            ],
        )
        return JsonResponse(body, status=400)
    new = invoices.stripe_event_receive(event=event)
    return JsonResponse({"received": True, "new": new})
