import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterator

from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from insights import renderers
from marketplace import selectors, services
from marketplace.api.bases import TenantRowsViewSet, TenantViewSet
from marketplace.api.bounds import (
    BoundedLimitOffsetPagination,
    report_wait_seconds,
)
from marketplace.api.filters import ReportFilter
from marketplace.api.permissions import ROLES_THAT_ORDER
from marketplace.api.serializers import (
    AreaInput,
    AreaOutput,
    ProductOutput,
    QuoteOutput,
    ReportInput,
    ReportOutput,
    ReportSummaryOutput,
    ResultRowsPage,
    ShareInput,
)
from marketplace.exceptions import Conflict
from marketplace.models import Area, Report
from marketplace.services import Principal

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
PARQUET_IN_MEMORY_BYTES = 8 << 20


class ResultRowsPagination(BoundedLimitOffsetPagination):
    default_limit = 1000
    max_limit = 10_000


class _ResultRows:
    """A succeeded report's rows as a sequence the paginator can count and slice: a page per query."""

    def __init__(self, report: Report):
        self.report = report

    def __len__(self) -> int:
        return self.report.result_rows or 0

    def __getitem__(self, page: slice) -> list[dict]:
        return selectors.report_result_rows(report=self.report, offset=page.start, limit=page.stop - page.start)


def _json_chunks(report: Report) -> Iterator[str]:
    """The result document, its arrays of rows streamed from the database a batch at a time."""
    head, arrays = selectors.report_result_head(report=report)
    yield json.dumps(head)[:-1]  # the closing brace comes after the arrays
    for name in arrays:
        yield f", {json.dumps(name)}: ["
        first = True
        for table in selectors.report_result_tables(report=report, arrays=(name,)):
            if table.num_rows:
                yield ("" if first else ",") + json.dumps(table.to_pylist())[1:-1]
                first = False
        yield "]"
    yield "}"


def _order(data: dict) -> services.ReportOrder:
    return services.ReportOrder(
        product_code=data["product"],
        area_id=data.get("area"),
        geometry=data.get("geometry"),
        name=data["name"],
        start=data["start"],
        end=data["end"],
        granularity=data["granularity"],
        breakdowns=tuple(data["breakdowns"]),
        compare_start=data.get("compare_start"),
        compare_end=data.get("compare_end"),
        compare_area_id=data.get("compare_area"),
        compare_geometry=data.get("compare_geometry"),
        compare_name=data["compare_name"],
        regions=tuple(data["regions"]),
    )


