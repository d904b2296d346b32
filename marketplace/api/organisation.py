"""An organisation's own settings and billing over the API: its keys, webhooks, members,
spending limit, monthly usage and invoices."""

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from billing import selectors as billing_selectors
from billing.models import Invoice
from marketplace import selectors, services
from marketplace.api.bases import OwnersOnlyViewSet, TenantRowsViewSet, TenantViewSet
from marketplace.api.bounds import is_supported_date, supported_dates_text
from marketplace.api.serializers import (
    ApiKeyCreated,
    ApiKeyInput,
    ApiKeyOutput,
    InvoiceOutput,
    MemberInput,
    MemberOutput,
    MemberRoleInput,
    OrganisationInput,
    OrganisationOutput,
    UsageOutput,
    WebhookCreated,
    WebhookDeliveryOutput,
    WebhookInput,
    WebhookOutput,
)
from marketplace.models import ApiKey, Membership, Role, WebhookEndpoint
from marketplace.services import Principal


class ApiKeyViewSet(OwnersOnlyViewSet):
    """Your organisation's API keys; owners only. A key's secret is shown once, when it is made."""

    serializer_class = ApiKeyOutput
    model = ApiKey

    def visible(self, principal: Principal) -> QuerySet:
        return selectors.api_key_list(tenant=principal.tenant)

    @extend_schema(request=ApiKeyInput, responses={201: ApiKeyCreated})
    def create(self, request):
        data = ApiKeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, raw_key = services.api_key_create(
            tenant=request.user.tenant, actor=request.user.api_key, **data.validated_data
        )
        return Response({**ApiKeyOutput(api_key).data, "key": raw_key}, status=201)

    @extend_schema(request=None, responses={200: ApiKeyOutput})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        api_key = self.get_object()
        services.api_key_revoke(api_key=api_key, actor=request.user.api_key)
        return Response(ApiKeyOutput(api_key).data)

    @extend_schema(request=None, responses={201: ApiKeyCreated})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        """A new secret for the key's name, role and expiry; the old secret stops working now."""
        api_key, raw_key = services.api_key_rotate(api_key=self.get_object(), actor=request.user.api_key)
        return Response({**ApiKeyOutput(api_key).data, "key": raw_key}, status=201)


class WebhookViewSet(OwnersOnlyViewSet):
    """Endpoints told when a report succeeds or fails; owners only. Signed as docs/webhooks.md shows.
    Hosts must resolve to public internet addresses; at most WEBHOOK_MAX_ENDPOINTS (10) per organisation."""

    serializer_class = WebhookOutput
    model = WebhookEndpoint

    def visible(self, principal: Principal) -> QuerySet:
        return selectors.webhook_endpoint_list(tenant=principal.tenant)

    @extend_schema(request=WebhookInput, responses={201: WebhookCreated})
    def create(self, request):
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_create(principal=request.user, **data.validated_data)
        return Response(WebhookCreated(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.webhook_endpoint_delete(principal=request.user, endpoint=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={200: WebhookDeliveryOutput(many=True)})
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        """The endpoint's deliveries, newest first, with the answers they got."""
        deliveries = self.paginate_queryset(self.get_object().deliveries.all())
        return self.get_paginated_response(WebhookDeliveryOutput(deliveries, many=True).data)

    @extend_schema(request=None, responses={202: WebhookDeliveryOutput})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send the endpoint a signed `webhook.test` event now, whatever events it listens to.
        It is tried once: its answer shows in `deliveries/` (this delivery's id) within seconds."""
        delivery = services.webhook_test_send(principal=request.user, endpoint=self.get_object())
        return Response(WebhookDeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)


class MemberViewSet(OwnersOnlyViewSet):
    """The organisation's people and their roles; owners only."""

    serializer_class = MemberOutput
    model = Membership

    def visible(self, principal: Principal) -> QuerySet:
        return selectors.member_list(tenant=principal.tenant)

    @extend_schema(request=MemberInput, responses={201: MemberOutput})
    def create(self, request):
        data = MemberInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_add(principal=request.user, **data.validated_data)
        return Response(MemberOutput(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberRoleInput, responses={200: MemberOutput})
    def partial_update(self, request, pk=None):
        data = MemberRoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_change_role(
            principal=request.user, membership=self.get_object(), role=data.validated_data["role"]
        )
        return Response(MemberOutput(membership).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.member_remove(principal=request.user, membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrganisationViewSet(TenantViewSet):
    """Your organisation, with its monthly spending limit (owners set it) and this month's spending."""

    serializer_class = OrganisationInput
    write_roles = (Role.OWNER,)

    @extend_schema(responses={200: OrganisationOutput})
    def retrieve(self, request):
        return Response(self._output(request.user.tenant))

    @extend_schema(request=OrganisationInput, responses={200: OrganisationOutput})
    def partial_update(self, request):
        data = OrganisationInput(data=request.data)
        data.is_valid(raise_exception=True)
        limit = data.validated_data["monthly_spending_limit"]
        tenant = services.tenant_spending_limit_set(
            principal=request.user, limit_cents=None if limit is None else int(limit * 100)
        )
        return Response(self._output(tenant))

    @staticmethod
    def _output(tenant) -> dict:
        context = {
            "spent_cents": billing_selectors.month_spent_cents(
                tenant=tenant, month=billing_selectors.current_month(tenant)
            ),
            "committed_cents": billing_selectors.committed_cents(tenant=tenant),
        }
        return OrganisationOutput(tenant, context=context).data


class UsageViewSet(TenantViewSet):
    """What your organisation was billed in a month, per product; finance and owners."""

    serializer_class = UsageOutput
    read_roles = (Role.FINANCE, Role.OWNER)
    write_roles = ()

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "period",
                OpenApiTypes.STR,
                description="YYYY-MM, years 2000 to 2100; default: this month",
                required=False,
            )
        ],
        responses={200: UsageOutput},
    )
    def retrieve(self, request):
        tenant = request.user.tenant
        period = request.query_params.get("period")
        try:
            month = billing_selectors.parse_month(period) if period else billing_selectors.current_month(tenant)
        except ValueError as error:
            raise ValidationError({"period": [f"period must be {error}"]}, code="invalid_period") from None
        if not is_supported_date(month):  # a month past 9999-12 has no end
            raise ValidationError({"period": [f"period must be {supported_dates_text()}"]}, code="invalid_period")
        products = billing_selectors.month_usage_by_product(tenant=tenant, month=month)
        return Response(
            UsageOutput(
                {"period": f"{month:%Y-%m}", "time_zone": settings.BILLING_TIME_ZONE, "products": products}
            ).data
        )


class InvoiceViewSet(mixins.ListModelMixin, TenantRowsViewSet):
    """Your organisation's invoices, as Stripe issued them; finance and owners."""

    serializer_class = InvoiceOutput
    model = Invoice
    read_roles = (Role.FINANCE, Role.OWNER)
    write_roles = ()

    def visible(self, principal: Principal) -> QuerySet:
        return billing_selectors.invoice_list(tenant=principal.tenant)
