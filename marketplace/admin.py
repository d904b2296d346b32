from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import User
from django.db.models import Count, Q, Sum
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers, patch_cache_control
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from billing import services as billing_services
from billing.models import UsageLine
from insights.admin import ReadOnlyAdmin
from insights.boundaries import boundary_from_text, boundary_svg
from marketplace import selectors, services
from marketplace.exceptions import ServiceError
from marketplace.models import (
    ApiKey,
    Area,
    AuditEvent,
    LicensedRegion,
    Membership,
    Product,
    Release,
    Report,
    Role,
    Tenant,
)

admin.site.unregister(User)


class PersonForm(UserChangeForm):
    def clean(self):
        data = super().clean()
        member = self.instance.pk and Membership.objects.filter(user=self.instance).exists()
        if member and (data.get("is_staff") or data.get("is_superuser")):
            raise forms.ValidationError("a member of an organisation cannot be a staff account; remove them first")
        return data


@admin.register(User)
class PeopleAdmin(UserAdmin):
    """Account managers add and edit the people of customer organisations; only superusers
    see staff accounts or hand out staff rights, so no one can raise their own."""

    form = PersonForm
    STAFF_RIGHTS = ("is_staff", "is_superuser", "groups", "user_permissions")

    def get_queryset(self, request):
        people = super().get_queryset(request)
        return people if request.user.is_superuser else people.filter(is_staff=False, is_superuser=False)

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if request.user.is_superuser else (*fields, *self.STAFF_RIGHTS)


