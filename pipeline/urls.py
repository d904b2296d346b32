from django.urls import path

from pipeline import views

urlpatterns = [
    path("", views.request_code, name="optout-request"),
    path("code/", views.verify_code, name="optout-verify"),
    path("status/", views.status, name="optout-status"),
    path("sign-out/", views.sign_out, name="optout-sign-out"),
]
