from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path

from pipeline import views

# The pages carry their small stylesheet inline (base.html); scripts stay 'self' only.
inline_styles = csp_update({"style-src": [SELF, UNSAFE_INLINE]})

urlpatterns = [
    path("", inline_styles(views.request_code), name="optout-request"),
    path("code/", inline_styles(views.verify_code), name="optout-verify"),
    path("status/", inline_styles(views.status), name="optout-status"),
    path("sign-out/", inline_styles(views.sign_out), name="optout-sign-out"),
]