def _fingerprint(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _order_fingerprint(body) -> str:
    """The order without its quote: a quote is asked for, and then used, with the same body."""
    return _fingerprint({name: value for name, value in body.items() if name != "quote"})


class ProductViewSet(mixins.ListModelMixin, TenantViewSet):
    serializer_class = ProductOutput
    pagination_class = None

    def get_queryset(self):
        return selectors.product_list()

    def get_serializer_context(self):
        granted = selectors.product_granted_list(tenant=self.request.user.tenant).values_list("pk", flat=True)
        return {**super().get_serializer_context(), "granted_ids": set(granted)}


class AreaViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantRowsViewSet):
    serializer_class = AreaOutput
    model = Area

    def visible(self, principal: Principal) -> QuerySet:
        return selectors.area_visible_list(tenant=principal.tenant, role=principal.role, api_key=principal.api_key)

    @extend_schema(request=AreaInput, responses={201: AreaOutput})
    def create(self, request):
        data = AreaInput(data=request.data)
        data.is_valid(raise_exception=True)
        area = services.area_create(tenant=request.user.tenant, **data.validated_data)
        return Response(AreaOutput(area).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.area_delete(area=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=ShareInput, responses={204: None})
    @action(detail=True, methods=["post"])
    def share(self, request, pk=None):
        """Show the area to a viewer key of your organisation."""
        data = ShareInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.share_create(
            principal=request.user, viewer_prefix=data.validated_data["viewer"], area=self.get_object()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantRowsViewSet):
    filterset_class = ReportFilter
    model = Report

    def visible(self, principal: Principal) -> QuerySet:
        reports = selectors.report_visible_list(
            tenant=principal.tenant, role=principal.role, api_key=principal.api_key
        ).select_related("quote")
        # A result may be large: it is read only when small enough to inline, or a part at a time.
        return reports.defer("result", "geometry") if self.action == "list" else reports.defer("result")

    def get_serializer_class(self):
        return ReportSummaryOutput if self.action == "list" else ReportOutput

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        # The filters are the list's: a report named by its id is not filtered (building their
        # form cost a tenth of each status read).
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "wait",
                OpenApiTypes.NUMBER,
                description="seconds (up to 20) to hold the answer while the report is queued or running:"
                " it comes as soon as the report is final, or when the wait ends, instead of polling",
            )
        ]
    )
    def retrieve(self, request, pk=None):
        if "wait" in request.query_params:
            # Its status is all a read that may wait needs first: the report is read once, after.
            principal = request.user
            status = selectors.report_readable_status(
                tenant=principal.tenant, role=principal.role, api_key=principal.api_key, report_id=pk
            )
            if status is None:
                raise Http404
            wait = report_wait_seconds(request.query_params)
            if wait and status not in Report.FINAL_STATUSES:
                # Not counted as the request's own time in the metrics (it waited on purpose).
                # The id as the notification names it (the URL's may be spelled otherwise).
                report_id = uuid.UUID(str(pk))
                request._request.waited_seconds = selectors.report_wait_final(report_id=report_id, seconds=wait)
        return Response(ReportOutput(self._readable(pk)).data)

    def _readable(self, pk) -> Report:
        """The report as get_object finds it, in one statement (selectors.report_readable)."""
        principal = self.request.user
        report = selectors.report_readable(
            tenant=principal.tenant, role=principal.role, api_key=principal.api_key, report_id=pk
        )
        if report is None:
            raise Http404
        self.check_object_permissions(self.request, report)
        return report

    @extend_schema(
        request=ReportInput,
        responses={
            201: ReportOutput,
            200: OpenApiResponse(ReportOutput, description="replay of an earlier order with the same Idempotency-Key"),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="the same key and body return the first order instead of placing another",
            )
        ],
    )
    def create(self, request):
        data = ReportInput(data=request.data)
        data.is_valid(raise_exception=True)
        report, created = services.report_create(
            principal=request.user,
            order=_order(data.validated_data),
            idempotency_key=request.headers.get("Idempotency-Key") or None,
            fingerprint=_fingerprint(request.data),
            order_fingerprint=_order_fingerprint(request.data),
            quote_id=data.validated_data.get("quote"),
        )
        return Response(ReportOutput(report).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=ShareInput, responses={204: None})
    @action(detail=True, methods=["post"])
    def share(self, request, pk=None):
        """Show the report to a viewer key of your organisation."""
        data = ShareInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.share_create(
            principal=request.user, viewer_prefix=data.validated_data["viewer"], report=self.get_object()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: ReportOutput})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        report = services.report_cancel(report=self.get_object(), actor=self.request.user.api_key)
        return Response(ReportOutput(report).data)

    # The downloads' ids are set: the default ones keep the dot of `result.json`, no function name.
    @extend_schema(
        operation_id="reports_result_json_retrieve",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="the result document")},
    )
    def result_json(self, request, pk=None):
        report = self._succeeded_report()
        response = StreamingHttpResponse(_json_chunks(report), content_type="application/json")
        return _as_attachment(response, report, "json")

    @extend_schema(
        operation_id="reports_result_csv_retrieve",
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="one line per bucket (and segment); a catchment's per region, an od-matrix's per flow",
            )
        },
    )
    def result_csv(self, request, pk=None):
        report = self._succeeded_report()
        head, _ = selectors.report_result_head(report=report)
        tables = selectors.report_result_tables(report=report)
        response = StreamingHttpResponse(renderers.csv_lines(head, tables), content_type="text/csv; charset=utf-8")
        return _as_attachment(response, report, "csv")

    @extend_schema(
        operation_id="reports_result_parquet_retrieve",
        responses={
            (200, PARQUET_CONTENT_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY, description="one row per bucket; the report's context in the file's metadata"
            )
        },
    )
    def result_parquet(self, request, pk=None):
        report = self._succeeded_report()
        head, _ = selectors.report_result_head(report=report)
        # Written a row group at a time; spills to disk beyond a few MB.
        out = tempfile.SpooledTemporaryFile(max_size=PARQUET_IN_MEMORY_BYTES)
        renderers.parquet_write(head, selectors.report_result_tables(report=report), out)
        out.seek(0)
        response = FileResponse(out, content_type=PARQUET_CONTENT_TYPE)
        return _as_attachment(response, report, "parquet")

    @extend_schema(
        operation_id="reports_result_png_retrieve",
        responses={
            (200, "image/png"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="a 1200 x 600 chart: the series and a line per segment of a breakdown (dwell: per"
                " dwell band), withheld values as gaps; a catchment's regions as bars; an od-matrix as a heat map",
            )
        },
    )
    def result_png(self, request, pk=None):
        report = self._succeeded_report()
        # A chart draws the series and its segments, a catchment's regions or an od-matrix's matrix: never the cells.
        drawn, _ = selectors.report_result_head(report=report, keep=("series", "segments", "regions"))
        response = HttpResponse(renderers.png_chart(drawn, title=report.area_name), content_type="image/png")
        return _as_attachment(response, report, "png")

    @extend_schema(
        operation_id="reports_result_geojson_retrieve",
        responses={
            (200, "application/geo+json"): OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="a FeatureCollection: the area's grid cells with their counts; a catchment's home"
                " regions; an od-matrix's zones and flow lines",
            )
        },
    )
    def result_geojson(self, request, pk=None):
        report = self._succeeded_report()
        mapped, _ = selectors.report_result_head(report=report, keep=("cells", "regions"))
        if not renderers.has_map(mapped):
            raise Conflict(f"a {report.product.code} result has no per-cell values to map", code="format_not_offered")
        response = HttpResponse(renderers.geojson_bytes(mapped), content_type="application/geo+json")
        return _as_attachment(response, report, "geojson")

    @extend_schema(
        responses={200: ResultRowsPage},
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="rows per page (default 1000, at most 10000)"),
            OpenApiParameter("offset", OpenApiTypes.INT, description="the first row's position, from 0"),
        ],
    )
    @action(detail=True, methods=["get"], pagination_class=ResultRowsPagination, filter_backends=[])
    def rows(self, request, pk=None):
        """The result's rows a page at a time (as in the CSV): for results too large to inline."""
        report = self._succeeded_report()
        page = self.paginate_queryset(_ResultRows(report))
        return self.get_paginated_response(page)

    def _succeeded_report(self) -> Report:
        report = self.get_object()
        if report.status != Report.Status.SUCCEEDED:
            raise Conflict(
                f"the report is {report.status}; its result can be downloaded once it has succeeded",
                code="report_not_succeeded",
            )
        return report


def _as_attachment(response, report: Report, extension: str):
    response["Content-Disposition"] = f'attachment; filename="{report.product.code}-{report.pk}.{extension}"'
    return response


class QuoteViewSet(TenantViewSet):
    """Price an order and see whether it would be accepted, without ordering."""

    serializer_class = ReportInput
    read_roles = ROLES_THAT_ORDER
    write_roles = ROLES_THAT_ORDER

    @extend_schema(request=ReportInput, responses={201: QuoteOutput})
    def create(self, request):
        """The same body as an order (its quote field ignored). The quote holds its price for
        QUOTE_VALID_HOURS (24) for an order of the same body; checks that fail say why the
        order would be refused."""
        data = ReportInput(data=request.data)
        data.is_valid(raise_exception=True)
        quote, checks = services.report_quote(
            principal=request.user, order=_order(data.validated_data), fingerprint=_order_fingerprint(request.data)
        )
        return Response(QuoteOutput(QuoteOutput.of(quote, checks)).data, status=status.HTTP_201_CREATED)
