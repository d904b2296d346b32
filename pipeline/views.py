"""The subscriber's opt-out page: ask for a code, enter it, see and change the status.

A verified number lives in the session (as its hash) for OPTOUT_SESSION_SECONDS. GET never
writes: the status page only reads (a status check once switched the status it showed).
"""

import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from pipeline.forms import CodeForm, NumberForm, StatusForm
from pipeline.numbers import InvalidNumber
from pipeline.selectors import optout_last_change, optout_status_get
from pipeline.services import CodeRefused, optout_code_check, optout_code_request, optout_status_set

PENDING = "optout_pending"  # {"number_hash", "masked"}: a code was sent
VERIFIED = "optout_verified"  # {"number_hash", "masked", "until"}: the code was entered


@require_http_methods(["GET", "HEAD", "POST"])
def request_code(request: HttpRequest) -> HttpResponse:
    form = NumberForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            sent = optout_code_request(raw_number=form.cleaned_data["number"])
        except InvalidNumber as exc:
            form.add_error("number", str(exc))
        except CodeRefused as refused:
            form.add_error("number", str(refused))
            return render(request, "pipeline/request.html", {"form": form}, status=429)
        else:
            request.session.pop(VERIFIED, None)
            request.session[PENDING] = {"number_hash": sent.number_hash, "masked": sent.masked_number}
            return redirect("optout-verify")
    status = 400 if request.method == "POST" else 200
    return render(request, "pipeline/request.html", {"form": form}, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
def verify_code(request: HttpRequest) -> HttpResponse:
    pending = request.session.get(PENDING)
    if pending is None:
        return redirect("optout-request")
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            optout_code_check(number_hash=pending["number_hash"], code=form.cleaned_data["code"].strip())
        except CodeRefused as refused:
            form.add_error("code", str(refused))
        else:
            del request.session[PENDING]
            request.session.cycle_key()  # a new session id for the verified number
            until = time.time() + settings.OPTOUT_SESSION_SECONDS
            request.session[VERIFIED] = {**pending, "until": until}
            return redirect("optout-status")
    status = 400 if request.method == "POST" else 200
    return render(request, "pipeline/verify.html", {"form": form, "masked": pending["masked"]}, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
def status(request: HttpRequest) -> HttpResponse:
    verified = request.session.get(VERIFIED)
    if verified is None or verified["until"] < time.time():
        request.session.pop(VERIFIED, None)
        return redirect("optout-request")
    form = StatusForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if form.is_valid():
            optout_status_set(number_hash=verified["number_hash"], opted_out=form.cleaned_data["choice"] == "out")
            return redirect("optout-status")  # after a POST, a reload only reads
        return HttpResponse("choice must be 'out' or 'in'", status=400, content_type="text/plain")
    context = {
        "masked": verified["masked"],
        "opted_out": optout_status_get(number_hash=verified["number_hash"]),
        "changed_at": optout_last_change(number_hash=verified["number_hash"]),
    }
    return render(request, "pipeline/status.html", context)


@require_http_methods(["POST"])
def sign_out(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return redirect("optout-request")
