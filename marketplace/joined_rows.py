"""Model instances from one SQL row that joins several tables, built as the ORM's
select_related builds them (each field's converters applied): for the few hot paths where
building the ORM's joined query costs more than running it."""

import threading

from django.db import connection
from django.db.models import Model

# Per thread, field: (its column, its converters). A geometry's converter holds its thread's GEOS
# WKB reader, which must not be shared: another thread's reads garble it (a web process serves
# requests on several threads).
_converters = threading.local()


def columns(model: type[Model], alias: str, deferred: tuple[str, ...] = ()) -> str:
    """The model's columns but the deferred fields', in the order instances() reads them, of the
    table named `alias`."""
    return ", ".join(f'{alias}."{field.column}"' for field in _fields(model, deferred))


def instances(
    row: tuple, *models: type[Model], deferred: dict[type[Model], tuple[str, ...]] | None = None
) -> list[Model | None]:
    """The row, holding each model's columns() in turn (with the same deferred fields), as an
    instance of each; None for a model whose primary key is null (an outer join that found nothing)."""
    found, start = [], 0
    for model in models:
        fields = _fields(model, (deferred or {}).get(model, ()))
        values = list(row[start : start + len(fields)])
        start += len(fields)
        if values[fields.index(model._meta.pk)] is None:
            found.append(None)
            continue
        for index, field in enumerate(fields):
            expression, converters = _field_converters(field)
            for converter in converters:
                values[index] = converter(values[index], expression, connection)
        found.append(model.from_db(connection.alias, [field.attname for field in fields], values))
    return found


def _fields(model: type[Model], deferred: tuple[str, ...]) -> list:
    return [field for field in model._meta.concrete_fields if field.name not in deferred]


def _field_converters(field) -> tuple:
    """The field's column and its converters, as the ORM's compiler finds them (a geometry's,
    a JSON field's)."""
    found = _converters.__dict__.setdefault("by_field", {})
    if field not in found:
        expression = field.get_col(field.model._meta.db_table)
        converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
        found[field] = (expression, converters)
    return found[field]