class MembershipInline(admin.TabularInline):
    """Saved through the services (TenantAdmin.save_formset): a new role revokes the keys it does
    not allow, a removal all of the member's keys, and each change is logged with the staff user."""

    model = Membership
    extra = 0

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":  # customers' people only: staff accounts never belong to a tenant
            kwargs["queryset"] = User.objects.filter(is_staff=False, is_superuser=False).order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ApiKeyForm(forms.ModelForm):
    revoke = forms.BooleanField(required=False, help_text="for good: a revoked key never works again")

    class Meta:
        model = ApiKey
        fields = ["name", "expires_at"]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    form = ApiKeyForm
    extra = 0
    fields = [
        "name",
        "prefix",
        "role",
        "holder",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoke",
    ]
    # A key's role and holder are set when it is made, within the holder's role; revoke and make another.
    # Revocation is final (the database refuses to undo it), so revoked_at is shown, never edited.
    readonly_fields = ["prefix", "role", "holder", "created_by", "created_at", "last_used_at", "revoked_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # keys are created with create_api_key, which shows the secret once


class TenantForm(forms.ModelForm):
    """A tenant with what it may order: its products and licensed regions (django-guardian grants)."""

    products = forms.ModelMultipleChoiceField(Product.objects.filter(is_active=True), required=False)
    licensed_regions = forms.ModelMultipleChoiceField(LicensedRegion.objects.all(), required=False)

    class Meta:
        model = Tenant
        fields = ["name", "kind", "time_zone", "monthly_spending_limit_cents"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["products"].initial = list(selectors.product_granted_list(tenant=self.instance))
            self.fields["licensed_regions"].initial = selectors.licensed_region_list(tenant=self.instance, at=None)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = ["name", "kind", "time_zone", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    inlines = [MembershipInline, ApiKeyInline]
    readonly_fields = ["this_month", "licences"]
    actions = ["create_owner_key"]

    def save_model(self, request, obj, form, change):
        limit = obj.monthly_spending_limit_cents
        if not change:  # a tenant comes with its own group, which carries its grants
            created = services.tenant_create(name=obj.name, kind=obj.kind, time_zone=obj.time_zone)
            obj.pk, obj.group, obj.monthly_spending_limit_cents = created.pk, created.group, None
        else:
            # The limit is set below by its service, which logs the change with who made it.
            obj.monthly_spending_limit_cents = form.initial.get("monthly_spending_limit_cents")
            super().save_model(request, obj, form, change)
        principal = services.staff_principal(tenant=obj, staff_user=request.user)
        if limit != obj.monthly_spending_limit_cents:
            services.tenant_spending_limit_set(principal=principal, limit_cents=limit)
        services.tenant_entitlements_set(
            tenant=obj,
            products=form.cleaned_data["products"],
            regions=form.cleaned_data["licensed_regions"],
            staff_user=request.user,
        )

    def save_formset(self, request, form, formset, change):
        principal = services.staff_principal(tenant=form.instance, staff_user=request.user)
        if formset.model is Membership:
            save_memberships(principal=principal, formset=formset)
        elif formset.model is ApiKey:
            save_api_keys(principal=principal, formset=formset)
        else:
            super().save_formset(request, form, formset, change)

    @admin.action(description="Create an owner API key (shown once)")
    def create_owner_key(self, request, queryset):
        """The secrets are shown once on this page, never stored, and not in the messages cookie."""
        created = []
        for tenant in queryset:
            api_key, raw_key = services.api_key_create(
                tenant=tenant, name="owner key (admin)", role=Role.OWNER, staff_user=request.user
            )
            created.append((tenant, api_key, raw_key))
        response = TemplateResponse(
            request,
            "admin/marketplace/tenant/keys_created.html",
            {
                **self.admin_site.each_context(request),
                "title": "New owner API keys",
                "opts": self.model._meta,
                "created": created,
            },
        )
        add_never_cache_headers(response)
        patch_cache_control(response, no_store=True)
        return response

    @admin.display(description="This month's orders")
    def this_month(self, tenant: Tenant) -> str:
        """At a glance: the month's orders per product and status."""
        if tenant.pk is None:
            return "-"
        start = timezone.localdate().replace(day=1)
        rows = (
            Report.objects.filter(tenant=tenant, created_at__date__gte=start)
            .values_list("product__code", "status")
            .annotate(count=Count("id"))
            .order_by("product__code", "status")
        )
        if not rows:
            return f"no orders since {start:%d %B %Y}"
        billed = UsageLine.objects.filter(tenant=tenant, created_at__date__gte=start).aggregate(
            usage=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.USAGE)),
            credits=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.CREDIT)),
        )
        orders = format_html_join(
            mark_safe("<br>"), "{}: {} {}", ((product, count, status) for product, status, count in rows)
        )
        usage, credits = (billed["usage"] or 0) / 100, -(billed["credits"] or 0) / 100
        limit = tenant.monthly_spending_limit_cents
        try:
            billing_services.check_payment_standing(tenant=tenant)
            standing = "payments in order"
        except ServiceError as overdue:
            standing = f"ORDERS STOPPED: {overdue.message}"
        return format_html(
            "{}<br>billed {} EUR, credited {} EUR; spending limit {}<br>{}",
            orders,
            f"{usage:,.2f}",
            f"{credits:,.2f}",
            "none" if limit is None else f"{limit / 100:,.2f} EUR a month",
            standing,
        )

    @admin.display(description="Licensed regions and products")
    def licences(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "-"
        regions = selectors.licensed_region_list(tenant=tenant, at=None)
        products = selectors.product_granted_list(tenant=tenant)
        return format_html(
            "regions: {}<br>products: {}",
            ", ".join(region.name for region in regions) or "none",
            ", ".join(product.code for product in products) or "none",
        )


def save_memberships(*, principal: services.Principal, formset) -> None:
    """Every membership change through the services, which revoke keys and log it."""
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    for form in formset.initial_forms:
        if form in formset.deleted_forms and form.instance.pk:
            stored = Membership.objects.select_related("user").get(pk=form.instance.pk)
            services.member_remove(principal=principal, membership=stored)
            formset.deleted_objects.append(stored)
        elif form.has_changed():
            stored = Membership.objects.select_related("user").get(pk=form.instance.pk)
            if stored.user_id != form.cleaned_data["user"].pk:  # another person: remove one, add the other
                services.member_remove(principal=principal, membership=stored)
                added = services.membership_create(
                    principal=principal, user=form.cleaned_data["user"], role=form.cleaned_data["role"]
                )
                formset.new_objects.append(added)
            else:
                services.member_change_role(principal=principal, membership=stored, role=form.cleaned_data["role"])
                formset.changed_objects.append((stored, form.changed_data))
    for form in formset.extra_forms:
        if form.has_changed() and form not in formset.deleted_forms:
            added = services.membership_create(
                principal=principal, user=form.cleaned_data["user"], role=form.cleaned_data["role"]
            )
            formset.new_objects.append(added)


def save_api_keys(*, principal: services.Principal, formset) -> None:
    """Renames, new expiries and revocations through the services, which log them."""
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    for form in formset.initial_forms:
        if not form.has_changed():
            continue
        api_key = ApiKey.objects.select_related("tenant").get(pk=form.instance.pk)
        services.api_key_update(
            api_key=api_key,
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data["expires_at"],
            staff_user=principal.staff_user,
        )
        if form.cleaned_data.get("revoke"):
            services.api_key_revoke(api_key=api_key, staff_user=principal.staff_user, reason="revoked in the admin")
        formset.changed_objects.append((api_key, form.changed_data))


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "is_active", "privacy_min_area_km2", "privacy_min_cells", "privacy_query_budget"]
    fieldsets = [
        (None, {"fields": ["code", "name", "description", "breakdowns", "is_active"]}),
        (
            "Orders (empty: the service-wide default; the numbers' privacy is the release's, see docs/privacy.md)",
            {"fields": ["privacy_min_area_km2", "privacy_min_cells", "privacy_query_budget"]},
        ),
    ]


