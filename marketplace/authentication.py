from rest_framework import authentication, exceptions

from marketplace.services import Principal, api_key_authenticate

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>`; the request then acts as the key's tenant and role."""

    def authenticate(self, request) -> tuple[Principal, object] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            keyword, _, raw_key = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the Authorization header must be ASCII") from None
        if keyword != KEYWORD or not raw_key.strip() or " " in raw_key.strip():
            raise exceptions.AuthenticationFailed(f"use the header 'Authorization: {KEYWORD} <key>'")
        principal = api_key_authenticate(raw_key=raw_key.strip())
        if principal is None:
            raise exceptions.AuthenticationFailed("the API key is unknown or revoked")
        return principal, principal.api_key

    def authenticate_header(self, request) -> str:
        return KEYWORD