class BoundaryMap:
    """A read-only boundary shown as a drawing rather than an editable map."""

    @admin.display(description="drawn to scale")
    def boundary(self, obj) -> str:
        return boundary_svg(obj.geometry)


@admin.register(Area)
class AreaAdmin(BoundaryMap, admin.ModelAdmin):
    list_display = ["name", "tenant", "area_km2", "cell_count", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "tenant__name"]
    exclude = ["geometry"]
    readonly_fields = ["boundary", "area_km2", "cell_count"]


REPORT_SHAPES = ["geometry", "compare_geometry"]


@admin.register(Report)
class ReportAdmin(BoundaryMap, admin.ModelAdmin):
    list_display = [
        "id",
        "tenant",
        "product",
        "status",
        "granularity",
        "start",
        "end",
        "created_at",
        "finished_at",
        "duration",
    ]
    list_filter = ["status", "product", "granularity", "tenant"]
    search_fields = ["id", "tenant__name", "area_name"]
    # What was ordered and released is history: actions change a report, its form does not.
    exclude = REPORT_SHAPES
    readonly_fields = ["boundary"] + [field.name for field in Report._meta.fields if field.name not in REPORT_SHAPES]
    actions = ["rerun_failed", "cancel"]

    @admin.display(description="took")
    def duration(self, report: Report) -> str:
        if report.started_at and report.finished_at:
            return f"{(report.finished_at - report.started_at).total_seconds():.1f} s"
        return "-"

    @admin.action(description="Run the selected failed reports again")
    def rerun_failed(self, request, queryset):
        rerun = sum(services.report_rerun(report=report) for report in queryset)
        self.message_user(request, f"{rerun} failed report(s) queued again; others were left as they were")

    @admin.action(description="Cancel the selected queued or running reports")
    def cancel(self, request, queryset):
        cancelled = 0
        for report in queryset.exclude(status__in=Report.FINAL_STATUSES):
            try:
                services.report_cancel(report=report)
                cancelled += 1
            except ServiceError:
                pass  # it finished meanwhile
        self.message_user(request, f"{cancelled} report(s) cancelled")


@admin.register(Release)
class ReleaseAdmin(BoundaryMap, ReadOnlyAdmin):
    """The release log: read-only here, and the database refuses changes and deletions."""

    list_display = ["released_at", "tenant", "product", "ordered_by_key", "start", "end", "dataset_version"]
    list_filter = ["product", "tenant"]
    search_fields = ["tenant__name", "report__id", "result_sha256"]
    exclude = ["geometry"]
    readonly_fields = ["boundary"] + [field.name for field in Release._meta.fields if field.name != "geometry"]
    date_hierarchy = "released_at"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Who did what; read-only here, and the database refuses changes and deletions."""

    list_display = ["at", "tenant", "actor", "staff_user", "action", "target"]
    list_filter = ["action", "tenant"]
    search_fields = ["tenant__name", "target", "actor__prefix", "staff_user__username"]
    date_hierarchy = "at"
    readonly_fields = [field.name for field in AuditEvent._meta.fields]


class LicensedRegionForm(forms.ModelForm):
    """A region's boundary from a GeoJSON file (as a city sends it) or pasted GeoJSON or WKT."""

    geometry = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        required=False,
        label="Boundary",
        help_text="GeoJSON or WKT in longitude/latitude (EPSG:4326): a Polygon or MultiPolygon",
    )
    boundary_file = forms.FileField(
        required=False, help_text="or a GeoJSON file: a geometry, a Feature or a FeatureCollection (its first)"
    )

    class Meta:
        model = LicensedRegion
        fields = ["name", "geometry", "boundary_file", "valid_from", "valid_until"]

    def clean(self):
        data = super().clean()
        upload = data.get("boundary_file")
        text = upload.read().decode("utf-8", errors="replace") if upload else data.get("geometry") or ""
        if not text.strip():
            raise forms.ValidationError("give the boundary: a GeoJSON file, or GeoJSON or WKT text")
        try:
            data["geometry"] = boundary_from_text(text)
        except ValueError as exc:
            raise forms.ValidationError({"boundary_file" if upload else "geometry": str(exc)}) from None
        return data


@admin.register(LicensedRegion)
class LicensedRegionAdmin(BoundaryMap, admin.ModelAdmin):
    """Where tenants may order; a region is licensed to a tenant on the tenant's page (through the
    services, which log it), not on object permissions, which would bypass the audit log."""

    form = LicensedRegionForm
    list_display = ["name", "valid_from", "valid_until", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["boundary"]

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
        else:
            services.licensed_region_update(region=obj, changed=form.changed_data, staff_user=request.user)
